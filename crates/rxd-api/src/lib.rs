//! Wire types shared by the daemon and the client. Field names and shapes follow LXD 5.0 exactly:
//! changing anything here is a compatibility decision.
//!
//! Every body decodes as LXD's Go decoder (`encoding/json`) reads it: a missing field or a
//! `null` is the field's zero value, and unknown fields are ignored ([`decode`] says which, so
//! the caller can log them). Numbers have Go's types (`int` is `i64`, `uint32` is `u32`), so a
//! value Go refuses is refused here too. Responses serialize with the keys rxd has always sent;
//! where that differs from LXD's struct tags, the field says so.

#![forbid(unsafe_code)]

#[macro_use]
mod go;

pub mod backup;
pub mod certificate;
pub mod envelope;
pub mod event;
pub mod grant;
pub mod image;
pub mod instance;
pub mod network;
pub mod operation;
pub mod profile;
pub mod project;
pub mod resources;
pub mod server;
mod shared;
pub mod snapshot;
pub mod storage;
pub mod warning;

pub use envelope::{Envelope, ResponseType, StatusCode};
pub(crate) use go::is_default;
pub use go::null_as_default;
pub use go::{decode, decode_value, from_value, Decoded};

/// API extensions rxd implements. Clients decide which request shapes to send from this list, so a
/// name goes here only when the feature behind it works.
pub const API_EXTENSIONS: &[&str] = &[
    "api_filtering",
    "auth_user",
    "certificate_token",
    "instance_get_full",
    "container_full",
    "certificate_update",
    "certificate_self_renewal",
    "remote_token_expiry",
    "warnings",
    "console",
    "container_exec_signal_handling",
    "container_exec_user_group_cwd",
    "directory_manipulation",
    "file_append",
    "file_delete",
    "file_symlinks",
    "image_force_refresh",
    "projects",
    "projects_restrictions",
    "project_usage",
    "instance_all_projects",
    "snapshot_scheduling",
    "snapshot_schedule_aliases",
    "snapshot_expiry",
    "snapshot_expiry_creation",
    "rxd_auth_grants",
    "network",
    "network_state",
    "network_leases",
    "instance_nic_network",
    "container_nic_ipfilter",
    "resources",
    "resources_v2",
    "resources_cpu_core_die",
    "resource_cpu_isolated",
    "resources_system",
    "resources_usb_pci",
    "resources_gpu",
    "resources_disk_sata",
    "resources_disk_id",
    "resources_disk_address",
    "resources_network_usb",
    "resources_gpu_usb",
    "container_only_migration",
    "container_push",
    "container_push_target",
    "container_copy_project",
    "storage",
    "instance_pool_move",
    "instance_project_move",
    "storage_api_volume_rename",
    "storage_api_local_volume_handling",
    "storage_api_volume_snapshots",
    "custom_volume_snapshot_expiry",
    "storage_volume_state",
    "storage_volume_project_move",
    "storage_api_project",
    "container_backup",
    "backup_compression",
    "backup_compression_algorithm",
    "backup_override_name",
    "container_backup_override_pool",
];

/// What rxd reports as `server_version`, so that LXD 5.0 clients pick their 5.0 code paths.
pub const COMPAT_SERVER_VERSION: &str = "5.0.2";
