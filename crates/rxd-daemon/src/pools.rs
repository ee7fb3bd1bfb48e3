//! The storage pools this daemon has mounted, by name (see `service::pools`).

use rxd_storage::Pool;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Default)]
pub struct PoolSet {
    pools: RwLock<BTreeMap<String, Arc<Pool>>>,
    /// Held while an image volume is made in any pool, so one image is unpacked into a pool
    /// once however many creates ask for it at the same moment.
    pub image_volumes: tokio::sync::Mutex<()>,
    /// Held to write by a pool's create and delete, to read by an instance's create or copy
    /// from choosing its pool until its row is recorded: no instance lands in a pool being
    /// deleted.
    pub lifecycle: tokio::sync::RwLock<()>,
    /// Held by every change to custom volumes (create, edit, rename, snapshot, restore,
    /// delete): each sees the volumes and what uses them as they are.
    pub volumes: tokio::sync::Mutex<()>,
}

impl PoolSet {
    pub fn get(&self, name: &str) -> Option<Arc<Pool>> {
        crate::sync::read(&self.pools).get(name).cloned()
    }

    pub fn insert(&self, pool: Pool) {
        crate::sync::write(&self.pools).insert(pool.name().to_owned(), Arc::new(pool));
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Pool>> {
        crate::sync::write(&self.pools).remove(name)
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        crate::sync::read(&self.pools).values().cloned().collect()
    }
}
