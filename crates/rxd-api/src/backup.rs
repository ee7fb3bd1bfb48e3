//! `/1.0/instances/<name>/backups`: an instance's backups (`lxc export`), and the
//! `backup/index.yaml` of a backup tarball, which `lxc import` (and rxd's import) reads.

use crate::instance::Instance;
use crate::snapshot::InstanceSnapshot;
use crate::storage::{StoragePool, StorageVolume};
use serde::{Deserialize, Serialize};

go_struct! {
    /// `POST /1.0/instances/<name>/backups`. An empty `name` takes the next free `backupN`;
    /// `expires_at` is RFC 3339 (Go's zero time or `null`: never).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceBackupsPost {
        pub name: String,
        pub expires_at: Option<String>,
        pub instance_only: bool,
        pub container_only: bool,
        pub optimized_storage: bool,
        pub compression_algorithm: String,
    }
}

go_struct! {
    /// A backup as `GET .../backups/<name>` returns it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceBackup {
        pub name: String,
        pub created_at: String,
        pub expires_at: String,
        pub instance_only: bool,
        pub container_only: bool,
        pub optimized_storage: bool,
    }
}

go_struct! {
    /// `POST .../backups/<name>`: rename.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct InstanceBackupPost {
        pub name: String,
    }
}

go_struct! {
    /// `backup/index.yaml` (LXD's `backup.Info`): what the tarball holds.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct BackupIndex {
        pub name: String,
        pub backend: String,
        pub pool: String,
        pub snapshots: Vec<String>,
        pub optimized: Option<bool>,
        pub optimized_header: Option<bool>,
        #[serde(rename = "type")]
        pub kind: String,
        pub config: Option<BackupConfig>,
    }
}

go_struct! {
    /// `config` of `index.yaml` (LXD's `config.Config`): the instance, its snapshots, its pool
    /// and root volume as the source server had them.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct BackupConfig {
        pub container: Option<Instance>,
        pub snapshots: Vec<InstanceSnapshot>,
        pub pool: Option<StoragePool>,
        pub volume: Option<StorageVolume>,
    }
}
