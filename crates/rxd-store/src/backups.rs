//! The `instance_backups` table: each backup of an instance (`/1.0/instances/<n>/backups`), the
//! file holding it (a name under the daemon's backups directory), and how it was made. Rows go
//! with their instance (a trigger), and follow its renames; the files are the daemon's to
//! remove.

use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRow {
    pub project: String,
    pub instance: String,
    pub name: String,
    /// The file's name in the backups directory.
    pub file: String,
    pub created_at: i64,
    /// `None`: never expires.
    pub expires_at: Option<i64>,
    pub instance_only: bool,
    pub optimized_storage: bool,
    pub compression: String,
}

const COLUMNS: &str = "project, instance, name, file, created_at, expires_at, instance_only, optimized_storage, compression";
const KIND: &str = "instance backup";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        project: r.get(0)?,
        instance: r.get(1)?,
        name: r.get(2)?,
        file: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        instance_only: r.get(6)?,
        optimized_storage: r.get(7)?,
        compression: r.get(8)?,
    })
}

impl Store {
    /// An instance's backups, oldest first.
    pub fn backups(&self, project: &str, instance: &str) -> Result<Vec<BackupRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM instance_backups WHERE project = ?1 AND instance = ?2 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map(params![project, instance], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Backups whose expiry is at or before `now`.
    pub fn expired_backups(&self, now: i64) -> Result<Vec<BackupRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM instance_backups WHERE expires_at IS NOT NULL AND expires_at <= ?1"
        ))?;
        let rows = stmt.query_map(params![now], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The file names of every backup.
    pub fn backup_files(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT file FROM instance_backups")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn backup(
        &self,
        project: &str,
        instance: &str,
        name: &str,
    ) -> Result<BackupRow, StoreError> {
        self.conn()?
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM instance_backups WHERE project = ?1 AND instance = ?2 AND name = ?3"
                ),
                params![project, instance, name],
                from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: KIND })
    }

    /// Record a backup whose file is written; its instance must exist.
    pub fn create_backup(&self, row: &BackupRow) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM instances WHERE project = ?1 AND name = ?2",
                params![row.project, row.instance],
                |r| r.get(0),
            )
            .optional()?;
        exists.ok_or(StoreError::NotFound { kind: "instance" })?;
        tx.execute(
            &format!("INSERT INTO instance_backups ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                row.project,
                row.instance,
                row.name,
                row.file,
                row.created_at,
                row.expires_at,
                row.instance_only,
                row.optimized_storage,
                row.compression
            ],
        )
        .map_err(conflict(KIND))?;
        tx.commit()?;
        Ok(())
    }

    pub fn rename_backup(
        &self,
        project: &str,
        instance: &str,
        name: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute(
                "UPDATE instance_backups SET name = ?4 WHERE project = ?1 AND instance = ?2 AND name = ?3",
                params![project, instance, name, new],
            )
            .map_err(conflict(KIND))?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: KIND });
        }
        Ok(())
    }

    pub fn delete_backup(
        &self,
        project: &str,
        instance: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM instance_backups WHERE project = ?1 AND instance = ?2 AND name = ?3",
            params![project, instance, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: KIND });
        }
        Ok(())
    }
}
