//! The `storage_volumes` table (custom volumes, per pool and project, as in LXD) and their
//! snapshots. Instance and image volumes are not recorded here: an instance's is its row's
//! `pool`, an image's is a directory in each pool.

use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRow {
    pub pool: String,
    pub project: String,
    pub name: String,
    pub description: String,
    /// JSON object of strings.
    pub config: String,
    /// `filesystem` (the only kind rxd makes).
    pub content_type: String,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSnapshotRow {
    pub pool: String,
    pub project: String,
    pub volume: String,
    pub name: String,
    pub description: String,
    /// The volume's config when the snapshot was taken (JSON object of strings).
    pub config: String,
    pub created_at: i64,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
}

const COLUMNS: &str = "pool, project, name, description, config, content_type, created_at";
const SNAPSHOT_COLUMNS: &str =
    "pool, project, volume, name, description, config, created_at, expires_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VolumeRow> {
    Ok(VolumeRow {
        pool: r.get(0)?,
        project: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        config: r.get(4)?,
        content_type: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn snapshot_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VolumeSnapshotRow> {
    Ok(VolumeSnapshotRow {
        pool: r.get(0)?,
        project: r.get(1)?,
        volume: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        config: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
    })
}

const VOLUME: &str = "storage volume";
const SNAPSHOT: &str = "storage volume snapshot";

fn one_changed(n: usize, kind: &'static str) -> Result<(), StoreError> {
    if n == 0 {
        return Err(StoreError::NotFound { kind });
    }
    Ok(())
}

fn require_volume(
    tx: &Transaction<'_>,
    pool: &str,
    project: &str,
    name: &str,
) -> Result<(), StoreError> {
    tx.query_row(
        "SELECT 1 FROM storage_volumes WHERE pool = ?1 AND project = ?2 AND name = ?3",
        params![pool, project, name],
        |_| Ok(()),
    )
    .optional()?
    .ok_or(StoreError::NotFound { kind: VOLUME })
}

impl Store {
    /// Custom volumes, by pool, project and name; `pool`/`project` `None` for all.
    pub fn storage_volumes(
        &self,
        pool: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<VolumeRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM storage_volumes
             WHERE (?1 IS NULL OR pool = ?1) AND (?2 IS NULL OR project = ?2)
             ORDER BY pool, project, name"
        ))?;
        let rows = stmt.query_map(params![pool, project], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn storage_volume(
        &self,
        pool: &str,
        project: &str,
        name: &str,
    ) -> Result<VolumeRow, StoreError> {
        self.conn()?
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM storage_volumes WHERE pool = ?1 AND project = ?2 AND name = ?3"
                ),
                params![pool, project, name],
                from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: VOLUME })
    }

    /// Record a new volume, and (for a copy) its snapshots, in one transaction. The pool and
    /// project must exist.
    pub fn create_storage_volume(
        &self,
        row: &VolumeRow,
        snapshots: &[VolumeSnapshotRow],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let pool: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM storage_pools WHERE name = ?1",
                params![row.pool],
                |r| r.get(0),
            )
            .optional()?;
        pool.ok_or(StoreError::NotFound {
            kind: "storage pool",
        })?;
        let project: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM projects WHERE name = ?1",
                params![row.project],
                |r| r.get(0),
            )
            .optional()?;
        project.ok_or(StoreError::NotFound { kind: "project" })?;
        tx.execute(
            &format!("INSERT INTO storage_volumes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                row.pool,
                row.project,
                row.name,
                row.description,
                row.config,
                row.content_type,
                row.created_at
            ],
        )
        .map_err(conflict(VOLUME))?;
        for s in snapshots {
            insert_snapshot(
                &tx,
                &VolumeSnapshotRow {
                    pool: row.pool.clone(),
                    project: row.project.clone(),
                    volume: row.name.clone(),
                    ..s.clone()
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn update_storage_volume(
        &self,
        pool: &str,
        project: &str,
        name: &str,
        description: &str,
        config: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE storage_volumes SET description = ?4, config = ?5
             WHERE pool = ?1 AND project = ?2 AND name = ?3",
            params![pool, project, name, description, config],
        )?;
        one_changed(n, VOLUME)
    }

    /// Rename a volume and its snapshots' records with it.
    pub fn rename_storage_volume(
        &self,
        pool: &str,
        project: &str,
        name: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n = tx
            .execute(
                "UPDATE storage_volumes SET name = ?4 WHERE pool = ?1 AND project = ?2 AND name = ?3",
                params![pool, project, name, new],
            )
            .map_err(conflict(VOLUME))?;
        one_changed(n, VOLUME)?;
        tx.execute(
            "UPDATE storage_volume_snapshots SET volume = ?4
             WHERE pool = ?1 AND project = ?2 AND volume = ?3",
            params![pool, project, name, new],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remove a volume's record and its snapshots'.
    pub fn delete_storage_volume(
        &self,
        pool: &str,
        project: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM storage_volume_snapshots WHERE pool = ?1 AND project = ?2 AND volume = ?3",
            params![pool, project, name],
        )?;
        let n = tx.execute(
            "DELETE FROM storage_volumes WHERE pool = ?1 AND project = ?2 AND name = ?3",
            params![pool, project, name],
        )?;
        one_changed(n, VOLUME)?;
        tx.commit()?;
        Ok(())
    }

    /// A volume's snapshots, oldest first.
    pub fn storage_volume_snapshots(
        &self,
        pool: &str,
        project: &str,
        volume: &str,
    ) -> Result<Vec<VolumeSnapshotRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM storage_volume_snapshots
             WHERE pool = ?1 AND project = ?2 AND volume = ?3 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map(params![pool, project, volume], snapshot_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every volume snapshot whose expiry is `now` (Unix seconds) or earlier, oldest first.
    pub fn expired_storage_volume_snapshots(
        &self,
        now: i64,
    ) -> Result<Vec<VolumeSnapshotRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM storage_volume_snapshots
             WHERE expires_at IS NOT NULL AND expires_at > 0 AND expires_at <= ?1
             ORDER BY expires_at, id"
        ))?;
        let rows = stmt.query_map(params![now], snapshot_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn storage_volume_snapshot(
        &self,
        pool: &str,
        project: &str,
        volume: &str,
        name: &str,
    ) -> Result<VolumeSnapshotRow, StoreError> {
        self.conn()?
            .query_row(
                &format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM storage_volume_snapshots
                     WHERE pool = ?1 AND project = ?2 AND volume = ?3 AND name = ?4"
                ),
                params![pool, project, volume, name],
                snapshot_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: SNAPSHOT })
    }

    /// Record a snapshot of an existing volume.
    pub fn create_storage_volume_snapshot(
        &self,
        row: &VolumeSnapshotRow,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        require_volume(&tx, &row.pool, &row.project, &row.volume)?;
        insert_snapshot(&tx, row)?;
        tx.commit()?;
        Ok(())
    }

    pub fn update_storage_volume_snapshot(
        &self,
        row: &VolumeSnapshotRow,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE storage_volume_snapshots SET description = ?5, expires_at = ?6
             WHERE pool = ?1 AND project = ?2 AND volume = ?3 AND name = ?4",
            params![
                row.pool,
                row.project,
                row.volume,
                row.name,
                row.description,
                row.expires_at
            ],
        )?;
        one_changed(n, SNAPSHOT)
    }

    pub fn rename_storage_volume_snapshot(
        &self,
        pool: &str,
        project: &str,
        volume: &str,
        name: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute(
                "UPDATE storage_volume_snapshots SET name = ?5
                 WHERE pool = ?1 AND project = ?2 AND volume = ?3 AND name = ?4",
                params![pool, project, volume, name, new],
            )
            .map_err(conflict(SNAPSHOT))?;
        one_changed(n, SNAPSHOT)
    }

    pub fn delete_storage_volume_snapshot(
        &self,
        pool: &str,
        project: &str,
        volume: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM storage_volume_snapshots
             WHERE pool = ?1 AND project = ?2 AND volume = ?3 AND name = ?4",
            params![pool, project, volume, name],
        )?;
        one_changed(n, SNAPSHOT)
    }
}

