//! Projects (`projects`) and role grants (`grants`). A project can be renamed or deleted, or
//! have its profiles turned on or off, only while it holds no instances, no images and no
//! profile but `default`; what names it elsewhere (certificates' project lists, pending
//! tokens, project-scoped grants, its profiles) follows in the same transaction.

use crate::{conflict, Store, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub name: String,
    pub description: String,
    /// A JSON object of strings.
    pub config: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: i64,
    /// `certificate`, `candid-user` or `candid-group`.
    pub identity_type: String,
    pub identity: String,
    pub role: String,
    /// `project`, `all-projects` or `server`.
    pub scope: String,
    /// The project of a `project` grant, else empty.
    pub project: String,
}

fn project_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProjectRow> {
    Ok(ProjectRow {
        name: r.get(0)?,
        description: r.get(1)?,
        config: r.get(2)?,
    })
}

fn grant_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRow> {
    Ok(GrantRow {
        id: r.get(0)?,
        identity_type: r.get(1)?,
        identity: r.get(2)?,
        role: r.get(3)?,
        scope: r.get(4)?,
        project: r.get(5)?,
    })
}

/// The `default` profile a project with profiles of its own starts with.
fn insert_default_profile(tx: &Transaction<'_>, project: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO profiles (project, name, description, config, devices)
         VALUES (?1, 'default', 'Default LXD profile for project ' || ?1, '{}', '{}')",
        params![project],
    )?;
    Ok(())
}

/// Refuse unless `name` exists and holds no instances, no images and no profile but `default`.
fn require_empty(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    let exists: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM projects WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::NotFound { kind: "project" });
    }
    let used: i64 = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM instances WHERE project = ?1)
              + (SELECT COUNT(*) FROM images WHERE project = ?1)
              + (SELECT COUNT(*) FROM profiles WHERE project = ?1 AND name <> 'default')
              + (SELECT COUNT(*) FROM storage_volumes WHERE project = ?1)",
        params![name],
        |r| r.get(0),
    )?;
    if used > 0 {
        return Err(StoreError::NotEmpty { kind: "project" });
    }
    Ok(())
}

/// Rewrite the newline-separated project lists of pending tokens: `old` becomes `new`, or is
/// dropped when `new` is `None`.
fn retarget_tokens(tx: &Transaction<'_>, old: &str, new: Option<&str>) -> Result<(), StoreError> {
    let tokens: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT id, projects FROM tokens")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, projects) in tokens {
        if !projects.split('\n').any(|p| p == old) {
            continue;
        }
        let list: Vec<&str> = projects
            .split('\n')
            .filter_map(|p| if p == old { new } else { Some(p) })
            .collect();
        tx.execute(
            "UPDATE tokens SET projects = ?2 WHERE id = ?1",
            params![id, list.join("\n")],
        )?;
    }
    Ok(())
}

impl Store {
    pub fn projects(&self) -> Result<Vec<ProjectRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT name, description, config FROM projects ORDER BY name")?;
        let rows = stmt.query_map([], project_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Create a project, with its own `default` profile when `profiles` (its
    /// `features.profiles`) says it has profiles of its own.
    pub fn create_project(&self, row: &ProjectRow, profiles: bool) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO projects (name, description, config) VALUES (?1, ?2, ?3)",
            params![row.name, row.description, row.config],
        )
        .map_err(conflict("project"))?;
        if profiles {
            insert_default_profile(&tx, &row.name)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replace a project's description and config. `profiles` is `Some` when its
    /// `features.profiles` changes: then the project must be empty, and it gains its own
    /// `default` profile (`true`) or loses it (`false`), in the same transaction.
    pub fn update_project(
        &self,
        row: &ProjectRow,
        profiles: Option<bool>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if profiles.is_some() {
            require_empty(&tx, &row.name)?;
        }
        let n = tx.execute(
            "UPDATE projects SET description = ?2, config = ?3 WHERE name = ?1",
            params![row.name, row.description, row.config],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "project" });
        }
        match profiles {
            Some(true) => insert_default_profile(&tx, &row.name)?,
            Some(false) => {
                tx.execute("DELETE FROM profiles WHERE project = ?1", params![row.name])?;
            }
            None => {}
        }
        tx.commit()?;
        Ok(())
    }

    /// Rename an empty project; certificates, tokens and grants that name it follow.
    pub fn rename_project(&self, old: &str, new: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        require_empty(&tx, old)?;
        tx.execute(
            "UPDATE projects SET name = ?2 WHERE name = ?1",
            params![old, new],
        )
        .map_err(conflict("project"))?;
        tx.execute(
            "UPDATE certificate_projects SET project = ?2 WHERE project = ?1",
            params![old, new],
        )?;
        tx.execute(
            "UPDATE grants SET project = ?2 WHERE scope = 'project' AND project = ?1",
            params![old, new],
        )?;
        tx.execute(
            "UPDATE profiles SET project = ?2,
                description = CASE WHEN description = 'Default LXD profile for project ' || ?1
                    THEN 'Default LXD profile for project ' || ?2 ELSE description END
             WHERE project = ?1",
            params![old, new],
        )?;
        retarget_tokens(&tx, old, Some(new))?;
        tx.commit()?;
        Ok(())
    }

    /// Delete an empty project; it is dropped from certificates and tokens, and its grants go.
    pub fn delete_project(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        require_empty(&tx, name)?;
        tx.execute("DELETE FROM projects WHERE name = ?1", params![name])?;
        tx.execute(
            "DELETE FROM certificate_projects WHERE project = ?1",
            params![name],
        )?;
        tx.execute(
            "DELETE FROM grants WHERE scope = 'project' AND project = ?1",
            params![name],
        )?;
        tx.execute("DELETE FROM profiles WHERE project = ?1", params![name])?;
        retarget_tokens(&tx, name, None)?;
        tx.commit()?;
        Ok(())
    }

