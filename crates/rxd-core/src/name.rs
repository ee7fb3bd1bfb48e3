//! Names chosen by users. They end up in logs, tables and file names, so each has a strict grammar.

/// A certificate's display name: printable, no control characters (they would forge log records
/// or terminal output), at most 255 bytes.
pub fn valid_certificate_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control)
}

/// An instance name, by LXD's host-name rule: 1 to 63 letters, digits and dashes, not starting
/// with a digit or a dash, not ending with a dash. It becomes the container's host name and a
/// directory name, so nothing else is allowed.
pub fn valid_instance_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1] != b'-'
}

/// A snapshot name: 1 to 255 bytes, no `/` (it is a path element), no control characters, and not
/// `.` or `..`.
pub fn valid_snapshot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains('/')
        && !name.chars().any(char::is_control)
        && name != "."
        && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names() {
        for (n, ok) in [
            ("c1", true),
            ("web-01", true),
            ("a", true),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
            ("", false),
            ("1c", false),
            ("-c", false),
            ("c-", false),
            ("c_1", false),
            ("c.1", false),
            ("c 1", false),
            ("c/1", false),
            ("$(reboot)", false),
            ("c\n1", false),
            ("é", false),
        ] {
            assert_eq!(valid_instance_name(n), ok, "{n:?}");
        }
    }

    #[test]
    fn snapshot_names() {
        for (n, ok) in [
            ("snap0", true),
            ("before upgrade", true),
            ("", false),
            ("a/b", false),
            ("..", false),
            (".", false),
            ("a\tb", false),
        ] {
            assert_eq!(valid_snapshot_name(n), ok, "{n:?}");
        }
    }

    #[test]
    fn certificate_names() {
        for (n, ok) in [
            ("root@host", true),
            ("laptop of ana", true),
            ("", false),
            ("a\nb", false),
            ("\x1b[31m", false),
            (&"x".repeat(256), false),
        ] {
            assert_eq!(valid_certificate_name(n), ok, "{n:?}");
        }
    }
}
