//! The `instances` and `idmap_blocks` tables.

use crate::{conflict, Store, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub project: String,
    pub name: String,
    pub architecture: String,
    /// JSON object of string values (user config and rxd's volatile keys).
    pub config: String,
    pub description: String,
    pub ephemeral: bool,
    pub created_at: i64,
    /// The profiles it uses, in the order they apply.
    pub profiles: Vec<String>,
    /// JSON object: its own devices, by name, each an object of strings.
    pub devices: String,
    /// The storage pool its root filesystem (and its snapshots) live in.
    pub pool: String,
}

const COLUMNS: &str =
    "project, name, architecture, config, description, ephemeral, created_at, profiles, devices, pool";

/// A JSON array of names, as the `profiles` columns hold one.
pub(crate) fn names_from(text: String) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn names_to(names: &[String]) -> String {
    serde_json::Value::from(names).to_string()
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        project: r.get(0)?,
        name: r.get(1)?,
        architecture: r.get(2)?,
        config: r.get(3)?,
        description: r.get(4)?,
        ephemeral: r.get(5)?,
        created_at: r.get(6)?,
        profiles: names_from(r.get(7)?)?,
        devices: r.get(8)?,
        pool: r.get(9)?,
    })
}

/// An isolated idmap block already taken, and the project whose instance holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenBlock {
    pub project: String,
    pub base: u32,
    pub size: u32,
}

