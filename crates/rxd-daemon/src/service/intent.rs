//! Intents: an operation with more than one durable step (files and rows) records what it is
//! about to do before its first step and ends the record after its last. A daemon killed in
//! between leaves the record, and start-up recovery (`service::recovery`) finishes or undoes
//! the operation from it. Each variant's recovery rule is written beside the operation that
//! records it; the whole list of steps and rules is in ARCHITECTURE.md ("Crash consistency").

use crate::error::{ApiError, ApiResult};
use crate::state::Daemon;
use crate::sync::now_unix;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Intent {
    /// Rows go last: recovery finishes the delete.
    InstanceDelete { project: String, name: String },
    /// Files move first, the row last: recovery finishes it if the row moved, else undoes it.
    InstanceRename {
        project: String,
        from: String,
        to: String,
    },
    /// The row goes last: recovery thaws the container if the snapshot froze it, and removes
    /// a snapshot directory that has no row.
    SnapshotCreate {
        project: String,
        instance: String,
        snapshot: String,
        froze: bool,
    },
    /// As an instance rename, inside the instance's snapshots directory.
    SnapshotRename {
        project: String,
        instance: String,
        from: String,
        to: String,
    },
    /// As an instance delete.
    SnapshotDelete {
        project: String,
        instance: String,
        snapshot: String,
    },
    /// Recorded once the snapshot's copy is complete (`staged`, inode `inode`), before it is
    /// exchanged with the root filesystem: if the root filesystem is that inode the exchange
    /// happened and recovery records `idmap` (the map the files carry), else it drops the copy.
    SnapshotRestore {
        project: String,
        instance: String,
        snapshot: String,
        staged: String,
        inode: u64,
        /// The mark put on the copy (`trusted.rxd.restore`): on btrfs every subvolume's root is
        /// inode 256, and device numbers change across a reboot. Empty in intents recorded
        /// before rxd marked copies: the inode decides then.
        #[serde(default)]
        marker: String,
        idmap: String,
    },
    /// As an instance rename, from one project to another (the directories' keys change).
    InstanceProjectMove {
        from_project: String,
        to_project: String,
        from: String,
        to: String,
    },
    /// As an instance rename, for a custom volume in `pool` (its directory and its snapshots'
    /// directory), or, with `volume`, for one of that volume's snapshots.
    VolumeRename {
        pool: String,
        project: String,
        #[serde(default)]
        volume: Option<String>,
        from: String,
        to: String,
    },
}

impl Intent {
    pub fn kind(&self) -> &'static str {
        match self {
            Intent::InstanceDelete { .. } => "instance-delete",
            Intent::InstanceRename { .. } => "instance-rename",
            Intent::SnapshotCreate { .. } => "snapshot-create",
            Intent::SnapshotRename { .. } => "snapshot-rename",
            Intent::SnapshotDelete { .. } => "snapshot-delete",
            Intent::SnapshotRestore { .. } => "snapshot-restore",
            Intent::VolumeRename { .. } => "volume-rename",
            Intent::InstanceProjectMove { .. } => "instance-project-move",
        }
    }
}

/// A recorded intent, to end once the operation's last step is done (or undone).
#[must_use = "an intent left recorded is recovered at the next start-up"]
pub struct Pending(i64);

impl Pending {
    /// The intent's id, for a store call that ends it in the same transaction as the
    /// operation's last row change (one sync instead of two); the guard is consumed.
    pub fn into_id(self) -> i64 {
        self.0
    }

    pub async fn end(self, d: &Daemon) -> ApiResult<()> {
        let id = self.0;
        d.db(move |s| s.end_intent(id)).await
    }
}

/// Record `intent` durably before the operation's first step.
pub async fn begin(d: &Daemon, intent: &Intent) -> ApiResult<Pending> {
    let detail = serde_json::to_string(intent).map_err(ApiError::internal)?;
    let kind = intent.kind();
    let id = d
        .db(move |s| s.begin_intent(kind, &detail, now_unix()))
        .await?;
    Ok(Pending(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_round_trip_through_their_json() {
        let all = [
            Intent::InstanceDelete {
                project: "p".into(),
                name: "c1".into(),
            },
            Intent::SnapshotRestore {
                project: "default".into(),
                instance: "c1".into(),
                snapshot: "s".into(),
                staged: ".rootfs-restore-1".into(),
                inode: 42,
                marker: "m".into(),
                idmap: "[]".into(),
            },
        ];
        for i in all {
            let text = serde_json::to_string(&i).unwrap();
            assert!(
                text.contains(&format!("\"kind\":\"{}\"", i.kind())),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<Intent>(&text).unwrap(), i);
        }
    }
}
