//! The CRM ledger, kept in the state store: which CRM record stands for which contact and
//! which session, and the transcript lines of each session.
//!
//! Neither HubSpot nor BottleCRM offers an idempotency key, so idempotency is ours: a contact
//! key (E.164 phone or email) maps to one CRM contact id; a session key maps to its CRM
//! activity ids (one per part) and the hash of the body last written. A session is recorded
//! `pending` before its activity is created and `done` once the CRM answered with ids, so a
//! crash in between is resolved by looking the session key up in the CRM, never by creating
//! it again.

use rusqlite::{OptionalExtension, params};

use super::session::{Known, Line};
use crate::state::{StateError, StateStore, sql};

/// The ledger's tables (in the state store's database; created by [`ensure_schema`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS crm_contacts(
  crm TEXT NOT NULL,
  contact_key TEXT NOT NULL,
  crm_id TEXT NOT NULL,
  user TEXT NOT NULL,
  PRIMARY KEY(crm, contact_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS crm_sessions(
  crm TEXT NOT NULL,
  session_key TEXT NOT NULL,
  user TEXT NOT NULL,
  start_ms INTEGER NOT NULL,
  end_ms INTEGER NOT NULL,
  messages INTEGER NOT NULL,
  body_hash TEXT NOT NULL,
  crm_ids TEXT NOT NULL,
  status TEXT NOT NULL,
  PRIMARY KEY(crm, session_key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS crm_sessions_by_user ON crm_sessions(crm, user, start_ms);
CREATE TABLE IF NOT EXISTS crm_lines(
  crm TEXT NOT NULL,
  session_key TEXT NOT NULL,
  message_id TEXT NOT NULL,
  sent_at_ms INTEGER NOT NULL,
  line TEXT NOT NULL,
  position INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(crm, session_key, message_id)) WITHOUT ROWID;
";

/// Creates the ledger's tables if missing.
///
/// # Errors
/// SQLite errors.
pub fn ensure_schema(st: &mut StateStore) -> Result<(), StateError> {
    let path = st.path().to_owned();
    let conn = st.connection();
    conn.execute_batch(SCHEMA).map_err(sql(&path))?;
    // Ledgers written before lines kept the API's order gain the column (old lines: 0).
    let has_position: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('crm_lines') WHERE name='position'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(sql(&path))?
        > 0;
    if !has_position {
        conn.execute_batch("ALTER TABLE crm_lines ADD COLUMN position INTEGER NOT NULL DEFAULT 0")
            .map_err(sql(&path))?;
    }
    Ok(())
}

/// A session as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session key.
    pub key: String,
    /// Channel-user id.
    pub user: String,
    /// First message, ms since epoch UTC.
    pub start_ms: i64,
    /// Last message.
    pub end_ms: i64,
    /// Messages in it.
    pub messages: u64,
    /// xxh3 of the bodies last written (hex).
    pub body_hash: String,
    /// CRM activity ids, one per part (empty while pending).
    pub crm_ids: Vec<String>,
    /// `pending` (create sent, answer unknown) or `done`.
    pub status: String,
}

/// The columns [`record`] reads, in its order.
const SELECT_SESSIONS: &str = "SELECT session_key, user, start_ms, end_ms, messages, body_hash, crm_ids, status FROM crm_sessions";

/// The ledger of one CRM (`crm` = e.g. `hubspot:https://api.hubapi.com`).
pub struct Ledger<'a> {
    st: &'a mut StateStore,
    crm: String,
}

impl<'a> Ledger<'a> {
    /// The ledger of `crm` in `st`.
    pub fn new(st: &'a mut StateStore, crm: &str) -> Self {
        Ledger {
            st,
            crm: crm.to_owned(),
        }
    }

    /// The CRM id of a contact key, if known.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn contact(&mut self, key: &str) -> Result<Option<String>, StateError> {
        let crm = self.crm.clone();
        let path = self.st.path().to_owned();
        self.st
            .connection()
            .query_row(
                "SELECT crm_id FROM crm_contacts WHERE crm=?1 AND contact_key=?2",
                params![crm, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(&path))
    }

    /// Records contacts `(contact key, crm id, user)`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_contacts(&mut self, rows: &[(String, String, String)]) -> Result<(), StateError> {
        let crm = self.crm.clone();
        let path = self.st.path().to_owned();
        let e = sql(&path);
        let tx = self.st.connection().transaction().map_err(e)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO crm_contacts(crm, contact_key, crm_id, user) VALUES(?1, ?2, ?3, ?4)
                     ON CONFLICT(crm, contact_key) DO UPDATE SET crm_id=excluded.crm_id, user=excluded.user",
                )
                .map_err(e)?;
            for (k, id, u) in rows {
                ins.execute(params![crm, k, id, u]).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// The user's sessions whose span, widened by `gap_ms`, meets `[from_ms, to_ms]`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sessions_near(
        &mut self,
        user: &str,
        from_ms: i64,
        to_ms: i64,
        gap_ms: i64,
    ) -> Result<Vec<SessionRecord>, StateError> {
        let crm = self.crm.clone();
        let path = self.st.path().to_owned();
        let e = sql(&path);
        let conn = self.st.connection();
        let mut st = conn
            .prepare_cached(&format!(
                "{SELECT_SESSIONS} WHERE crm=?1 AND user=?2 AND start_ms <= ?4 + ?5 AND end_ms >= ?3 - ?5 ORDER BY start_ms"
            ))
            .map_err(e)?;
        let rows = st
            .query_map(params![crm, user, from_ms, to_ms, gap_ms], record)
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// Sessions left `pending` by an interrupted run.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pending(&mut self) -> Result<Vec<SessionRecord>, StateError> {
        let crm = self.crm.clone();
        let path = self.st.path().to_owned();
        let e = sql(&path);
        let conn = self.st.connection();
        let mut st = conn
            .prepare_cached(&format!(
                "{SELECT_SESSIONS} WHERE crm=?1 AND status='pending' ORDER BY user, start_ms"
            ))
            .map_err(e)?;
        let rows = st.query_map(params![crm], record).map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// A session's lines, by time.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn lines(&mut self, key: &str) -> Result<Vec<Line>, StateError> {
        let crm = self.crm.clone();
        let path = self.st.path().to_owned();
        let e = sql(&path);
        let conn = self.st.connection();
        let mut st = conn
            .prepare_cached(
                "SELECT message_id, sent_at_ms, line, position FROM crm_lines WHERE crm=?1 AND session_key=?2 ORDER BY sent_at_ms, position, message_id",
            )
            .map_err(e)?;
        let rows = st
            .query_map(params![crm, key], |r| {
                Ok(Line {
                    message_id: r.get(0)?,
                    sent_at_ms: r.get(1)?,
                    text: r.get(2)?,
                    position: r.get(3)?,
                })
            })
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// Saves sessions and their new lines in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn save(&mut self, sessions: &[(SessionRecord, Vec<Line>)]) -> Result<(), StateError> {
        let crm = self.crm.clone();
        let path = self.st.path().to_owned();
        let e = sql(&path);
        let tx = self.st.connection().transaction().map_err(e)?;
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO crm_sessions(crm, session_key, user, start_ms, end_ms, messages, body_hash, crm_ids, status)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT(crm, session_key) DO UPDATE SET start_ms=excluded.start_ms, end_ms=excluded.end_ms,
                       messages=excluded.messages, body_hash=excluded.body_hash, crm_ids=excluded.crm_ids, status=excluded.status",
                )
                .map_err(e)?;
            let mut line = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO crm_lines(crm, session_key, message_id, sent_at_ms, line, position) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(e)?;
            for (s, lines) in sessions {
                up.execute(params![
                    crm,
                    s.key,
                    s.user,
                    s.start_ms,
                    s.end_ms,
                    s.messages as i64,
                    s.body_hash,
                    serde_json::to_string(&s.crm_ids).unwrap_or_default(),
                    s.status
                ])
                .map_err(e)?;
                for l in lines {
                    line.execute(params![
                        crm,
                        s.key,
                        l.message_id,
                        l.sent_at_ms,
                        l.text,
                        l.position
                    ])
                    .map_err(e)?;
                }
            }
        }
        tx.commit().map_err(e)
    }

    /// Counts of the ledger: (contacts, sessions).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn counts(&mut self) -> Result<(u64, u64), StateError> {
        let crm = self.crm.clone();
        let path = self.st.path().to_owned();
        let conn = self.st.connection();
        let c: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM crm_contacts WHERE crm=?1",
                [&crm],
                |r| r.get(0),
            )
            .map_err(sql(&path))?;
        let s: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM crm_sessions WHERE crm=?1",
                [&crm],
                |r| r.get(0),
            )
            .map_err(sql(&path))?;
        Ok((c as u64, s as u64))
    }
}

