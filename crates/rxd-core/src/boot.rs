//! What happens to instances when the daemon starts, as LXD 5.0 decides it (`instancesStart`):
//! which stopped instances start by themselves, and in what order. No IO: the daemon hands in
//! each instance's name and config.

use std::collections::BTreeMap;

/// Whether a stopped instance starts when the daemon starts: `boot.autostart=true`, or, with
/// `boot.autostart` unset, if it was running when it last stopped for the host's shutdown
/// (`volatile.last_state.power=RUNNING`, which only a host shutdown, or a daemon that died
/// while it ran, leaves on a stopped instance).
pub fn should_autostart(config: &BTreeMap<String, String>) -> bool {
    match config.get("boot.autostart").map(String::as_str) {
        Some("true") => true,
        Some(_) => false,
        None => config.get("volatile.last_state.power").map(String::as_str) == Some("RUNNING"),
    }
}

/// One instance to start, and how long to wait after starting it (`boot.autostart.delay`, s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autostart<K> {
    pub key: K,
    pub delay_secs: u64,
}

/// The stopped instances `instances` (key, name, config) holds that start, higher
/// `boot.autostart.priority` first, then by name (LXD's order).
pub fn autostart_order<K>(
    instances: impl IntoIterator<Item = (K, String, BTreeMap<String, String>)>,
) -> Vec<Autostart<K>> {
    let number = |config: &BTreeMap<String, String>, key: &str| -> u64 {
        config.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let priority = |config: &BTreeMap<String, String>| -> i64 {
        config
            .get("boot.autostart.priority")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut chosen: Vec<(i64, String, Autostart<K>)> = instances
        .into_iter()
        .filter(|(_, _, config)| should_autostart(config))
        .map(|(key, name, config)| {
            (
                priority(&config),
                name,
                Autostart {
                    key,
                    delay_secs: number(&config, "boot.autostart.delay"),
                },
            )
        })
        .collect();
    chosen.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    chosen.into_iter().map(|(_, _, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn which_start() {
        let check = |pairs: &[(&str, &str)], starts: bool| {
            assert_eq!(should_autostart(&config(pairs)), starts, "{pairs:?}");
        };
        check(&[], false);
        check(&[("volatile.last_state.power", "STOPPED")], false);
        check(&[("volatile.last_state.power", "RUNNING")], true);
        check(&[("boot.autostart", "true")], true);
        check(
            &[
                ("boot.autostart", "true"),
                ("volatile.last_state.power", "STOPPED"),
            ],
            true,
        );
        check(
            &[
                ("boot.autostart", "false"),
                ("volatile.last_state.power", "RUNNING"),
            ],
            false,
        );
    }

    #[test]
    fn order_is_priority_then_name() {
        let running = ("volatile.last_state.power", "RUNNING");
        let order = autostart_order([
            ("k-b", "b".to_owned(), config(&[running])),
            (
                "k-off",
                "a0".to_owned(),
                config(&[running, ("boot.autostart", "false")]),
            ),
            (
                "k-z",
                "z".to_owned(),
                config(&[
                    ("boot.autostart", "true"),
                    ("boot.autostart.priority", "10"),
                    ("boot.autostart.delay", "3"),
                ]),
            ),
            ("k-a", "a".to_owned(), config(&[running])),
            (
                "k-last",
                "0".to_owned(),
                config(&[running, ("boot.autostart.priority", "-1")]),
            ),
            ("k-never", "n".to_owned(), config(&[])),
        ]);
        assert_eq!(
            order,
            [
                Autostart {
                    key: "k-z",
                    delay_secs: 3
                },
                Autostart {
                    key: "k-a",
                    delay_secs: 0
                },
                Autostart {
                    key: "k-b",
                    delay_secs: 0
                },
                // Negative: after the unset ones, name notwithstanding.
                Autostart {
                    key: "k-last",
                    delay_secs: 0
                },
            ]
        );
    }
}