fn insert_snapshot(tx: &Transaction<'_>, s: &VolumeSnapshotRow) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO storage_volume_snapshots ({SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            s.pool,
            s.project,
            s.volume,
            s.name,
            s.description,
            s.config,
            s.created_at,
            s.expires_at
        ],
    )
    .map_err(conflict(SNAPSHOT))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoragePoolRow;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .create_storage_pool(&StoragePoolRow {
                name: "p".into(),
                driver: "dir".into(),
                description: String::new(),
                config: "{}".into(),
            })
            .unwrap();
        (dir, store)
    }

    fn volume(name: &str) -> VolumeRow {
        VolumeRow {
            pool: "p".into(),
            project: "default".into(),
            name: name.into(),
            description: String::new(),
            config: "{}".into(),
            content_type: "filesystem".into(),
            created_at: 1,
        }
    }

    fn snap(name: &str) -> VolumeSnapshotRow {
        VolumeSnapshotRow {
            pool: "p".into(),
            project: "default".into(),
            volume: "v".into(),
            name: name.into(),
            description: String::new(),
            config: "{}".into(),
            created_at: 2,
            expires_at: None,
        }
    }

    #[test]
    fn volumes_and_snapshots_live_and_die_together() {
        let (_dir, store) = store();
        store.create_storage_volume(&volume("v"), &[]).unwrap();
        assert!(matches!(
            store.create_storage_volume(&volume("v"), &[]),
            Err(StoreError::AlreadyExists { .. })
        ));
        let mut elsewhere = volume("v");
        elsewhere.pool = "nope".into();
        assert!(matches!(
            store.create_storage_volume(&elsewhere, &[]),
            Err(StoreError::NotFound { .. })
        ));
        store.create_storage_volume_snapshot(&snap("s0")).unwrap();
        assert!(matches!(
            store.create_storage_volume_snapshot(&snap("s0")),
            Err(StoreError::AlreadyExists { .. })
        ));
        let mut orphan = snap("s1");
        orphan.volume = "w".into();
        assert!(matches!(
            store.create_storage_volume_snapshot(&orphan),
            Err(StoreError::NotFound { .. })
        ));
        store
            .rename_storage_volume("p", "default", "v", "w")
            .unwrap();
        assert_eq!(
            store.storage_volume_snapshots("p", "default", "w").unwrap()[0].name,
            "s0"
        );
        // A pool or project holding a volume cannot go.
        assert!(matches!(
            store.delete_storage_pool("p"),
            Err(StoreError::InUse { .. })
        ));
        store.delete_storage_volume("p", "default", "w").unwrap();
        assert!(store
            .storage_volume_snapshots("p", "default", "w")
            .unwrap()
            .is_empty());
        store.delete_storage_pool("p").unwrap();
    }
}