    pub fn grants(&self) -> Result<Vec<GrantRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, identity_type, identity, role, scope, project FROM grants ORDER BY id",
        )?;
        let rows = stmt.query_map([], grant_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Record a grant (its `id` is ignored) and return it with its new id. A grant on a project
    /// must name an existing one, checked in the same transaction.
    pub fn insert_grant(&self, row: &GrantRow) -> Result<GrantRow, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if row.scope == "project" {
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM projects WHERE name = ?1",
                    params![row.project],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::NotFound { kind: "project" });
            }
        }
        tx.execute(
            "INSERT INTO grants (identity_type, identity, role, scope, project) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![row.identity_type, row.identity, row.role, row.scope, row.project],
        )
        .map_err(conflict("grant"))?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(GrantRow { id, ..row.clone() })
    }

    pub fn delete_grant(&self, id: i64) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute("DELETE FROM grants WHERE id = ?1", params![id])?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "grant" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateRow, ImageRow, TokenRow};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        (dir, s)
    }

    fn project(name: &str) -> ProjectRow {
        ProjectRow {
            name: name.into(),
            description: String::new(),
            config: "{}".into(),
        }
    }

    fn grant(scope: &str, project: &str) -> GrantRow {
        GrantRow {
            id: 0,
            identity_type: "certificate".into(),
            identity: "a".repeat(64),
            role: "user".into(),
            scope: scope.into(),
            project: project.into(),
        }
    }

    #[test]
    fn default_exists_and_names_are_unique() {
        let (_d, s) = store();
        assert_eq!(s.projects().unwrap()[0].name, "default");
        s.create_project(&project("p1"), true).unwrap();
        assert_eq!(s.profiles("p1").unwrap()[0].name, "default");
        assert!(matches!(
            s.create_project(&project("p1"), true),
            Err(StoreError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn rename_and_delete_carry_references_and_refuse_non_empty() {
        let (_d, s) = store();
        s.create_project(&project("p1"), true).unwrap();
        let fp = "a".repeat(64);
        s.insert_certificate(&CertificateRow {
            fingerprint: fp.clone(),
            name: "c".into(),
            kind: "client".into(),
            restricted: true,
            projects: vec!["p1".into(), "default".into()],
            certificate_pem: String::new(),
            not_before: 0,
            not_after: 1,
            created_at: 0,
        })
        .unwrap();
        s.insert_token(&TokenRow {
            id: "t".into(),
            secret_sha256: [0; 32],
            name: "n".into(),
            restricted: true,
            projects: vec!["p1".into(), "default".into()],
            created_at: 0,
            expires_at: i64::MAX,
        })
        .unwrap();
        let g = s.insert_grant(&grant("project", "p1")).unwrap();
        assert!(g.id > 0);
        assert!(matches!(
            s.insert_grant(&grant("project", "p1")),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(matches!(
            s.insert_grant(&grant("project", "nope")),
            Err(StoreError::NotFound { .. })
        ));
        s.rename_project("p1", "p2").unwrap();
        let profiles = s.profiles("p2").unwrap();
        assert_eq!(
            profiles[0].description,
            "Default LXD profile for project p2"
        );
        assert!(s.profiles("p1").unwrap().is_empty());
        assert_eq!(s.certificate(&fp).unwrap().projects, vec!["default", "p2"]);
        assert_eq!(s.grants().unwrap()[0].project, "p2");
        assert_eq!(s.tokens(0).unwrap()[0].projects, vec!["p2", "default"]);
        // Not empty: refused, nothing changed.
        s.insert_image(&ImageRow {
            project: "p2".into(),
            fingerprint: "f".repeat(64),
            filename: String::new(),
            size: 0,
            architecture: "x86_64".into(),
            properties: "{}".into(),
            public: false,
            created_at: 0,
            uploaded_at: 0,
            unpacked_size: 0,
            cache: Default::default(),
        })
        .unwrap();
        assert!(matches!(
            s.delete_project("p2"),
            Err(StoreError::NotEmpty { .. })
        ));
        assert!(matches!(
            s.rename_project("p2", "p3"),
            Err(StoreError::NotEmpty { .. })
        ));
        s.delete_image("p2", &"f".repeat(64)).unwrap();
        // A profile other than default keeps it too.
        s.create_profile(&crate::ProfileRow {
            project: "p2".into(),
            name: "extra".into(),
            description: String::new(),
            config: "{}".into(),
            devices: "{}".into(),
        })
        .unwrap();
        assert!(matches!(
            s.delete_project("p2"),
            Err(StoreError::NotEmpty { .. })
        ));
        assert!(matches!(
            s.update_project(&project("p2"), Some(false)),
            Err(StoreError::NotEmpty { .. })
        ));
        s.delete_profile("p2", "extra", &["p2".into()]).unwrap();
        s.update_project(&project("p2"), Some(false)).unwrap();
        assert!(s.profiles("p2").unwrap().is_empty());
        s.update_project(&project("p2"), Some(true)).unwrap();
        s.delete_project("p2").unwrap();
        assert!(s.profiles("p2").unwrap().is_empty());
        assert_eq!(s.certificate(&fp).unwrap().projects, vec!["default"]);
        assert!(s.grants().unwrap().is_empty());
        assert_eq!(s.tokens(0).unwrap()[0].projects, vec!["default"]);
        // Deleting a certificate removes its grants.
        s.insert_grant(&grant("server", "")).unwrap();
        s.delete_certificate(&fp).unwrap();
        assert!(s.grants().unwrap().is_empty());
    }
}
