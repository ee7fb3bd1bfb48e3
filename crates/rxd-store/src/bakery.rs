//! Candid login keys: the daemon's bakery key pair and the root keys of login macaroons.

use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension};

/// A login root key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKeyRow {
    pub id: Vec<u8>,
    pub root_key: Vec<u8>,
    pub created_at: i64,
}

impl Store {
    /// The stored key pair's secret, or `fresh` stored now if there is none (first use).
    pub fn bakery_keypair_or(&self, fresh: [u8; 32]) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT OR IGNORE INTO bakery_keypair (id, secret) VALUES (1, ?1)",
            params![&fresh[..]],
        )?;
        Ok(
            conn.query_row("SELECT secret FROM bakery_keypair WHERE id = 1", [], |r| {
                r.get(0)
            })?,
        )
    }

    pub fn login_root_keys(&self) -> Result<Vec<RootKeyRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT id, root_key, created_at FROM bakery_root_keys ORDER BY created_at")?;
        let rows = stmt.query_map([], |r| {
            Ok(RootKeyRow {
                id: r.get(0)?,
                root_key: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a root key and, in the same transaction, drops those created before `purge_before`
    /// (no macaroon minted from them can still be valid).
    pub fn rotate_login_root_key(
        &self,
        row: &RootKeyRow,
        purge_before: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM bakery_root_keys WHERE created_at < ?1",
            params![purge_before],
        )?;
        tx.execute(
            "INSERT INTO bakery_root_keys (id, root_key, created_at) VALUES (?1, ?2, ?3)",
            params![row.id, row.root_key, row.created_at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets every login root key: every Candid login must be made again.
    pub fn forget_login_root_keys(&self) -> Result<usize, StoreError> {
        Ok(self.conn()?.execute("DELETE FROM bakery_root_keys", [])?)
    }

    /// Whether any root key exists (for tests of rotation).
    pub fn login_root_key(&self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT root_key FROM bakery_root_keys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn keypair_is_made_once_and_root_keys_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = Store::open(&path).unwrap();
        let first = s.bakery_keypair_or([1; 32]).unwrap();
        assert_eq!(first, vec![1; 32]);
        assert_eq!(s.bakery_keypair_or([2; 32]).unwrap(), first);
        let row = |id: u8, at: i64| RootKeyRow {
            id: vec![id; 16],
            root_key: vec![id; 32],
            created_at: at,
        };
        s.rotate_login_root_key(&row(1, 100), 0).unwrap();
        s.rotate_login_root_key(&row(2, 200), 0).unwrap();
        s.rotate_login_root_key(&row(3, 300), 150).unwrap();
        let ids: Vec<u8> = s
            .login_root_keys()
            .unwrap()
            .iter()
            .map(|r| r.id[0])
            .collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(s.login_root_key(&[3; 16]).unwrap(), Some(vec![3; 32]));
        drop(s);
        // Survives reopening; a config change can forget them atomically.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.login_root_keys().unwrap().len(), 2);
        assert_eq!(s.bakery_keypair_or([3; 32]).unwrap(), first);
        let mut c = BTreeMap::new();
        c.insert("candid.api.url".to_string(), Some("https://c".to_string()));
        s.update_config(&c, true).unwrap();
        assert!(s.login_root_keys().unwrap().is_empty());
        s.rotate_login_root_key(&row(4, 400), 0).unwrap();
        assert_eq!(s.forget_login_root_keys().unwrap(), 1);
    }
}
