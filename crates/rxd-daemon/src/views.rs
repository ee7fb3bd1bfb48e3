//! Objects as the API shows them, shaped once for every route that returns them.

use crate::service::expand::{devices_of, expand_with, Expanded};
use crate::service::instances::{self, config_of, Keyed};
use crate::state::Daemon;
use rxd_api::instance::{Instance, InstanceState, InstanceStateCpu, InstanceStateMemory};
use rxd_api::snapshot::InstanceSnapshot;
use rxd_store::InstanceRow;
use rxd_store::ProfileRow;
use std::collections::BTreeMap;

/// `GET /1.0/instances/<name>/state`. rxd reports no disks or interfaces yet (`network` is
/// `null`, as Go's nil map).
pub fn instance_state(d: &Daemon, name: &str) -> InstanceState {
    let (status, code) = instances::status(d, name);
    let (pid, usage) = match d.runtime.init(name) {
        Some(init) => (init.pid, d.runtime.usage(name)),
        None => (0, Default::default()),
    };
    // Go's int64: counters beyond it (never, in practice) saturate.
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    InstanceState {
        status: status.into(),
        status_code: code,
        disk: BTreeMap::new(),
        memory: InstanceStateMemory {
            usage: int(usage.memory),
            usage_peak: int(usage.memory_peak),
            swap_usage: int(usage.swap),
            swap_usage_peak: int(usage.swap_peak),
        },
        network: None,
        pid: i64::from(pid),
        processes: usage.processes,
        cpu: InstanceStateCpu {
            usage: int(usage.cpu_ns),
        },
    }
}

/// An instance as `GET /1.0/instances/<name>` shows it, with its profiles' config and devices
/// in `expanded`; `recursion` 2 adds its state, and snapshots and backups (always empty) that
/// callers fill with [`with_snapshots`].
pub fn instance(d: &Daemon, row: &InstanceRow, recursion: u8, expanded: Expanded) -> Instance {
    let config = config_of(row);
    let (status, code) = instances::status(d, &row.key());
    let full = recursion >= 2;
    Instance {
        architecture: row.architecture.clone(),
        config,
        devices: devices_of(&row.devices),
        ephemeral: row.ephemeral,
        profiles: row.profiles.clone(),
        restore: String::new(),
        stateful: false,
        description: row.description.clone(),
        created_at: crate::tokens::rfc3339(row.created_at),
        expanded_config: expanded.config,
        expanded_devices: expanded.devices,
        name: row.name.clone(),
        status: status.into(),
        status_code: code,
        last_used_at: "0001-01-01T00:00:00Z".into(),
        location: "none".into(),
        kind: "container".into(),
        project: row.project.clone(),
        backups: full.then(Vec::new),
        state: full.then(|| instance_state(d, &row.key())),
        snapshots: full.then(Vec::new),
    }
}

/// A `recursion=2` instance with its snapshots, as LXD's `InstanceFull` has them (`lxc list`
/// counts them there); `known` holds the project's profiles.
pub fn with_snapshots(
    mut instance: Instance,
    rows: &[rxd_store::SnapshotRow],
    known: &BTreeMap<String, ProfileRow>,
) -> Instance {
    if instance.snapshots.is_some() {
        instance.snapshots = Some(rows.iter().map(|r| snapshot(r, known)).collect());
    }
    instance
}

/// A snapshot as the API shows it (LXD's field order), its expanded config and devices those
/// of the profiles it names as they are now (`known`), as LXD shows them. Its size is not
/// measured: `-1`.
pub fn snapshot(
    row: &rxd_store::SnapshotRow,
    known: &BTreeMap<String, ProfileRow>,
) -> InstanceSnapshot {
    let config: BTreeMap<String, String> = serde_json::from_str(&row.config).unwrap_or_default();
    let devices = devices_of(&row.devices);
    let expanded = expand_with(known, &row.profiles, &config, &devices);
    let expires_at = if row.expires_at == 0 {
        "0001-01-01T00:00:00Z".to_owned()
    } else {
        crate::tokens::rfc3339(row.expires_at)
    };
    InstanceSnapshot {
        expires_at,
        architecture: "x86_64".into(),
        config,
        created_at: crate::tokens::rfc3339(row.created_at),
        devices,
        ephemeral: false,
        expanded_config: expanded.config,
        expanded_devices: expanded.devices,
        last_used_at: "0001-01-01T00:00:00Z".into(),
        name: row.name.clone(),
        profiles: row.profiles.clone(),
        stateful: false,
        size: -1,
        description: String::new(),
    }
}
