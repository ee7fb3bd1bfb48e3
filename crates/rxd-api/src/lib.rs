//! Wire types shared by the daemon and the client. Field names and shapes follow LXD 5.0 exactly:
//! changing anything here is a compatibility decision.
#![forbid(unsafe_code)]

pub mod certificate;
pub mod envelope;
pub mod server;
pub mod warning;

pub use envelope::{Envelope, ResponseType, StatusCode};

/// Go clients send `null` for empty slices, maps and (sometimes) strings: read `null` as the
/// field's default, as Go's encoding/json leaves the zero value. Used on every defaulted request
/// field, here and in the daemon's own request types.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// API extensions rxd implements. Clients decide which request shapes to send from this list, so a
/// name goes here only when the feature behind it works.
pub const API_EXTENSIONS: &[&str] = &[
    "api_filtering",
    "auth_user",
    "certificate_token",
    "instance_get_full",
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
    "projects",
    "projects_restrictions",
    "rxd_auth_grants",
];

/// What rxd reports as `server_version`, so that LXD 5.0 clients pick their 5.0 code paths.
pub const COMPAT_SERVER_VERSION: &str = "5.0.2";
