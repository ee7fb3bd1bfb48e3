//! The `profiles` table, and the profile lists instances and snapshots carry. A profile lives
//! in one project; which projects' instances may name it (those without profiles of their own
//! use `default`'s) is the caller's rule, passed in as `users`: the projects whose instances
//! are checked or rewritten in the same transaction as the profile.

use crate::instances::{names_from, names_to};
use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRow {
    pub project: String,
    pub name: String,
    pub description: String,
    /// JSON object of strings.
    pub config: String,
    /// JSON object: devices by name, each an object of strings.
    pub devices: String,
}

const COLUMNS: &str = "project, name, description, config, devices";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProfileRow> {
    Ok(ProfileRow {
        project: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        config: r.get(3)?,
        devices: r.get(4)?,
    })
}

/// The instances (project, name) among `users`' that name profile `name`, by project and name.
fn users_of(
    tx: &Transaction<'_>,
    users: &[String],
    name: &str,
) -> Result<Vec<(String, String, Vec<String>)>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = tx.prepare(
        "SELECT name, profiles FROM instances WHERE project = ?1 AND EXISTS
            (SELECT 1 FROM json_each(instances.profiles) WHERE json_each.value = ?2)
         ORDER BY name",
    )?;
    for project in users {
        let rows = stmt.query_map(params![project, name], |r| {
            Ok((project.clone(), r.get(0)?, names_from(r.get(1)?)?))
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

fn exists(tx: &Transaction<'_>, project: &str, name: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM profiles WHERE project = ?1 AND name = ?2",
            params![project, name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

impl Store {
    /// A project's own profiles, by name.
    pub fn profiles(&self, project: &str) -> Result<Vec<ProfileRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM profiles WHERE project = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map(params![project], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn profile(&self, project: &str, name: &str) -> Result<ProfileRow, StoreError> {
        self.conn()?
            .query_row(
                &format!("SELECT {COLUMNS} FROM profiles WHERE project = ?1 AND name = ?2"),
                params![project, name],
                from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "profile" })
    }

    /// The instances of `users`' projects that use profile `name`: (project, instance).
    pub fn profile_users(
        &self,
        users: &[String],
        name: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        Ok(users_of(&tx, users, name)?
            .into_iter()
            .map(|(p, n, _)| (p, n))
            .collect())
    }

    pub fn create_profile(&self, row: &ProfileRow) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                &format!("INSERT INTO profiles ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![
                    row.project,
                    row.name,
                    row.description,
                    row.config,
                    row.devices
                ],
            )
            .map_err(conflict("profile"))?;
        Ok(())
    }

    /// Replace a profile's description, config and devices, unless one of `users`' instances
    /// started or stopped using it since the caller checked them: `checked` is that list of
    /// (project, instance), and a different one is [`StoreError::Changed`], nothing written.
    pub fn update_profile(
        &self,
        row: &ProfileRow,
        users: &[String],
        checked: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let now: Vec<(String, String)> = users_of(&tx, users, &row.name)?
            .into_iter()
            .map(|(p, n, _)| (p, n))
            .collect();
        if now != checked {
            return Err(StoreError::Changed { kind: "profile" });
        }
        let n = tx.execute(
            "UPDATE profiles SET description = ?3, config = ?4, devices = ?5
             WHERE project = ?1 AND name = ?2",
            params![
                row.project,
                row.name,
                row.description,
                row.config,
                row.devices
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "profile" });
        }
        tx.commit()?;
        Ok(())
    }

    /// Rename a profile; the instances of `users`' projects that name it follow, in the same
    /// transaction (snapshots keep the name they were taken with, as in LXD).
    pub fn rename_profile(
        &self,
        project: &str,
        old: &str,
        new: &str,
        users: &[String],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if !exists(&tx, project, old)? {
            return Err(StoreError::NotFound { kind: "profile" });
        }
        if exists(&tx, project, new)? {
            return Err(StoreError::AlreadyExists { kind: "profile" });
        }
        tx.execute(
            "UPDATE profiles SET name = ?3 WHERE project = ?1 AND name = ?2",
            params![project, old, new],
        )?;
        for (p, instance, mut names) in users_of(&tx, users, old)? {
            for n in names.iter_mut().filter(|n| *n == old) {
                *n = new.to_owned();
            }
            tx.execute(
                "UPDATE instances SET profiles = ?3 WHERE project = ?1 AND name = ?2",
                params![p, instance, names_to(&names)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Delete a profile no instance of `users`' projects uses ([`StoreError::InUse`]).
    pub fn delete_profile(
        &self,
        project: &str,
        name: &str,
        users: &[String],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if !users_of(&tx, users, name)?.is_empty() {
            return Err(StoreError::InUse { kind: "profile" });
        }
        let n = tx.execute(
            "DELETE FROM profiles WHERE project = ?1 AND name = ?2",
            params![project, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "profile" });
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether every one of `names` is a profile of `project`.
    pub fn profiles_exist(&self, project: &str, names: &[String]) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        for n in names {
            if !exists(&tx, project, n)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceRow;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        (dir, s)
    }

    fn profile(name: &str) -> ProfileRow {
        ProfileRow {
            project: "default".into(),
            name: name.into(),
            description: String::new(),
            config: r#"{"limits.cpu":"1"}"#.into(),
            devices: "{}".into(),
        }
    }

    fn instance(project: &str, name: &str, profiles: &[&str]) -> InstanceRow {
        InstanceRow {
            project: project.into(),
            name: name.into(),
            architecture: "x86_64".into(),
            config: "{}".into(),
            description: String::new(),
            ephemeral: false,
            created_at: 1,
            profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
            devices: "{}".into(),
            pool: "default".into(),
        }
    }

    #[test]
    fn default_exists_from_the_first_start() {
        let (_d, s) = store();
        let all = s.profiles("default").unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "default");
        assert_eq!(all[0].description, "Default LXD profile");
    }

    #[test]
    fn renames_follow_into_instances_and_deletes_refuse_while_used() {
        let (_d, s) = store();
        let users = vec!["default".to_owned(), "p1".to_owned()];
        s.create_profile(&profile("a")).unwrap();
        s.create_profile(&profile("b")).unwrap();
        assert!(matches!(
            s.create_profile(&profile("a")),
            Err(StoreError::AlreadyExists { .. })
        ));
        s.create_instance::<()>(
            &instance("default", "c1", &["default", "a", "b"]),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        s.create_instance::<()>(&instance("p1", "c2", &["a"]), None, None)
            .unwrap()
            .unwrap();
        // Another project's instances are not this rule's unless named.
        s.create_instance::<()>(&instance("p2", "c3", &["a"]), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.profile_users(&users, "a").unwrap(),
            vec![
                ("default".to_owned(), "c1".to_owned()),
                ("p1".to_owned(), "c2".to_owned())
            ]
        );
        assert!(matches!(
            s.rename_profile("default", "a", "b", &users),
            Err(StoreError::AlreadyExists { .. })
        ));
        s.rename_profile("default", "a", "z", &users).unwrap();
        assert_eq!(
            s.instance("default", "c1").unwrap().profiles,
            ["default", "z", "b"]
        );
        assert_eq!(s.instance("p1", "c2").unwrap().profiles, ["z"]);
        assert_eq!(s.instance("p2", "c3").unwrap().profiles, ["a"]);
        assert!(matches!(
            s.delete_profile("default", "z", &users),
            Err(StoreError::InUse { .. })
        ));
        assert!(s
            .profiles_exist("default", &["z".into(), "b".into()])
            .unwrap());
        assert!(!s.profiles_exist("default", &["a".into()]).unwrap());
        s.delete_instance("default", "c1").unwrap();
        s.delete_instance("p1", "c2").unwrap();
        s.delete_profile("default", "z", &users).unwrap();
        assert!(matches!(
            s.profile("default", "z"),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn an_update_checked_against_other_users_is_refused() {
        let (_d, s) = store();
        let users = vec!["default".to_owned()];
        s.create_profile(&profile("a")).unwrap();
        let checked = s.profile_users(&users, "a").unwrap();
        s.create_instance::<()>(&instance("default", "c1", &["a"]), None, None)
            .unwrap()
            .unwrap();
        let mut row = profile("a");
        row.config = r#"{"limits.cpu":"2"}"#.into();
        assert!(matches!(
            s.update_profile(&row, &users, &checked),
            Err(StoreError::Changed { .. })
        ));
        let checked = s.profile_users(&users, "a").unwrap();
        s.update_profile(&row, &users, &checked).unwrap();
        assert_eq!(s.profile("default", "a").unwrap().config, row.config);
    }
}