fn blocks(tx: &Transaction<'_>) -> Result<Vec<TakenBlock>, StoreError> {
    let mut stmt = tx.prepare("SELECT project, base, size FROM idmap_blocks ORDER BY base")?;
    let rows = stmt.query_map([], |r| {
        Ok(TakenBlock {
            project: r.get(0)?,
            base: r.get(1)?,
            size: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Refuses ([`StoreError::Full`]) when `project` holds more than `max` instances, counted in
/// the transaction that has just added one (which is then rolled back with it).
fn within(
    tx: &rusqlite::Transaction<'_>,
    project: &str,
    max: Option<u64>,
) -> Result<(), StoreError> {
    let Some(limit) = max else {
        return Ok(());
    };
    let count: i64 = tx.query_row(
        "SELECT COUNT(*) FROM instances WHERE project = ?1",
        params![project],
        |r| r.get(0),
    )?;
    if u64::try_from(count).unwrap_or(0) > limit {
        return Err(StoreError::Full {
            project: project.to_owned(),
            limit,
        });
    }
    Ok(())
}

/// Chooses an idmap block (base, size) given the blocks already taken.
pub type Allocator<E> = dyn Fn(&[TakenBlock]) -> Result<(u32, u32), E>;

/// A change of idmap in an update: the allocator for a new isolated block (none: no block),
/// and the config to store given the block chosen.
pub struct Remap<'a, E> {
    pub allocate: Option<&'a Allocator<E>>,
    pub config: &'a dyn Fn(Option<(u32, u32)>) -> String,
}

impl Store {
    /// Create an instance; if `allocate` is given, it is called with every isolated block already
    /// taken (base, size) and returns this instance's block (or refuses), all in one transaction
    /// so two creations cannot pick the same ids. With `max`, the row is not recorded if its
    /// project would then hold more than `max` instances ([`StoreError::Full`]), in the same
    /// transaction, so creations racing each other cannot together pass a project's limit.
    ///
    /// The row is an unfinished create's, which the daemon finishes (`finish_create`, a copy's
    /// or an import's finish) or deletes. Its commit is not synced on its own: the finish's is
    /// (`synchronous = FULL`), and WAL commits reach the disk in order, so a power cut never
    /// keeps the finish without the row. It may keep the row alone (start-up recovery removes
    /// it with its files, as after a kill) or neither: the client was told nothing, and
    /// recovery removes the files the create had made, which no row owns. One disk sync fewer
    /// per create.
    pub fn create_instance<E>(
        &self,
        row: &InstanceRow,
        allocate: Option<&Allocator<E>>,
        max: Option<u64>,
    ) -> Result<Result<Option<(u32, u32)>, E>, StoreError> {
        let mut conn = self.conn()?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let made = insert_unfinished(&mut conn, row, allocate, max);
        // Every other commit is synced again, whatever became of this one. SQLite refuses the
        // pragma only inside a transaction, and none is open here; should it refuse anyway,
        // the store must not go on committing unsynced: the panic poisons the connection's
        // lock while this guard holds it, and every later call gets `Poisoned`.
        if let Err(e) = conn.pragma_update(None, "synchronous", "FULL") {
            panic!("the store could not return to synchronous=FULL: {e}");
        }
        made
    }

    pub fn instances(&self, project: &str) -> Result<Vec<InstanceRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM instances WHERE project = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map(params![project], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every instance of every project.
    pub fn all_instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM instances ORDER BY project, name"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn instance(&self, project: &str, name: &str) -> Result<InstanceRow, StoreError> {
        self.conn()?
            .query_row(
                &format!("SELECT {COLUMNS} FROM instances WHERE project = ?1 AND name = ?2"),
                params![project, name],
                from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "instance" })
    }

    /// The size recorded for an instance's root filesystem when it was made (0: unknown).
    pub fn rootfs_size(&self, project: &str, name: &str) -> Result<i64, StoreError> {
        self.conn()?
            .query_row(
                "SELECT rootfs_size FROM instances WHERE project = ?1 AND name = ?2",
                params![project, name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "instance" })
    }

    /// The last step of a create, in one transaction (one sync): the config stored (the
    /// instance is usable from now on), the root filesystem's size, and the image's use.
    pub fn finish_create(
        &self,
        project: &str,
        name: &str,
        config: &str,
        rootfs_size: i64,
        image: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE instances SET config = ?3, rootfs_size = ?4 WHERE project = ?1 AND name = ?2",
            params![project, name, config, rootfs_size],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        tx.execute(
            "UPDATE images SET last_used_at = ?3 WHERE project = ?1 AND fingerprint = ?2",
            params![project, image, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Delete an instance and end the intent that recorded its delete, in one transaction.
    pub fn delete_instance_ending(
        &self,
        project: &str,
        name: &str,
        intent: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM instances WHERE project = ?1 AND name = ?2",
            params![project, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        tx.execute("DELETE FROM intents WHERE id = ?1", params![intent])?;
        tx.commit()?;
        Ok(())
    }

    pub fn update_instance_config(
        &self,
        project: &str,
        name: &str,
        config: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE instances SET config = ?3 WHERE project = ?1 AND name = ?2",
            params![project, name, config],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        Ok(())
    }

    /// Replace an instance's config, description, ephemeral flag, profiles and devices. With a `remap`, its isolated
    /// idmap block is released, a new one chosen if `remap.allocate` is given (the allocator sees
    /// every other instance's block, not this one's old one), and the config stored is
    /// `remap.config(block)`: all in one transaction, so the stored map and the block agree.
    pub fn update_instance<E>(
        &self,
        row: &InstanceRow,
        remap: Option<Remap<'_, E>>,
    ) -> Result<Result<Option<(u32, u32)>, E>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut chosen = None;
        let mut config = row.config.clone();
        if let Some(remap) = remap {
            tx.execute(
                "DELETE FROM idmap_blocks WHERE project = ?1 AND instance = ?2",
                params![row.project, row.name],
            )?;
            if let Some(f) = remap.allocate {
                match f(&blocks(&tx)?) {
                    Ok((base, size)) => {
                        tx.execute(
                            "INSERT INTO idmap_blocks (project, instance, base, size) VALUES (?1, ?2, ?3, ?4)",
                            params![row.project, row.name, base, size],
                        )?;
                        chosen = Some((base, size));
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
            config = (remap.config)(chosen);
        }
        let n = tx.execute(
            "UPDATE instances SET config = ?3, description = ?4, ephemeral = ?5, profiles = ?6, devices = ?7
             WHERE project = ?1 AND name = ?2",
            params![
                row.project,
                row.name,
                config,
                row.description,
                row.ephemeral,
                names_to(&row.profiles),
                row.devices
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        tx.commit()?;
        Ok(Ok(chosen))
    }

    /// Rename an instance (its idmap block follows by the foreign key's cascade).
    pub fn rename_instance(&self, project: &str, old: &str, new: &str) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute(
                "UPDATE instances SET name = ?3 WHERE project = ?1 AND name = ?2",
                params![project, old, new],
            )
            .map_err(conflict("instance"))?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        Ok(())
    }

    /// Move an instance (its snapshots, idmap block, NIC reservations and backups follow by
    /// cascade and trigger) to `to_project` as `to_name`, with its own devices `devices`; with
    /// a `remap`, its idmap block is chosen again there and its config stored as
    /// `remap.config(block)` (see [`Store::update_instance`]). With `max`, refused if
    /// `to_project` would then hold more than `max` instances ([`StoreError::Full`]). One
    /// transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn move_instance_project<E>(
        &self,
        project: &str,
        name: &str,
        to_project: &str,
        to_name: &str,
        devices: &str,
        remap: Option<Remap<'_, E>>,
        max: Option<u64>,
    ) -> Result<Result<Option<(u32, u32)>, E>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM projects WHERE name = ?1",
                params![to_project],
                |r| r.get(0),
            )
            .optional()?;
        exists.ok_or(StoreError::NotFound { kind: "project" })?;
        let n = tx
            .execute(
                "UPDATE instances SET project = ?3, name = ?4, devices = ?5 WHERE project = ?1 AND name = ?2",
                params![project, name, to_project, to_name, devices],
            )
            .map_err(conflict("instance"))?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        within(&tx, to_project, max)?;
        let mut chosen = None;
        if let Some(remap) = remap {
            tx.execute(
                "DELETE FROM idmap_blocks WHERE project = ?1 AND instance = ?2",
                params![to_project, to_name],
            )?;
            if let Some(f) = remap.allocate {
                match f(&blocks(&tx)?) {
                    Ok((base, size)) => {
                        tx.execute(
                            "INSERT INTO idmap_blocks (project, instance, base, size) VALUES (?1, ?2, ?3, ?4)",
                            params![to_project, to_name, base, size],
                        )?;
                        chosen = Some((base, size));
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
            tx.execute(
                "UPDATE instances SET config = ?3 WHERE project = ?1 AND name = ?2",
                params![to_project, to_name, (remap.config)(chosen)],
            )?;
        }
        tx.commit()?;
        Ok(Ok(chosen))
    }

    /// Record that an instance (and its snapshots) now live in `pool`, with its own devices
    /// `devices` (its root disk naming that pool), in one statement.
    pub fn set_instance_pool(
        &self,
        project: &str,
        name: &str,
        pool: &str,
        devices: &str,
    ) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE instances SET pool = ?3, devices = ?4 WHERE project = ?1 AND name = ?2",
            params![project, name, pool, devices],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        Ok(())
    }

    /// Delete an instance and its idmap block.
    pub fn delete_instance(&self, project: &str, name: &str) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM instances WHERE project = ?1 AND name = ?2",
            params![project, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "instance" });
        }
        Ok(())
    }
}

/// [`Store::create_instance`]'s transaction.
fn insert_unfinished<E>(
    conn: &mut Connection,
    row: &InstanceRow,
    allocate: Option<&Allocator<E>>,
    max: Option<u64>,
) -> Result<Result<Option<(u32, u32)>, E>, StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        &format!(
            "INSERT INTO instances ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            row.project,
            row.name,
            row.architecture,
            row.config,
            row.description,
            row.ephemeral,
            row.created_at,
            names_to(&row.profiles),
            row.devices,
            row.pool
        ],
    )
    .map_err(conflict("instance"))?;
    within(&tx, &row.project, max)?;
    let block = match allocate {
        None => None,
        Some(f) => match f(&blocks(&tx)?) {
            Ok((base, size)) => {
                tx.execute(
                    "INSERT INTO idmap_blocks (project, instance, base, size) VALUES (?1, ?2, ?3, ?4)",
                    params![row.project, row.name, base, size],
                )?;
                Some((base, size))
            }
            Err(e) => return Ok(Err(e)),
        },
    };
    tx.commit()?;
    Ok(Ok(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> InstanceRow {
        InstanceRow {
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
        }
    }

    #[test]
    fn commits_after_an_unfinished_row_are_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let synchronous = |s: &Store| -> i64 {
            s.conn()
                .unwrap()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(synchronous(&s), 2, "FULL from the start");
        s.create_instance::<()>(&row("a"), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(synchronous(&s), 2, "FULL after a recorded row");
        let taken = s.create_instance::<()>(&row("a"), None, None);
        assert!(matches!(taken, Err(StoreError::AlreadyExists { .. })));
        assert_eq!(synchronous(&s), 2, "FULL after a refused row");
        let refuse = |_: &[TakenBlock]| Err(());
        let refused = s.create_instance(&row("b"), Some(&refuse), None);
        assert!(matches!(refused, Ok(Err(()))));
        assert_eq!(synchronous(&s), 2, "FULL after a refused block");
    }

    #[test]
    fn a_row_past_the_project_limit_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.create_instance::<()>(&row("a"), None, Some(2))
            .unwrap()
            .unwrap();
        s.create_instance::<()>(&row("b"), None, Some(2))
            .unwrap()
            .unwrap();
        let full = s.create_instance::<()>(&row("c"), None, Some(2));
        assert!(
            matches!(&full, Err(StoreError::Full { project, limit: 2 }) if project == "default"),
            "{full:?}"
        );
        let names: Vec<String> = s
            .instances("default")
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        // Without a limit (or a higher one) it is recorded.
        s.create_instance::<()>(&row("c"), None, Some(3))
            .unwrap()
            .unwrap();

        // A move into a project at its limit is not made either.
        let p2 = crate::ProjectRow {
            name: "p2".into(),
            description: String::new(),
            config: "{}".into(),
        };
        s.create_project(&p2, true).unwrap();
        let moved = s.move_instance_project::<()>("default", "a", "p2", "a", "{}", None, Some(0));
        assert!(
            matches!(&moved, Err(StoreError::Full { project, limit: 0 }) if project == "p2"),
            "{moved:?}"
        );
        assert!(s.instances("p2").unwrap().is_empty());
        assert_eq!(s.instances("default").unwrap().len(), 3);
        s.move_instance_project::<()>("default", "a", "p2", "a", "{}", None, Some(1))
            .unwrap()
            .unwrap();
    }

    #[test]
    fn blocks_are_allocated_in_the_creating_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        // A toy first-fit allocator over slots of 10 ids from 100.
        let next = |taken: &[TakenBlock]| -> Result<(u32, u32), String> {
            assert!(taken.iter().all(|t| t.project == "default"));
            let base = (0..)
                .map(|i| 100 + 10 * i)
                .find(|b| !taken.iter().any(|t| t.base == *b))
                .unwrap();
            Ok((base, 10))
        };
        assert_eq!(
            s.create_instance(&row("a"), Some(&next), None).unwrap(),
            Ok(Some((100, 10)))
        );
        assert_eq!(
            s.create_instance(&row("b"), Some(&next), None).unwrap(),
            Ok(Some((110, 10)))
        );
        assert_eq!(
            s.create_instance::<String>(&row("c"), None, None).unwrap(),
            Ok(None)
        );
        s.finish_create("default", "c", "{}", 4096, "fp", 7)
            .unwrap();
        assert_eq!(s.disk_usage("default").unwrap(), 4096);
        assert_eq!(s.instance("default", "c").unwrap().config, "{}");
        assert!(matches!(
            s.finish_create("default", "nope", "{}", 1, "fp", 7),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.create_instance(&row("a"), Some(&next), None),
            Err(StoreError::AlreadyExists { .. })
        ));
        // A refused allocation creates nothing.
        let refuse = |_: &[TakenBlock]| -> Result<(u32, u32), String> { Err("full".into()) };
        assert_eq!(
            s.create_instance(&row("d"), Some(&refuse), None).unwrap(),
            Err("full".to_string())
        );
        assert!(matches!(
            s.instance("default", "d"),
            Err(StoreError::NotFound { .. })
        ));
        // Deleting frees the block.
        s.delete_instance("default", "a").unwrap();
        assert_eq!(
            s.create_instance(&row("e"), Some(&next), None).unwrap(),
            Ok(Some((100, 10)))
        );
        assert_eq!(
            s.instances("default")
                .unwrap()
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["b", "c", "e"]
        );
        // Updating moves a block, or drops it; a refusal changes nothing; renaming keeps it.
        let config_for = |b: Option<(u32, u32)>| b.map_or("none".to_string(), |b| b.0.to_string());
        let remap = |allocate| Remap {
            allocate,
            config: &config_for,
        };
        let mut b = s.instance("default", "b").unwrap();
        b.config = "{\"x\":\"1\"}".into();
        assert_eq!(
            s.update_instance(&b, Some(remap(Some(&next)))).unwrap(),
            Ok(Some((110, 10))),
            "its own old block is free to it again"
        );
        assert_eq!(s.instance("default", "b").unwrap().config, "110");
        let mut again = b.clone();
        again.config = "{}".into();
        assert_eq!(
            s.update_instance(&again, Some(remap(Some(&refuse))))
                .unwrap(),
            Err("full".to_string())
        );
        assert_eq!(s.instance("default", "b").unwrap().config, "110");
        s.rename_instance("default", "b", "b2").unwrap();
        assert!(matches!(
            s.rename_instance("default", "b2", "c"),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(
            s.create_instance(&row("f"), Some(&next), None).unwrap(),
            Ok(Some((120, 10))),
            "b2 still holds 110"
        );
        let b2 = s.instance("default", "b2").unwrap();
        assert_eq!(s.update_instance(&b2, Some(remap(None))).unwrap(), Ok(None));
        assert_eq!(s.instance("default", "b2").unwrap().config, "none");
        // Without a remap, the row's own config is stored.
        let mut b3 = s.instance("default", "b2").unwrap();
        b3.config = "{}".into();
        assert_eq!(s.update_instance::<String>(&b3, None).unwrap(), Ok(None));
        assert_eq!(s.instance("default", "b2").unwrap().config, "{}");
        assert_eq!(
            s.create_instance(&row("g"), Some(&next), None).unwrap(),
            Ok(Some((110, 10)))
        );
    }
}
