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

/// A project name: 1 to 63 letters, digits, `-`, `_` and `.`, starting with a letter or digit. It
/// appears in query strings, URLs and logs, so nothing that needs escaping is allowed.
pub fn valid_project_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A custom storage volume's name: 1 to 63 letters, digits, `-` and `.`, starting with a letter
/// or digit. LXD also takes `_` and spaces; rxd does not, because a volume's directory outside
/// the `default` project is `<project>_<name>` (as in LXD) and must name one volume only.
pub fn valid_volume_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

/// An instance's key on disk and in the runtime: its name in the `default` project,
/// `<project>_<name>` in others. Instance names never contain `_`, so the key is unambiguous.
pub fn instance_key(project: &str, name: &str) -> String {
    if project == "default" {
        name.to_owned()
    } else {
        format!("{project}_{name}")
    }
}

/// Whether `key` is an [`instance_key`] of a valid project and instance name.
pub fn valid_instance_key(key: &str) -> bool {
    let (project, name) = split_instance_key(key);
    valid_project_name(project) && valid_instance_name(name)
}

/// The project and name an [`instance_key`] was made from.
pub fn split_instance_key(key: &str) -> (&str, &str) {
    key.rsplit_once('_').unwrap_or(("default", key))
}

/// The key of an instance on disk and in the runtime (an [`instance_key`]). Made only from a
/// project and a name, or from a key checked by [`valid_instance_key`], so it always splits back
/// into the two; functions that take one cannot be handed a bare instance name by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey(String);

impl InstanceKey {
    pub fn new(project: &str, name: &str) -> InstanceKey {
        InstanceKey(instance_key(project, name))
    }

    /// A key read back (from the runtime's state), if it is one rxd could have made.
    pub fn parse(key: &str) -> Option<InstanceKey> {
        valid_instance_key(key).then(|| InstanceKey(key.to_owned()))
    }

    /// The project and the instance name.
    pub fn split(&self) -> (&str, &str) {
        split_instance_key(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for InstanceKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A snapshot name: 1 to 63 letters, digits, `-` and `_`, starting with a letter or digit. It is
/// a directory name under the instance's snapshots and a URL path element: never a path, never
/// a hidden name (the daemon's work in progress starts with `.`), nothing to escape. Wider than
/// an instance name so that LXD's dated `snapshots.pattern` names (`2026-12-04_20-17-05`) fit.
pub fn valid_snapshot_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_and_instance_keys() {
        for (n, ok) in [
            ("p1", true),
            ("my_team.dev-2", true),
            ("", false),
            ("-p", false),
            ("a/b", false),
            ("a b", false),
            ("a?b", false),
            ("..", false),
        ] {
            assert_eq!(valid_project_name(n), ok, "{n:?}");
        }
        assert_eq!(instance_key("default", "c1"), "c1");
        assert!(valid_instance_key("p1_c1") && valid_instance_key("c1"));
        assert!(!valid_instance_key("p1_") && !valid_instance_key("../x_c1"));
        assert_eq!(instance_key("my_team", "c1"), "my_team_c1");
        for (p, n) in [("default", "c1"), ("p1", "c1"), ("my_team", "web-01")] {
            assert_eq!(split_instance_key(&instance_key(p, n)), (p, n));
        }
    }

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
            ("2026-12-04_20-17-05", true),
            ("daily_1", true),
            (&"s".repeat(63), true),
            (&"s".repeat(64), false),
            ("before upgrade", false),
            (".new-1", false),
            ("-x", false),
            ("_x", false),
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

    #[test]
    fn instance_keys_split_back() {
        for (project, name, key) in [
            ("default", "c1", "c1"),
            ("p1", "c1", "p1_c1"),
            ("my-project", "web-2", "my-project_web-2"),
        ] {
            let k = InstanceKey::new(project, name);
            assert_eq!(k.as_str(), key);
            assert_eq!(k.split(), (project, name));
            assert_eq!(InstanceKey::parse(key), Some(k));
        }
        for bad in ["", "_c1", "p1_", "../c1", "p1_c_1", "c1/x"] {
            assert_eq!(InstanceKey::parse(bad), None, "{bad}");
        }
    }
}
