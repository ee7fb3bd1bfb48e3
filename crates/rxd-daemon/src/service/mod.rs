//! The services below HTTP: what the routes call once they have parsed and authorized a request.
//! Nothing here imports a route, an extractor or a response type.

pub mod access;
pub mod autostart;
pub mod backups;
pub mod copy;
pub mod devices;
pub mod expand;
pub mod image_secrets;
pub mod images;
pub mod instances;
pub mod intent;
pub mod layout;
pub mod migration;
pub mod moves;
pub mod networks;
pub mod nics;
pub mod optimized;
pub mod pools;
pub mod profiles;
pub mod proxy_nat;
pub mod publish;
pub mod recovery;
pub mod schedule;
pub mod snapshot_names;
pub mod snapshots;
pub mod tasks;
pub mod volumes;
