//! `/1.0/storage-pools`: pools, their resources, and their volumes and volume snapshots. Field
//! order is LXD 5.0's: a Go struct that embeds its `...Put` part sends that part's fields
//! first. Fields that later 5.0.x releases added are decoded, and sent only when set, so what
//! rxc sends is byte for byte what `lxc` 5.0.2 sends.

use crate::shared::InstancePostTarget;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

go_struct! {
    /// A pool as `GET /1.0/storage-pools/<name>` and listings return it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StoragePool {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
        /// `dir`, `btrfs`, `zfs`, `lvm`, `ceph`, `cephfs`.
        pub driver: String,
        /// The instances, images, profiles and volumes using it (URLs).
        pub used_by: Vec<String>,
        /// `Created`, `Pending`, `Errored`, `Unknown` or `Unavailable`.
        pub status: String,
        /// Cluster members it is defined on (`["none"]` outside a cluster).
        pub locations: Vec<String>,
    }
}

go_struct! {
    /// `POST /1.0/storage-pools`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StoragePoolsPost {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
        pub driver: String,
    }
}

go_struct! {
    /// `PUT /1.0/storage-pools/<name>`, and `PATCH` (an absent field keeps its value; for PUT,
    /// absent is LXD's zero value). `lxc storage edit` bodies may carry the read-only fields
    /// too: ignored.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StoragePoolPut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub config: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
    }
}

impl StoragePoolPut {
    /// The writable part of a pool, as `lxc storage set` and `edit` send it back.
    pub fn from_pool(p: &StoragePool) -> StoragePoolPut {
        StoragePoolPut {
            config: Some(p.config.clone()),
            description: Some(p.description.clone()),
        }
    }
}

go_struct! {
    /// `GET /1.0/storage-pools/<name>/resources`: LXD 5.0's `ResourcesStoragePool` (later
    /// 5.0.x names it `StoragePoolState`, same JSON). Go's `omitempty` on a struct field does
    /// nothing in JSON, so `space` and `inodes` are always sent.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StoragePoolState {
        pub space: StoragePoolSpace,
        pub inodes: StoragePoolInodes,
    }
}

go_struct! {
    /// Bytes used and available to a pool (`ResourcesStoragePoolSpace`).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StoragePoolSpace {
        #[serde(skip_serializing_if = "crate::is_default")]
        pub used: u64,
        pub total: u64,
    }
}

go_struct! {
    /// Inodes used and available to a pool (`ResourcesStoragePoolInodes`).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StoragePoolInodes {
        pub used: u64,
        pub total: u64,
    }
}

go_struct! {
    /// A volume as `GET /1.0/storage-pools/<pool>/volumes/<type>/<name>` and listings return
    /// it; in a listing a snapshot is a volume named `<volume>/<snapshot>`. (`restore`, which
    /// LXD's struct has with `omitempty`, is never set in an answer: left out.)
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolume {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
        /// `custom`, `container`, `virtual-machine` or `image`.
        #[serde(rename = "type")]
        pub kind: String,
        /// The instances and profiles using it (URLs).
        pub used_by: Vec<String>,
        /// The cluster member holding it (`none` outside a cluster).
        pub location: String,
        /// `filesystem` or `block`.
        pub content_type: String,
        pub project: String,
        /// RFC 3339; Go's zero time `0001-01-01T00:00:00Z` when unknown.
        pub created_at: String,
    }
}

go_struct! {
    /// `POST /1.0/storage-pools/<pool>/volumes[/<type>]`: a new volume, empty or (`source`)
    /// a copy. An empty `content_type` is `filesystem`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumesPost {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub source: StorageVolumeSource,
        pub content_type: String,
    }
}

