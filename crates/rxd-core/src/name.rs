//! Names chosen by users. They end up in logs, tables and file names, so each has a strict grammar.

/// A certificate's display name: printable, no control characters (they would forge log records
/// or terminal output), at most 255 bytes.
pub fn valid_certificate_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

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
