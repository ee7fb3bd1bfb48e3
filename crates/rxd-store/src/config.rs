//! The `config` table: server configuration as stored values (secrets already hashed).

use crate::{Store, StoreError};
use rusqlite::params;
use std::collections::BTreeMap;

impl Store {
    pub fn config(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT key, value FROM config")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Apply changes atomically: `Some(v)` sets, `None` unsets. With `forget_logins`, the root
    /// keys of every login macaroon go in the same transaction (the authentication server changed).
    pub fn update_config(
        &self,
        changes: &BTreeMap<String, Option<String>>,
        forget_logins: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if forget_logins {
            tx.execute("DELETE FROM bakery_root_keys", [])?;
        }
        for (key, value) in changes {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO config (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, v],
                )?,
                None => tx.execute("DELETE FROM config WHERE key = ?1", params![key])?,
            };
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), crate::migrations::LATEST);
            let mut c = BTreeMap::new();
            c.insert("a".to_string(), Some("1".to_string()));
            c.insert("b".to_string(), Some("2".to_string()));
            s.update_config(&c, false).unwrap();
            let mut c = BTreeMap::new();
            c.insert("a".to_string(), None);
            c.insert("b".to_string(), Some("3".to_string()));
            s.update_config(&c, false).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let got = s.config().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["b"], "3");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(Store::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 999, .. })
        ));
    }
}
