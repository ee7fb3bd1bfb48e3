//! The `images` and `image_aliases` tables.

use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub project: String,
    pub fingerprint: String,
    pub filename: String,
    pub size: i64,
    pub architecture: String,
    /// JSON object of string properties.
    pub properties: String,
    pub public: bool,
    pub created_at: i64,
    pub uploaded_at: i64,
    /// Bytes of the files its tarball unpacked to (0 for images recorded before this was kept).
    pub unpacked_size: i64,
    pub cache: ImageCache,
}

/// Where a pulled image came from and how it is kept (LXD's `cached`, `auto_update`,
/// `update_source`, `last_used_at`). All default for an uploaded image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCache {
    /// Pulled for an instance rather than asked for: removed once unused for
    /// `images.remote_cache_expiry` days.
    pub cached: bool,
    pub auto_update: bool,
    /// JSON of the source (server, protocol, alias, ...); empty for none.
    pub update_source: String,
    /// Unix seconds; 0 for never.
    pub last_used_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRow {
    pub project: String,
    pub name: String,
    pub fingerprint: String,
    pub description: String,
}

const IMAGE_COLUMNS: &str =
    "project, fingerprint, filename, size, architecture, properties, public, created_at, uploaded_at, unpacked_size, cached, auto_update, update_source, last_used_at";

fn image_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        project: r.get(0)?,
        fingerprint: r.get(1)?,
        filename: r.get(2)?,
        size: r.get(3)?,
        architecture: r.get(4)?,
        properties: r.get(5)?,
        public: r.get(6)?,
        created_at: r.get(7)?,
        uploaded_at: r.get(8)?,
        unpacked_size: r.get(9)?,
        cache: ImageCache {
            cached: r.get(10)?,
            auto_update: r.get(11)?,
            update_source: r.get(12)?,
            last_used_at: r.get(13)?,
        },
    })
}

fn alias_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AliasRow> {
    Ok(AliasRow {
        project: r.get(0)?,
        name: r.get(1)?,
        fingerprint: r.get(2)?,
        description: r.get(3)?,
    })
}

