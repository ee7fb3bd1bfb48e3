//! Where an instance's things live under the state directory: the one place that knows.

use crate::state::Daemon;
use std::path::PathBuf;

pub fn instance_dir(d: &Daemon, name: &str) -> PathBuf {
    d.dir.join("containers").join(name)
}

/// Where an instance's snapshots live.
pub fn snapshots_dir(d: &Daemon, instance: &str) -> PathBuf {
    d.dir.join("snapshots").join(instance)
}

/// Remove every snapshot of a deleted instance from disk.
pub fn remove_snapshots(d: &Daemon, instance: &str) -> std::io::Result<()> {
    match rxd_image::remove::remove_tree(snapshots_dir(d, instance)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Move a renamed instance's snapshots.
pub fn rename_snapshots(d: &Daemon, old: &str, new: &str) -> std::io::Result<()> {
    match std::fs::rename(snapshots_dir(d, old), snapshots_dir(d, new)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
