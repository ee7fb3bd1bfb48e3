//! The `intents` table: what a multi-step operation is in the middle of (see migration 9).

use crate::{Store, StoreError};
use rusqlite::params;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRow {
    pub id: i64,
    /// A short name for logs (`instance-delete`, ...).
    pub kind: String,
    /// The operation's own description (JSON), for its recovery.
    pub detail: String,
    pub created_at: i64,
}

impl Store {
    /// Record that an operation is starting; returns the id to end it with.
    pub fn begin_intent(&self, kind: &str, detail: &str, now: i64) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO intents (kind, detail, created_at) VALUES (?1, ?2, ?3)",
            params![kind, detail, now],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Replace an intent's detail (a step learned something recovery needs).
    pub fn update_intent(&self, id: i64, detail: &str) -> Result<(), StoreError> {
        let n = self.conn()?.execute(
            "UPDATE intents SET detail = ?2 WHERE id = ?1",
            params![id, detail],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound { kind: "intent" });
        }
        Ok(())
    }

    /// Every intent still recorded, oldest first.
    pub fn intents(&self) -> Result<Vec<IntentRow>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id, kind, detail, created_at FROM intents ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(IntentRow {
                id: r.get(0)?,
                kind: r.get(1)?,
                detail: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The operation is over (done or undone). Ending one already ended is not an error:
    /// recovery may end what a killed daemon had just finished.
    pub fn end_intent(&self, id: i64) -> Result<(), StoreError> {
        self.conn()?
            .execute("DELETE FROM intents WHERE id = ?1", params![id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_are_listed_until_ended() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let a = s.begin_intent("instance-delete", r#"{"a":1}"#, 10).unwrap();
        let b = s.begin_intent("instance-rename", r#"{"b":2}"#, 11).unwrap();
        s.update_intent(b, r#"{"b":3}"#).unwrap();
        let all = s.intents().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].id, all[0].kind.as_str()), (a, "instance-delete"));
        assert_eq!(all[1].detail, r#"{"b":3}"#);
        s.end_intent(a).unwrap();
        s.end_intent(a).unwrap();
        assert_eq!(s.intents().unwrap().len(), 1);
        assert!(matches!(
            s.update_intent(a, "{}"),
            Err(StoreError::NotFound { .. })
        ));
    }
}