impl Store {
    pub fn insert_image(&self, row: &ImageRow) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                &format!("INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
                params![
                    row.project,
                    row.fingerprint,
                    row.filename,
                    row.size,
                    row.architecture,
                    row.properties,
                    row.public,
                    row.created_at,
                    row.uploaded_at,
                    row.unpacked_size,
                    row.cache.cached,
                    row.cache.auto_update,
                    row.cache.update_source,
                    row.cache.last_used_at
                ],
            )
            .map_err(conflict("image"))?;
        Ok(())
    }

    pub fn images(&self, project: &str) -> Result<Vec<ImageRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE project = ?1 ORDER BY fingerprint"
        ))?;
        let rows = stmt.query_map(params![project], image_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Images of `project` whose fingerprint starts with `prefix` (lowercase hex), at most `limit`.
    pub fn images_by_prefix(
        &self,
        project: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<ImageRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE project = ?1 AND fingerprint >= ?2 AND fingerprint < ?3
             ORDER BY fingerprint LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![project, prefix, format!("{prefix}g"), limit as i64],
            image_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The unpacked size recorded for the image content `fingerprint` in any project (another
    /// project's import of the same tarball reuses its unpacked tree).
    pub fn image_unpacked_size(&self, fingerprint: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.conn()?.query_row(
            "SELECT max(unpacked_size) FROM images WHERE fingerprint = ?1",
            params![fingerprint],
            |r| r.get(0),
        )?)
    }

    /// The bytes `project` holds as `limits.disk` counts them: its images' unpacked trees and
    /// its instances' root filesystems.
    pub fn disk_usage(&self, project: &str) -> Result<i64, StoreError> {
        Ok(self.conn()?.query_row(
            "SELECT (SELECT coalesce(sum(unpacked_size), 0) FROM images WHERE project = ?1)
                  + (SELECT coalesce(sum(rootfs_size), 0) FROM instances WHERE project = ?1)",
            params![project],
            |r| r.get(0),
        )?)
    }

    /// Every image of every project (for the cache's upkeep).
    pub fn all_images(&self) -> Result<Vec<ImageRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images ORDER BY project, fingerprint"
        ))?;
        let rows = stmt.query_map([], image_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replace `old` by `new` in one transaction (an image refreshed to a newer one): the new
    /// row recorded (unless the project has it already), `old`'s aliases moved to it, `old`
    /// removed. Returns whether another project still holds `old`'s content.
    pub fn replace_image(&self, old: &ImageRow, new: &ImageRow) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let have: i64 = tx.query_row(
            "SELECT count(*) FROM images WHERE project = ?1 AND fingerprint = ?2",
            params![new.project, new.fingerprint],
            |r| r.get(0),
        )?;
        if have == 0 {
            tx.execute(
                &format!("INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
                params![
                    new.project,
                    new.fingerprint,
                    new.filename,
                    new.size,
                    new.architecture,
                    new.properties,
                    new.public,
                    new.created_at,
                    new.uploaded_at,
                    new.unpacked_size,
                    new.cache.cached,
                    new.cache.auto_update,
                    new.cache.update_source,
                    new.cache.last_used_at
                ],
            )?;
        }
        tx.execute(
            "UPDATE image_aliases SET fingerprint = ?3 WHERE project = ?1 AND fingerprint = ?2",
            params![old.project, old.fingerprint, new.fingerprint],
        )?;
        tx.execute(
            "DELETE FROM images WHERE project = ?1 AND fingerprint = ?2",
            params![old.project, old.fingerprint],
        )?;
        let others: i64 = tx.query_row(
            "SELECT count(*) FROM images WHERE fingerprint = ?1",
            params![old.fingerprint],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(others > 0)
    }

    /// Every image content any project holds (distinct fingerprints).
    pub fn image_fingerprints(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT DISTINCT fingerprint FROM images ORDER BY fingerprint")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether any project still uses the image content `fingerprint`.
    pub fn image_in_use(&self, fingerprint: &str) -> Result<bool, StoreError> {
        let n: i64 = self.conn()?.query_row(
            "SELECT count(*) FROM images WHERE fingerprint = ?1",
            params![fingerprint],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Replace what `PUT /1.0/images/<fingerprint>` may change: properties (a JSON object of
    /// strings) and whether the image is public.
    pub fn update_image(
        &self,
        project: &str,
        fingerprint: &str,
        properties: &str,
        public: bool,
        auto_update: bool,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE images SET properties = ?3, public = ?4, auto_update = ?5 WHERE project = ?1 AND fingerprint = ?2",
            params![project, fingerprint, properties, public, auto_update],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "image" });
        }
        Ok(())
    }

    pub fn delete_image(&self, project: &str, fingerprint: &str) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM images WHERE project = ?1 AND fingerprint = ?2",
            params![project, fingerprint],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "image" });
        }
        Ok(())
    }

    pub fn insert_alias(&self, alias: &AliasRow) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT INTO image_aliases (project, name, fingerprint, description) VALUES (?1, ?2, ?3, ?4)",
                params![alias.project, alias.name, alias.fingerprint, alias.description],
            )
            .map_err(conflict("image alias"))?;
        Ok(())
    }

    pub fn aliases(&self, project: &str) -> Result<Vec<AliasRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT project, name, fingerprint, description FROM image_aliases WHERE project = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![project], alias_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn alias(&self, project: &str, name: &str) -> Result<AliasRow, StoreError> {
        self.conn()?
            .query_row(
                "SELECT project, name, fingerprint, description FROM image_aliases WHERE project = ?1 AND name = ?2",
                params![project, name],
                alias_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "image alias" })
    }

    /// Point an alias elsewhere or change its description.
    pub fn update_alias(&self, alias: &AliasRow) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE image_aliases SET fingerprint = ?3, description = ?4 WHERE project = ?1 AND name = ?2",
            params![alias.project, alias.name, alias.fingerprint, alias.description],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "image alias",
            });
        }
        Ok(())
    }

    pub fn rename_alias(&self, project: &str, old: &str, new: &str) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute(
                "UPDATE image_aliases SET name = ?3 WHERE project = ?1 AND name = ?2",
                params![project, old, new],
            )
            .map_err(conflict("image alias"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "image alias",
            });
        }
        Ok(())
    }

    pub fn delete_alias(&self, project: &str, name: &str) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM image_aliases WHERE project = ?1 AND name = ?2",
            params![project, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "image alias",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(project: &str, fp: char) -> ImageRow {
        ImageRow {
            project: project.into(),
            fingerprint: fp.to_string().repeat(64),
            filename: "bb.tar.gz".into(),
            size: 10,
            architecture: "x86_64".into(),
            properties: "{}".into(),
            public: false,
            created_at: 1,
            uploaded_at: 2,
            unpacked_size: 100,
            cache: ImageCache::default(),
        }
    }

    #[test]
    fn images_and_aliases_per_project() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.insert_image(&image("default", 'a')).unwrap();
        s.insert_image(&image("other", 'a')).unwrap();
        assert!(matches!(
            s.insert_image(&image("default", 'a')),
            Err(StoreError::AlreadyExists { .. })
        ));
        s.insert_image(&image("default", 'b')).unwrap();
        assert_eq!(s.images("default").unwrap().len(), 2);
        assert_eq!(s.disk_usage("default").unwrap(), 200);
        assert_eq!(s.disk_usage("other").unwrap(), 100);
        assert_eq!(s.disk_usage("nowhere").unwrap(), 0);
        assert_eq!(s.image_unpacked_size(&"a".repeat(64)).unwrap(), Some(100));
        assert_eq!(s.image_unpacked_size(&"c".repeat(64)).unwrap(), None);
        assert_eq!(s.images_by_prefix("default", "a", 2).unwrap().len(), 1);
        assert_eq!(s.images_by_prefix("default", "", 2).unwrap().len(), 2);
        let alias = AliasRow {
            project: "default".into(),
            name: "bb".into(),
            fingerprint: "a".repeat(64),
            description: String::new(),
        };
        s.insert_alias(&alias).unwrap();
        assert!(matches!(
            s.insert_alias(&alias),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(
            matches!(s.alias("other", "bb"), Err(StoreError::NotFound { .. })),
            "aliases are per project"
        );
        s.rename_alias("default", "bb", "busybox").unwrap();
        assert_eq!(
            s.alias("default", "busybox").unwrap().fingerprint,
            "a".repeat(64)
        );
        // Deleting an image removes its aliases; the same content in another project stays.
        s.delete_image("default", &"a".repeat(64)).unwrap();
        assert!(s.aliases("default").unwrap().is_empty());
        assert!(s.image_in_use(&"a".repeat(64)).unwrap());
        s.delete_image("other", &"a".repeat(64)).unwrap();
        assert!(!s.image_in_use(&"a".repeat(64)).unwrap());
    }

    #[test]
    fn a_refreshed_image_takes_the_old_ones_aliases_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let mut old = image("default", 'a');
        old.cache.cached = true;
        old.cache.update_source = r#"{"alias":"x"}"#.into();
        s.insert_image(&old).unwrap();
        s.insert_image(&image("other", 'a')).unwrap();
        s.insert_alias(&AliasRow {
            project: "default".into(),
            name: "d12".into(),
            fingerprint: old.fingerprint.clone(),
            description: String::new(),
        })
        .unwrap();
        let stored = s.images("default").unwrap();
        assert!(stored[0].cache.cached);
        let new = ImageRow {
            cache: stored[0].cache.clone(),
            ..image("default", 'b')
        };
        assert!(
            s.replace_image(&stored[0], &new).unwrap(),
            "other still holds a"
        );
        let now = s.images("default").unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].fingerprint, new.fingerprint);
        assert_eq!(now[0].cache.update_source, r#"{"alias":"x"}"#);
        assert_eq!(
            s.alias("default", "d12").unwrap().fingerprint,
            new.fingerprint
        );
        assert_eq!(s.all_images().unwrap().len(), 2);
    }
}
