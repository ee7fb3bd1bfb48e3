//! The trust store (`certificates`, `certificate_projects`) and certificate add tokens (`tokens`).

use crate::{Store, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    pub fingerprint: String,
    pub name: String,
    pub kind: String,
    pub restricted: bool,
    pub projects: Vec<String>,
    pub certificate_pem: String,
    /// Validity window of the certificate, Unix seconds, so the trust cache loads without parsing.
    pub not_before: i64,
    pub not_after: i64,
    pub created_at: i64,
}

/// A pending add token. Only SHA-256 of its secret is kept, so a database leak does not leak
/// usable tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub secret_sha256: [u8; 32],
    pub name: String,
    pub restricted: bool,
    pub projects: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The columns `cert_from_row` reads, in its order.
const CERT_COLUMNS: &str =
    "fingerprint, name, type, restricted, certificate, not_before, not_after, created_at";

/// A `certificates` row (projects are filled in separately).
fn cert_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertificateRow> {
    Ok(CertificateRow {
        fingerprint: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        restricted: r.get(3)?,
        projects: Vec::new(),
        certificate_pem: r.get(4)?,
        not_before: r.get(5)?,
        not_after: r.get(6)?,
        created_at: r.get(7)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn insert_cert(tx: &Transaction<'_>, row: &CertificateRow) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certificates (fingerprint, name, type, restricted, certificate, not_before, not_after, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            row.fingerprint,
            row.name,
            row.kind,
            row.restricted,
            row.certificate_pem,
            row.not_before,
            row.not_after,
            row.created_at
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::AlreadyExists { kind: "certificate" }
        } else {
            e.into()
        }
    })?;
    for p in &row.projects {
        tx.execute(
            "INSERT OR IGNORE INTO certificate_projects (fingerprint, project) VALUES (?1, ?2)",
            params![row.fingerprint, p],
        )?;
    }
    Ok(())
}

/// Fill in the project lists of `rows` (sorted by fingerprint).
fn fill_projects(
    conn: &rusqlite::Connection,
    rows: &mut [CertificateRow],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT fingerprint, project FROM certificate_projects ORDER BY fingerprint, project",
    )?;
    let pairs = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for pair in pairs {
        let (fp, project) = pair?;
        if let Ok(i) = rows.binary_search_by(|row| row.fingerprint.as_str().cmp(&fp)) {
            rows[i].projects.push(project);
        }
    }
    Ok(())
}