impl SessionRecord {
    /// Its span, for [`super::session::assign`].
    pub fn known(&self) -> Known {
        Known {
            key: self.key.clone(),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
        }
    }
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let ids: String = r.get(6)?;
    Ok(SessionRecord {
        key: r.get(0)?,
        user: r.get(1)?,
        start_ms: r.get(2)?,
        end_ms: r.get(3)?,
        messages: r.get::<_, i64>(4)? as u64,
        body_hash: r.get(5)?,
        crm_ids: serde_json::from_str(&ids).unwrap_or_default(),
        status: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_and_sessions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = StateStore::open(dir.path()).unwrap();
        ensure_schema(&mut st).unwrap();
        let mut l = Ledger::new(&mut st, "hubspot:x");
        assert_eq!(l.contact("+91").unwrap(), None);
        l.set_contacts(&[("+91".into(), "101".into(), "91".into())])
            .unwrap();
        assert_eq!(l.contact("+91").unwrap().as_deref(), Some("101"));
        let rec = SessionRecord {
            key: "k1".into(),
            user: "91".into(),
            start_ms: 1000,
            end_ms: 5000,
            messages: 2,
            body_hash: "h".into(),
            crm_ids: vec!["9".into()],
            status: "done".into(),
        };
        let lines = vec![
            Line {
                message_id: "b".into(),
                sent_at_ms: 5000,
                position: 0,
                text: "Bot: x".into(),
            },
            Line {
                message_id: "a".into(),
                sent_at_ms: 1000,
                position: 0,
                text: "Customer: y".into(),
            },
        ];
        l.save(&[(rec.clone(), lines)]).unwrap();
        assert_eq!(
            l.sessions_near("91", 6000, 7000, 1000).unwrap(),
            vec![rec.clone()]
        );
        assert!(l.sessions_near("91", 7000, 8000, 1000).unwrap().is_empty());
        assert_eq!(l.lines("k1").unwrap()[0].message_id, "a");
        assert_eq!(l.counts().unwrap(), (1, 1));
        assert!(
            Ledger::new(&mut st, "bottlecrm:y")
                .contact("+91")
                .unwrap()
                .is_none(),
            "per CRM"
        );
    }
}
