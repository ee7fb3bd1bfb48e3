//! Profiles: the name rule and expansion, LXD's order. An instance's expanded config is each
//! of its profiles' config in list order (a later profile wins per key), then its own on top;
//! its expanded devices are the same by whole device (a later `eth0` replaces an earlier one
//! entirely, a local `{type: none}` masks a profile's).

use crate::devices::Devices;
use std::collections::BTreeMap;

pub type Config = BTreeMap<String, String>;

/// The profile every project with profiles of its own has, and every instance uses unless told.
pub const DEFAULT: &str = "default";

/// LXD refuses an empty name, `/`, `.` and `..`; rxd also refuses control characters,
/// leading or trailing white space and more than 63 bytes.
pub fn valid_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "No name provided"
    } else if name.contains('/') {
        "Profile names may not contain slashes"
    } else if name == "." || name == ".." {
        "Invalid profile name"
    } else if name.chars().any(char::is_control) {
        "Profile names may not contain control characters"
    } else if name.trim() != name {
        "Profile names may not begin or end with white space"
    } else if name.len() > 63 {
        "Profile names may be at most 63 bytes"
    } else {
        return Ok(());
    };
    Err(format!("{why}: {name:?}"))
}

/// `?project=NAME` to append to a URL outside the `default` project, as LXD's URLs carry it.
pub fn project_suffix(project: &str) -> String {
    if project == "default" {
        String::new()
    } else {
        format!("?project={project}")
    }
}

/// A name as one segment of a URL path: all but RFC 3986's unreserved characters
/// percent-encoded (profile names may hold spaces, `?`, `#`, `%`).
pub fn url_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A profile list as an instance or a create request carries it: names exist is the caller's
/// check; here, no name twice (LXD's `Duplicate profile found in request`).
pub fn valid_list(names: &[String]) -> Result<(), String> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err("Duplicate profile found in request".into());
        }
    }
    Ok(())
}

/// Expand `config` and `devices` over `profiles` (in the instance's order).
pub fn expand<'a>(
    profiles: impl IntoIterator<Item = (&'a Config, &'a Devices)>,
    config: &Config,
    devices: &Devices,
) -> (Config, Devices) {
    let mut out_config = Config::new();
    let mut out_devices = Devices::new();
    for (c, d) in profiles {
        out_config.extend(c.iter().map(|(k, v)| (k.clone(), v.clone())));
        out_devices.extend(d.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out_config.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
    out_devices.extend(devices.iter().map(|(k, v)| (k.clone(), v.clone())));
    (out_config, out_devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Config {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names() {
        for good in ["default", "web-1", "a b", "ünï"] {
            assert_eq!(valid_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a/b",
            ".",
            "..",
            "tab\t",
            " lead",
            "trail ",
            &"x".repeat(64),
        ] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(valid_list(&["a".into(), "b".into()]), Ok(()));
        assert_eq!(url_segment("web-1"), "web-1");
        assert_eq!(url_segment("a b?#%"), "a%20b%3F%23%25");
        assert!(valid_list(&["a".into(), "b".into(), "a".into()]).is_err());
    }

    #[test]
    fn later_profiles_win_then_the_instance() {
        let p1 = map(&[("limits.cpu", "1"), ("user.a", "p1")]);
        let p2 = map(&[("limits.cpu", "2")]);
        let local = map(&[("user.a", "local")]);
        let d1: Devices = [("eth0".to_owned(), map(&[("type", "nic"), ("mtu", "1400")]))].into();
        let d2: Devices = [("eth0".to_owned(), map(&[("type", "nic")]))].into();
        let local_devices: Devices = [("root".to_owned(), map(&[("type", "none")]))].into();
        let (config, devices) = expand([(&p1, &d1), (&p2, &d2)], &local, &local_devices);
        assert_eq!(config, map(&[("limits.cpu", "2"), ("user.a", "local")]));
        // Whole devices: p2's eth0 replaces p1's, no key of p1's left.
        assert_eq!(devices["eth0"], map(&[("type", "nic")]));
        assert_eq!(devices["root"], map(&[("type", "none")]));
        // Order matters.
        let (config, _) = expand([(&p2, &d2), (&p1, &d1)], &Config::new(), &Devices::new());
        assert_eq!(config["limits.cpu"], "1");
    }
}
