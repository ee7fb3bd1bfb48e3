//! The parsers of devices and managed networks that see client input or files others write:
//! device maps (every type's keys and values, proxy addresses with their port lists and
//! ranges), bridge network configs, and dnsmasq's lease file (written by a process that serves
//! containers). The first byte picks the parser; the rest is its input, as `key=value` lines for
//! the maps.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_core::network::{config as net_config, dnsmasq, mac::Mac};
use rxd_core::{devices, proxy};
use std::collections::{BTreeMap, BTreeSet};

fn pairs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let device = pairs(text);
            let set: devices::Devices = [("d".to_owned(), device.clone())].into();
            if devices::validate(&set).is_ok() {
                // What validates is what the helper is handed: typed again without failing.
                let (disks, nodes) = devices::mounts(&set);
                for disk in disks {
                    assert!(disk.source.is_absolute() && disk.path.is_absolute());
                    assert!(!disk.path.starts_with("/proc") && !disk.path.starts_with("/sys"));
                }
                for node in nodes {
                    assert!(node.mode <= 0o777);
                }
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(address) = proxy::parse_address(text) {
                assert!(address.port_count() >= 1 && address.port_count() <= 65536);
            }
            let _ = proxy::validate(&pairs(text));
        }
        2 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let config = pairs(text);
            if net_config::validate(&config).is_ok() {
                let _ = net_config::BridgeConfig::from_config(&config);
            }
        }
        _ => {
            let leases = dnsmasq::parse_leases(rest);
            let live: BTreeSet<Mac> = leases.iter().filter_map(|l| l.mac()).take(1).collect();
            let kept = dnsmasq::retain_leases(rest, &live);
            // Pruning only ever drops lines.
            assert!(kept.len() <= rest.len() + kept.lines().count());
            let again = dnsmasq::parse_leases(kept.as_bytes());
            assert!(again.len() <= leases.len());
        }
    }
});
