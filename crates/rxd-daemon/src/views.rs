//! Objects as the API shows them, shaped once for every route that returns them.

use crate::service::instances::{self, config_of, Keyed};
use crate::state::Daemon;
use rxd_store::InstanceRow;
use serde_json::{json, Value};

pub fn instance_state(d: &Daemon, name: &str) -> Value {
    let (status, code) = instances::status(d, name);
    let (pid, usage) = match d.runtime.init(name) {
        Some(init) => (init.pid, d.runtime.usage(name)),
        None => (0, Default::default()),
    };
    json!({
        "status": status, "status_code": code, "disk": {},
        "memory": {"usage": usage.memory, "usage_peak": usage.memory_peak, "swap_usage": 0, "swap_usage_peak": 0},
        "network": null, "pid": pid, "processes": usage.processes, "cpu": {"usage": usage.cpu_ns},
    })
}

pub fn instance(d: &Daemon, row: &InstanceRow, recursion: u8) -> Value {
    let config = config_of(row);
    let (status, code) = instances::status(d, &row.key());
    let mut v = json!({
        "architecture": row.architecture,
        "config": config,
        "devices": {},
        "ephemeral": row.ephemeral,
        "profiles": ["default"],
        "stateful": false,
        "description": row.description,
        "created_at": crate::tokens::rfc3339(row.created_at),
        "expanded_config": config,
        "expanded_devices": {},
        "name": row.name,
        "status": status,
        "status_code": code,
        "last_used_at": "0001-01-01T00:00:00Z",
        "location": "none",
        "type": "container",
        "project": row.project,
    });
    if recursion >= 2 {
        v["state"] = instance_state(d, &row.key());
        v["snapshots"] = json!([]);
        v["backups"] = json!([]);
    }
    v
}
