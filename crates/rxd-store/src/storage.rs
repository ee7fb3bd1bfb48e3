//! The `storage_pools` table (global, as in LXD) and which pool instances live in.

use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePoolRow {
    pub name: String,
    /// `dir` or `btrfs`.
    pub driver: String,
    pub description: String,
    /// JSON object of strings, as `POST /1.0/storage-pools` resolved it.
    pub config: String,
}

const COLUMNS: &str = "name, driver, description, config";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoragePoolRow> {
    Ok(StoragePoolRow {
        name: r.get(0)?,
        driver: r.get(1)?,
        description: r.get(2)?,
        config: r.get(3)?,
    })
}

impl Store {
    /// Every storage pool, by name.
    pub fn storage_pools(&self) -> Result<Vec<StoragePoolRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM storage_pools ORDER BY name"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn storage_pool(&self, name: &str) -> Result<StoragePoolRow, StoreError> {
        self.conn()?
            .query_row(
                &format!("SELECT {COLUMNS} FROM storage_pools WHERE name = ?1"),
                params![name],
                from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound {
                kind: "storage pool",
            })
    }

    pub fn create_storage_pool(&self, row: &StoragePoolRow) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT INTO storage_pools (name, driver, description, config) VALUES (?1, ?2, ?3, ?4)",
                params![row.name, row.driver, row.description, row.config],
            )
            .map_err(conflict("storage pool"))?;
        Ok(())
    }

    pub fn update_storage_pool(
        &self,
        name: &str,
        description: &str,
        config: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE storage_pools SET description = ?2, config = ?3 WHERE name = ?1",
            params![name, description, config],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "storage pool",
            });
        }
        Ok(())
    }

    /// Remove a pool's row, unless an instance or a custom volume (of any project) lives in it:
    /// checked in the same transaction, so a create racing the delete cannot be left without
    /// its pool.
    pub fn delete_storage_pool(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let used: i64 = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM instances WHERE pool = ?1)
                  + (SELECT COUNT(*) FROM storage_volumes WHERE pool = ?1)",
            params![name],
            |r| r.get(0),
        )?;
        if used > 0 {
            return Err(StoreError::InUse {
                kind: "storage pool",
            });
        }
        let n = tx.execute("DELETE FROM storage_pools WHERE name = ?1", params![name])?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "storage pool",
            });
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> StoragePoolRow {
        StoragePoolRow {
            name: name.into(),
            driver: "btrfs".into(),
            description: String::new(),
            config: r#"{"size":"1GiB"}"#.into(),
        }
    }

    #[test]
    fn pools_are_created_listed_updated_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.create_storage_pool(&pool("b")).unwrap();
        store.create_storage_pool(&pool("a")).unwrap();
        assert!(matches!(
            store.create_storage_pool(&pool("a")),
            Err(StoreError::AlreadyExists { .. })
        ));
        let names: Vec<String> = store
            .storage_pools()
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        store.update_storage_pool("a", "fast", "{}").unwrap();
        assert_eq!(store.storage_pool("a").unwrap().description, "fast");
        store.delete_storage_pool("a").unwrap();
        assert!(matches!(
            store.storage_pool("a"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete_storage_pool("a"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
