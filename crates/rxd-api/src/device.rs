//! Devices as LXD writes them, in instances, snapshots and (later) profiles.

use std::collections::BTreeMap;

/// Device name → its settings.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;
