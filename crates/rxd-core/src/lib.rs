//! Pure rules of rxd's domain. Nothing here does IO, so every rule is tested with plain tables.
#![forbid(unsafe_code)]

pub mod address;
pub mod boot;
pub mod config;
pub mod devices;
pub mod expiry;
pub mod filter;
pub mod idmap;
pub mod instance_config;
pub mod launch;
pub mod name;
pub mod network;
pub mod procstat;
pub mod profile;
pub mod project_config;
pub mod proxy;
pub mod pty;
pub mod schedule;
pub mod warnings;
