//! The pure parsers and rules of `rxd-core` that see client input: server config updates (PUT and
//! PATCH bodies against the key registry, then the whole-config check and the warnings),
//! instance and project config keys, `core.https_address`, expiry strings, `?filter=`, names,
//! byte sizes, and idmap arithmetic (`security.idmap.size`/`base` read as the daemon reads them,
//! then allocated; the block must lie in the host range, clear of the shared block and of
//! every other block). The first byte picks the parser; the rest is its input.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use rxd_core::address::ListenAddress;
use rxd_core::config::{self, StoredConfig, UpdateMode};
use rxd_core::filter::Filter;
use rxd_core::idmap::{Block, HostRange, BLOCK_SIZE};
use rxd_core::{expiry, idmap, instance_config, name, project_config, warnings};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn text_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn server_config(body: &Map<String, Value>, mode: UpdateMode) {
    let mut current = StoredConfig::new();
    current.insert("core.https_address".into(), "127.0.0.1:8443".into());
    current.insert("candid.api.url".into(), "https://candid.example.com".into());
    let Ok(changes) = config::plan_update(&current, body, mode) else {
        return;
    };
    for (key, change) in changes {
        match change {
            config::Change::Set(v) | config::Change::SetSecret(v) => {
                current.insert(key, v);
            }
            config::Change::Unset => {
                current.remove(&key);
            }
        }
    }
    let _ = config::check_whole(&current);
    let _ = config::public_view(&current);
    let _ = warnings::config_warnings(&current);
    if let Some(v) = current.get(config::CANDID_DOMAINS) {
        let _ = config::domain_list(v).count();
    }
    if let Some(v) = current.get(config::HTTPS_ADDRESS) {
        let _ = ListenAddress::parse(v);
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    for (j, x) in w.iter_mut().enumerate() {
        *x = b.get(i + j).copied().unwrap_or(0);
    }
    u32::from_le_bytes(w)
}

/// As `IdmapWant::of` and its allocator in the daemon, on a range from a subuid line.
fn idmaps(b: &[u8], text: &str) {
    let (base, size) = match idmap::parse_subid(text, "root") {
        Some(r) => r,
        None => (u32_at(b, 0), u32_at(b, 4)),
    };
    let Ok(range) = HostRange::new(base, size) else {
        return;
    };
    assert!(range.0.base > 0 && range.0.end() <= u64::from(u32::MAX));
    let shared = range.shared();
    assert_eq!(shared.size, BLOCK_SIZE);
    let mut taken: Vec<Block> = Vec::new();
    let mut i = 8;
    while i + 9 <= b.len() && taken.len() < 16 {
        let want = u32_at(b, i);
        let pinned = (b[i + 8] & 1 == 1).then(|| u32_at(b, i + 4));
        i += 9;
        if let Ok(block) = range.allocate(&taken, want, pinned) {
            assert_eq!(block.size, want);
            assert!(u64::from(block.base) >= u64::from(range.0.base));
            assert!(block.end() <= range.0.end(), "{block:?} outside {range:?}");
            assert!(
                !block.overlaps(&shared),
                "{block:?} overlaps the shared block"
            );
            assert!(
                !taken.iter().any(|t| t.overlaps(&block)),
                "{block:?} overlaps {taken:?}"
            );
            if let Some(p) = pinned {
                assert_eq!(block.base, p);
            }
            taken.push(block);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 10 {
        0 => {
            if let Ok(a) = ListenAddress::parse(&text) {
                let _ = a.is_wildcard();
            }
        }
        1 => {
            let _ = expiry::parse_expiry(&text);
        }
        2 => {
            // `?filter=` text, then matched against an instance-like object.
            if let Ok(f) = Filter::parse(&text) {
                let object = json!({
                    "name": "c1", "status": "Running", "type": "container",
                    "config": {"image.os": "busybox", "security.privileged": "true"},
                    "expanded_config": {"limits.cpu": "2"}, "location": "none",
                });
                let _ = f.matches(&object);
            }
        }
        3 | 4 => {
            if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(rest) {
                let mode = if which % 10 == 3 {
                    UpdateMode::Replace
                } else {
                    UpdateMode::Merge
                };
                server_config(&body, mode);
            }
        }
        5 => match serde_json::from_slice::<Value>(rest) {
            Ok(v) => {
                let map = text_map(&v);
                let _ = instance_config::validate(&map);
                for (k, v) in &map {
                    let _ = instance_config::validate_key(k, v, true);
                    let _ = instance_config::validate_key(k, v, false);
                }
                let _ = instance_config::flag(&map, "security.privileged");
            }
            Err(_) => {
                let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                let _ = instance_config::validate_key(k, v, true);
                let _ = instance_config::parse_bytes(&text);
                // The resource and snapshot keys' own parsers, with any text.
                let _ = instance_config::parse_cpu_limit(v);
                let _ = instance_config::parse_cpu_allowance(v);
                let _ = instance_config::parse_cpu_list(v);
                if let Ok(s) = rxd_core::schedule::Schedule::parse(v, k) {
                    let _ = s.due(1_796_415_420);
                }
                let _ = rxd_core::schedule::render_pattern(v, 1_796_415_420);
            }
        },
        6 => match serde_json::from_slice::<Value>(rest) {
            Ok(v) => {
                let mut map = project_config::defaults();
                map.extend(text_map(&v));
                let _ = project_config::validate(&map);
            }
            Err(_) => {
                let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                let _ = project_config::validate_key(k, v);
            }
        },
        7 => {
            let _ = name::valid_certificate_name(&text);
            let _ = name::valid_snapshot_name(&text);
            let (project, instance) = text.split_once('/').unwrap_or(("default", &text));
            if name::valid_project_name(project) && name::valid_instance_name(instance) {
                // Keys on disk and in the runtime must name the instance back, one way only.
                let key = name::instance_key(project, instance);
                assert!(name::valid_instance_key(&key), "{key:?}");
                assert_eq!(name::split_instance_key(&key), (project, instance));
            } else if name::valid_instance_key(&text) {
                let _ = name::split_instance_key(&text);
            }
        }
        _ => idmaps(rest, &text),
    }
});