impl Store {
    pub fn certificates(&self) -> Result<Vec<CertificateRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {CERT_COLUMNS} FROM certificates ORDER BY fingerprint"
        ))?;
        let mut rows: Vec<CertificateRow> = stmt
            .query_map([], cert_from_row)?
            .collect::<Result<_, _>>()?;
        fill_projects(&conn, &mut rows)?;
        Ok(rows)
    }

    /// Hand every entry to `f`, without its PEM (at 100,000 entries some 80 MB read only to be
    /// dropped), one row at a time: the trust cache is built without a copy of the table.
    pub fn each_trust_entry(&self, mut f: impl FnMut(CertificateRow)) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let mut projects: std::collections::HashMap<String, Vec<String>> = Default::default();
        let mut stmt = conn.prepare(
            "SELECT fingerprint, project FROM certificate_projects ORDER BY fingerprint, project",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            projects.entry(r.get(0)?).or_default().push(r.get(1)?);
        }
        let mut stmt = conn.prepare(
            "SELECT fingerprint, name, type, restricted, '', not_before, not_after, created_at
             FROM certificates",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let mut row = cert_from_row(r)?;
            row.projects = projects.remove(&row.fingerprint).unwrap_or_default();
            f(row);
        }
        Ok(())
    }

    /// Entries whose fingerprint starts with `prefix` (lowercase hex), at most `limit` of them.
    /// A range scan on the primary key: no `LIKE`, so no character in the prefix is a wildcard.
    pub fn certificates_by_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<CertificateRow>, StoreError> {
        let fps: Vec<String> = {
            let conn = self.conn()?;
            let mut stmt = conn.prepare(
                "SELECT fingerprint FROM certificates WHERE fingerprint >= ?1 AND fingerprint < ?2
                 ORDER BY fingerprint LIMIT ?3",
            )?;
            // Every fingerprint with the prefix sorts below prefix + 'g' ('g' follows the hex digits).
            let upper = format!("{prefix}g");
            let rows = stmt.query_map(params![prefix, upper, limit as i64], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        fps.iter().map(|fp| self.certificate(fp)).collect()
    }

    pub fn certificate(&self, fingerprint: &str) -> Result<CertificateRow, StoreError> {
        let conn = self.conn()?;
        let mut row = conn
            .query_row(
                &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE fingerprint = ?1"),
                params![fingerprint],
                cert_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound {
                kind: "certificate",
            })?;
        let mut stmt = conn.prepare(
            "SELECT project FROM certificate_projects WHERE fingerprint = ?1 ORDER BY project",
        )?;
        row.projects = stmt
            .query_map(params![fingerprint], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(row)
    }

    pub fn insert_certificate(&self, row: &CertificateRow) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        insert_cert(&tx, row)?;
        tx.commit()?;
        Ok(())
    }

    /// Insert many entries in one transaction (benchmarks seed large trust stores with it).
    pub fn insert_certificates(&self, rows: &[CertificateRow]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        for row in rows {
            insert_cert(&tx, row)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replace the entry `old_fingerprint` with `row` (whose fingerprint may differ, on renewal).
    pub fn replace_certificate(
        &self,
        old_fingerprint: &str,
        row: &CertificateRow,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM certificates WHERE fingerprint = ?1",
            params![old_fingerprint],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "certificate",
            });
        }
        insert_cert(&tx, row)?;
        // A renewed certificate keeps its grants.
        tx.execute(
            "UPDATE grants SET identity = ?2 WHERE identity_type = 'certificate' AND identity = ?1",
            params![old_fingerprint, row.fingerprint],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remove a certificate and every grant made to it (a certificate added again later starts
    /// with none).
    pub fn delete_certificate(&self, fingerprint: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM certificates WHERE fingerprint = ?1",
            params![fingerprint],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: "certificate",
            });
        }
        tx.execute(
            "DELETE FROM grants WHERE identity_type = 'certificate' AND identity = ?1",
            params![fingerprint],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn insert_token(&self, token: &TokenRow) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO tokens (id, secret_sha256, name, restricted, projects, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.id,
                &token.secret_sha256[..],
                token.name,
                token.restricted,
                token.projects.join("\n"),
                token.created_at,
                token.expires_at
            ],
        )?;
        Ok(())
    }

    /// Pending tokens, expired ones removed first.
    pub fn tokens(&self, now: i64) -> Result<Vec<TokenRow>, StoreError> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM tokens WHERE expires_at <= ?1", params![now])?;
        let mut stmt = conn.prepare(
            "SELECT id, secret_sha256, name, restricted, projects, created_at, expires_at FROM tokens
             ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], token_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_token(&self, id: &str) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute("DELETE FROM tokens WHERE id = ?1", params![id])?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "token" });
        }
        Ok(())
    }

    /// Redeem the token whose secret hashes to `secret_sha256`: in one transaction, check it,
    /// consume it and add the certificate `make_row` builds from it. A token can therefore be used
    /// once only, even by two clients racing. An expired token is consumed and refused.
    pub fn redeem_token(
        &self,
        secret_sha256: &[u8; 32],
        now: i64,
        make_row: impl FnOnce(&TokenRow) -> CertificateRow,
    ) -> Result<(TokenRow, CertificateRow), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let token = tx
            .query_row(
                "SELECT id, secret_sha256, name, restricted, projects, created_at, expires_at FROM tokens
                 WHERE secret_sha256 = ?1",
                params![&secret_sha256[..]],
                token_from_row,
            )
            .optional()?
            .ok_or(StoreError::NotFound { kind: "token" })?;
        tx.execute("DELETE FROM tokens WHERE id = ?1", params![token.id])?;
        if token.expires_at <= now {
            tx.commit()?;
            return Err(StoreError::Expired { kind: "token" });
        }
        let row = make_row(&token);
        insert_cert(&tx, &row)?;
        tx.commit()?;
        Ok((token, row))
    }
}

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let hash: Vec<u8> = r.get(1)?;
    let projects: String = r.get(4)?;
    Ok(TokenRow {
        id: r.get(0)?,
        secret_sha256: hash.try_into().unwrap_or([0; 32]),
        name: r.get(2)?,
        restricted: r.get(3)?,
        projects: projects
            .split('\n')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fp: char, name: &str) -> CertificateRow {
        CertificateRow {
            fingerprint: fp.to_string().repeat(64),
            name: name.into(),
            kind: "client".into(),
            restricted: true,
            projects: vec!["p2".into(), "p1".into()],
            certificate_pem: "PEM".into(),
            not_before: 0,
            not_after: 10,
            created_at: 1,
        }
    }

    fn token(id: &str, secret: u8, expires_at: i64) -> TokenRow {
        TokenRow {
            id: id.into(),
            secret_sha256: [secret; 32],
            name: "new".into(),
            restricted: false,
            projects: vec![],
            created_at: 0,
            expires_at,
        }
    }

    #[test]
    fn certificates_crud() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.insert_certificate(&row('a', "one")).unwrap();
        assert!(matches!(
            s.insert_certificate(&row('a', "again")),
            Err(StoreError::AlreadyExists { .. })
        ));
        s.insert_certificate(&row('b', "two")).unwrap();
        let all = s.certificates().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].projects, vec!["p1", "p2"]);
        s.replace_certificate(&"a".repeat(64), &row('c', "renewed"))
            .unwrap();
        s.delete_certificate(&"b".repeat(64)).unwrap();
        assert!(matches!(
            s.delete_certificate(&"b".repeat(64)),
            Err(StoreError::NotFound { .. })
        ));
        let all = s.certificates().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "renewed");
        assert_eq!(s.certificate(&"c".repeat(64)).unwrap(), all[0]);
    }

    #[test]
    fn prefix_lookup_is_exact_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        for (fp, name) in [("ab", "one"), ("ac", "two"), ("ff", "three")] {
            let mut r = row('0', name);
            r.fingerprint = format!("{fp}{}", "0".repeat(62));
            s.insert_certificate(&r).unwrap();
        }
        let names = |p: &str| -> Vec<String> {
            s.certificates_by_prefix(p, 2)
                .unwrap()
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names("ab"), ["one"]);
        assert_eq!(names("a"), ["one", "two"]);
        assert_eq!(names(""), ["one", "two"], "bounded by the limit");
        assert_eq!(names("f"), ["three"]);
        assert!(names("b").is_empty());
        assert!(names("%").is_empty(), "no wildcards");
        assert!(names("_").is_empty(), "no wildcards");
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.insert_token(&token("t1", 1, 100)).unwrap();
        s.insert_token(&token("t2", 2, 10)).unwrap();
        let (t, r) = s.redeem_token(&[1; 32], 50, |t| row('d', &t.name)).unwrap();
        assert_eq!((t.id.as_str(), r.name.as_str()), ("t1", "new"));
        assert!(matches!(
            s.redeem_token(&[1; 32], 50, |_| row('e', "x")),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.redeem_token(&[2; 32], 50, |_| row('e', "x")),
            Err(StoreError::Expired { .. })
        ));
        assert!(matches!(
            s.redeem_token(&[2; 32], 50, |_| row('e', "x")),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(s.certificates().unwrap().len(), 1);
    }
}
