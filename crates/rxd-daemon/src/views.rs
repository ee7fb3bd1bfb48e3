//! Objects as the API shows them, shaped once for every route that returns them.

use crate::service::expand::{devices_of, expand_with, Expanded};
use crate::service::instances::{self, config_of, Keyed};
use crate::state::Daemon;
use rxd_api::instance::{
    Instance, InstanceState, InstanceStateCpu, InstanceStateMemory, InstanceStateNetwork,
    InstanceStateNetworkAddress, InstanceStateNetworkCounters,
};
use rxd_api::snapshot::InstanceSnapshot;
use rxd_store::InstanceRow;
use rxd_store::ProfileRow;
use std::collections::BTreeMap;

/// Addresses as LXD shows them (the netmask is the prefix length).
pub fn addresses(nets: &[ipnet::IpNet]) -> Vec<InstanceStateNetworkAddress> {
    nets.iter()
        .map(|a| InstanceStateNetworkAddress {
            family: if a.addr().is_ipv4() { "inet" } else { "inet6" }.into(),
            address: a.addr().to_string(),
            netmask: a.prefix_len().to_string(),
            scope: rxd_network::scope_of(a.addr()).as_str().into(),
        })
        .collect()
}

/// Counters as Go's int64 (saturating).
pub fn counters(c: &rxd_network::Counters) -> InstanceStateNetworkCounters {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    InstanceStateNetworkCounters {
        bytes_received: int(c.bytes_received),
        bytes_sent: int(c.bytes_sent),
        packets_received: int(c.packets_received),
        packets_sent: int(c.packets_sent),
        errors_received: int(c.errors_received),
        errors_sent: int(c.errors_sent),
        packets_dropped_outbound: int(c.packets_dropped_outbound),
        packets_dropped_inbound: int(c.packets_dropped_inbound),
    }
}

/// A running container's interfaces as LXD reports them, read inside its network namespace
/// (entered through the init's pidfd-checked `/proc/<pid>/ns/net`; `None` if that fails).
fn instance_network(pid: i32) -> Option<BTreeMap<String, InstanceStateNetwork>> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
    let ifaces = rxd_network::instance_interfaces(std::os::fd::AsFd::as_fd(&netns)).ok()?;
    Some(
        ifaces
            .into_iter()
            .map(|i| {
                let s = i.state;
                let state = InstanceStateNetwork {
                    addresses: addresses(&s.addresses),
                    counters: counters(&s.counters),
                    hwaddr: s.hwaddr_string(),
                    host_name: i.host_name.unwrap_or_default(),
                    mtu: i64::from(s.mtu),
                    state: s.flags.state().into(),
                    kind: rxd_network::LinkType::of_instance_iface(s.flags)
                        .as_str()
                        .into(),
                };
                (s.name, state)
            })
            .collect(),
    )
}

/// `GET /1.0/instances/<name>/state`. rxd reports no disks yet; `network` is `null` (Go's nil
/// map) while the container is stopped.
pub fn instance_state(d: &Daemon, name: &str) -> InstanceState {
    let (status, code) = instances::status(d, name);
    let (pid, usage, network) = match d.runtime.init(name) {
        Some(init) => (init.pid, d.runtime.usage(name), instance_network(init.pid)),
        None => (0, Default::default(), None),
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
        network,
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