go_struct! {
    /// Where a new volume comes from: nothing (`type` empty), `copy` of `pool`/`name`, or
    /// `migration`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumeSource {
        pub name: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub pool: String,
        pub certificate: String,
        /// `pull` or `push`, for a migration.
        #[serde(skip_serializing_if = "String::is_empty")]
        pub mode: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub operation: String,
        #[serde(rename = "secrets", skip_serializing_if = "BTreeMap::is_empty")]
        pub websockets: BTreeMap<String, String>,
        pub volume_only: bool,
        pub refresh: bool,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub project: String,
        /// Later 5.0.x (`cluster_internal_custom_volume_copy`); 5.0.2 does not send it.
        #[serde(skip_serializing_if = "String::is_empty")]
        pub location: String,
    }
}

go_struct! {
    /// `PUT /1.0/storage-pools/<pool>/volumes/<type>/<name>`, and `PATCH` (an absent field
    /// keeps its value). A non-empty `restore` restores that snapshot instead.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumePut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub config: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub restore: String,
    }
}

impl StorageVolumePut {
    /// The writable part of a volume, as `lxc storage volume set` and `edit` send it back.
    pub fn from_volume(v: &StorageVolume) -> StorageVolumePut {
        StorageVolumePut {
            config: Some(v.config.clone()),
            description: Some(v.description.clone()),
            restore: String::new(),
        }
    }
}

/// Where a volume migration goes: the same shape as an instance's.
pub type StorageVolumePostTarget = InstancePostTarget;

go_struct! {
    /// `POST /1.0/storage-pools/<pool>/volumes/<type>/<name>`: rename, move to `pool` or
    /// `project`, or migrate.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumePost {
        pub name: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub pool: String,
        pub migration: bool,
        /// Go sends `null` when there is none.
        pub target: Option<StorageVolumePostTarget>,
        pub volume_only: bool,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub project: String,
        /// Later 5.0.x (`cluster_internal_custom_volume_copy`); 5.0.2 does not send it.
        #[serde(skip_serializing_if = "crate::is_default")]
        pub source: StorageVolumeSource,
    }
}

go_struct! {
    /// `GET /1.0/storage-pools/<pool>/volumes/<type>/<name>/state`. `usage` is `null` when the
    /// driver cannot tell.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumeState {
        pub usage: Option<StorageVolumeStateUsage>,
    }
}

go_struct! {
    /// A volume's bytes used, and its size (`0` when unlimited).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumeStateUsage {
        #[serde(skip_serializing_if = "crate::is_default")]
        pub used: u64,
        pub total: i64,
    }
}

go_struct! {
    /// A volume snapshot as `GET .../volumes/<type>/<name>/snapshots/<snap>` returns it.
    /// `name` is the snapshot's own name; `expires_at` is `null` when it never expires.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumeSnapshot {
        pub description: String,
        pub expires_at: Option<String>,
        pub name: String,
        pub config: BTreeMap<String, String>,
        pub content_type: String,
        pub created_at: String,
    }
}

go_struct! {
    /// `POST .../volumes/<type>/<name>/snapshots`. An empty `name` takes the volume's
    /// `snapshots.pattern`; `expires_at` `null` takes its `snapshots.expiry`, Go's zero time
    /// (`lxc ... --no-expiry`) means never.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumeSnapshotsPost {
        pub name: String,
        pub expires_at: Option<String>,
    }
}

/// `PUT .../snapshots/<snap>`, and `PATCH`. Not Go-decoded field by field as the others are,
/// because LXD's PATCH tells `"expires_at": null` (never expires) from an absent `expires_at`
/// (keeps the expiry): `None` is absent, `Some(None)` is `null`. For PUT both mean never.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSnapshotPut {
    /// `None`: absent or `null` (Go leaves a string alone on `null`).
    #[serde(
        default,
        deserialize_with = "crate::null_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Option<String>>,
}

/// A field that is present, `null` or not: `Some(None)` for `null`. (An absent field never
/// reaches this, `default` makes it `None`.)
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

go_struct! {
    /// `POST .../snapshots/<snap>`: rename. `migration` and `target` are later 5.0.x
    /// (`storage_api_remote_volume_snapshot_copy`); 5.0.2 sends only `name`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct StorageVolumeSnapshotPost {
        pub name: String,
        #[serde(skip_serializing_if = "crate::is_default")]
        pub migration: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub target: Option<StorageVolumePostTarget>,
    }
}
