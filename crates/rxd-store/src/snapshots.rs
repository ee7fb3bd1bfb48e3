//! The `snapshots` table (rows follow their instance's renames and deletion by cascade).

use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub project: String,
    pub instance: String,
    pub name: String,
    /// The instance's config (JSON object) when the snapshot was taken.
    pub config: String,
    pub created_at: i64,
    /// Unix seconds; 0 for never.
    pub expires_at: i64,
    /// The instance's profiles and own devices (JSON) when the snapshot was taken.
    pub profiles: Vec<String>,
    pub devices: String,
}

const COLUMNS: &str = "project, instance, name, config, created_at, expires_at, profiles, devices";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        project: r.get(0)?,
        instance: r.get(1)?,
        name: r.get(2)?,
        config: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        profiles: crate::instances::names_from(r.get(6)?)?,
        devices: r.get(7)?,
    })
}

impl Store {
    pub fn create_snapshot(&self, row: &SnapshotRow) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                &format!(
                    "INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    row.project,
                    row.instance,
                    row.name,
                    row.config,
                    row.created_at,
                    row.expires_at,
                    crate::instances::names_to(&row.profiles),
                    row.devices
                ],
            )
            .map_err(conflict("snapshot"))?;
        Ok(())
    }

    /// An instance's snapshots, oldest first.
    pub fn snapshots(&self, project: &str, instance: &str) -> Result<Vec<SnapshotRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE project = ?1 AND instance = ?2
             ORDER BY created_at, name"
        ))?;
        let rows = stmt.query_map(params![project, instance], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn snapshot(
        &self,
        project: &str,
        instance: &str,
        name: &str,
    ) -> Result<SnapshotRow, StoreError> {
        self.conn()?
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM snapshots
                     WHERE project = ?1 AND instance = ?2 AND name = ?3"
                ),
                params![project, instance, name],
                from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "snapshot" })
    }

    /// Snapshots of every project whose expiry (`expires_at`, never 0) is `now` or earlier.
    pub fn expired_snapshots(&self, now: i64) -> Result<Vec<SnapshotRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE expires_at > 0 AND expires_at <= ?1
             ORDER BY expires_at, project, instance, name"
        ))?;
        let rows = stmt.query_map(params![now], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn rename_snapshot(
        &self,
        project: &str,
        instance: &str,
        old: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute(
                "UPDATE snapshots SET name = ?4 WHERE project = ?1 AND instance = ?2 AND name = ?3",
                params![project, instance, old, new],
            )
            .map_err(conflict("snapshot"))?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "snapshot" });
        }
        Ok(())
    }

    pub fn delete_snapshot(
        &self,
        project: &str,
        instance: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM snapshots WHERE project = ?1 AND instance = ?2 AND name = ?3",
            params![project, instance, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "snapshot" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceRow;

    #[test]
    fn snapshots_follow_their_instance() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let inst = InstanceRow {
            project: "default".into(),
            name: "c1".into(),
            architecture: "x86_64".into(),
            config: "{}".into(),
            description: String::new(),
            ephemeral: false,
            created_at: 1,
            profiles: vec!["default".into()],
            devices: "{}".into(),
            pool: "default".into(),
        };
        s.create_instance::<()>(&inst, None, None).unwrap().unwrap();
        let snap = |name: &str, at| SnapshotRow {
            project: "default".into(),
            instance: "c1".into(),
            name: name.into(),
            config: "{}".into(),
            created_at: at,
            expires_at: 0,
            profiles: vec!["default".into()],
            devices: "{}".into(),
        };
        s.create_snapshot(&snap("snap1", 2)).unwrap();
        s.create_snapshot(&snap("snap0", 1)).unwrap();
        assert!(matches!(
            s.create_snapshot(&snap("snap0", 3)),
            Err(StoreError::AlreadyExists { .. })
        ));
        let names = |s: &Store, i| {
            s.snapshots("default", i)
                .unwrap()
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&s, "c1"), ["snap0", "snap1"]);
        s.rename_snapshot("default", "c1", "snap1", "last").unwrap();
        assert!(matches!(
            s.rename_snapshot("default", "c1", "last", "snap0"),
            Err(StoreError::AlreadyExists { .. })
        ));
        s.rename_instance("default", "c1", "c2").unwrap();
        assert_eq!(names(&s, "c2"), ["snap0", "last"]);
        assert_eq!(s.snapshot("default", "c2", "last").unwrap().created_at, 2);
        s.delete_snapshot("default", "c2", "snap0").unwrap();
        assert!(matches!(
            s.delete_snapshot("default", "c2", "snap0"),
            Err(StoreError::NotFound { .. })
        ));
        s.delete_instance("default", "c2").unwrap();
        assert!(names(&s, "c2").is_empty());
    }

    #[test]
    fn expired_snapshots_are_those_due_by_now() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        for name in ["c1", "c2"] {
            let inst = InstanceRow {
                project: "default".into(),
                name: name.into(),
                architecture: "x86_64".into(),
                config: "{}".into(),
                description: String::new(),
                ephemeral: false,
                created_at: 1,
                profiles: vec!["default".into()],
                devices: "{}".into(),
                pool: "default".into(),
            };
            s.create_instance::<()>(&inst, None, None).unwrap().unwrap();
        }
        for (instance, name, expires_at) in [
            ("c1", "never", 0),
            ("c1", "due", 100),
            ("c2", "late", 50),
            ("c2", "later", 101),
        ] {
            s.create_snapshot(&SnapshotRow {
                project: "default".into(),
                instance: instance.into(),
                name: name.into(),
                config: "{}".into(),
                created_at: 1,
                expires_at,
                profiles: Vec::new(),
                devices: "{}".into(),
            })
            .unwrap();
        }
        let names = |now| {
            s.expired_snapshots(now)
                .unwrap()
                .into_iter()
                .map(|r| format!("{}/{}", r.instance, r.name))
                .collect::<Vec<_>>()
        };
        assert!(names(49).is_empty());
        assert_eq!(names(100), ["c2/late", "c1/due"]);
        assert_eq!(names(1000), ["c2/late", "c1/due", "c2/later"]);
    }
}
