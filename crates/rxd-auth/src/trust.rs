//! The in-memory trust cache: fingerprint to trusted certificate, rebuilt from the store after
//! every change. Lookups are O(1) in the number of trusted certificates.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCert {
    pub fingerprint: String,
    pub name: String,
    pub restricted: bool,
    pub projects: Vec<String>,
    /// Validity window, Unix seconds. Outside it the certificate is not trusted.
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, Default)]
pub struct TrustStore {
    by_fingerprint: HashMap<[u8; 32], Arc<TrustedCert>>,
}

impl TrustStore {
    pub fn new(certs: impl IntoIterator<Item = ([u8; 32], TrustedCert)>) -> TrustStore {
        TrustStore {
            by_fingerprint: certs.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
        }
    }

    pub fn get(&self, fingerprint: &[u8; 32]) -> Option<&Arc<TrustedCert>> {
        self.by_fingerprint.get(fingerprint)
    }

    pub fn insert(&mut self, fingerprint: [u8; 32], cert: TrustedCert) {
        self.by_fingerprint.insert(fingerprint, Arc::new(cert));
    }

    pub fn remove(&mut self, fingerprint: &[u8; 32]) -> Option<Arc<TrustedCert>> {
        self.by_fingerprint.remove(fingerprint)
    }

    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }
}

/// A trust-store entry's fields that an update may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFields {
    pub name: String,
    pub kind: String,
    pub restricted: bool,
    pub projects: Vec<String>,
    pub fingerprint: String,
}
