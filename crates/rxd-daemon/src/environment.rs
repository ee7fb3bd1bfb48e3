//! `GET /1.0`'s `environment`, serialized once and kept while the TLS identity and the listener
//! addresses stay the same (it is most of the reply, and the same for every trusted caller).

use crate::sync::lock;
use crate::tlsstate::TlsState;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct EnvironmentCache(Mutex<Option<CachedEnvironment>>);

/// What the cached bytes were made from (the TLS state by identity), and the bytes.
type CachedEnvironment = (Arc<TlsState>, Vec<String>, Arc<RawValue>);

impl EnvironmentCache {
    /// The bytes for `tls` and `addresses`, made by `make` when they changed.
    pub fn get<T: serde::Serialize>(
        &self,
        tls: Arc<TlsState>,
        addresses: Vec<String>,
        make: impl FnOnce(&TlsState, &[String]) -> T,
    ) -> Arc<RawValue> {
        if let Some((t, a, json)) = lock(&self.0).as_ref() {
            if Arc::ptr_eq(t, &tls) && *a == addresses {
                return json.clone();
            }
        }
        let json: Arc<RawValue> = serde_json::value::to_raw_value(&make(&tls, &addresses))
            .expect("the environment serializes")
            .into();
        *lock(&self.0) = Some((tls, addresses, json.clone()));
        json
    }

    /// Forget the bytes: something else they hold changed (the storage drivers in use).
    pub fn invalidate(&self) {
        *lock(&self.0) = None;
    }
}
