//! The users exported to this output (the source of the `users` table), latest attributes
//! winning.

use super::*;

impl StateStore {
    /// Inserts or updates users (latest wins), in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn upsert_users(&mut self, users: &[ExportedUser]) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = sql(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO users(user, channel, user_name, attributes, matched_filters, run_id, extracted_ms)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(user) DO UPDATE SET channel=excluded.channel, user_name=excluded.user_name,
                       attributes=excluded.attributes, matched_filters=excluded.matched_filters,
                       run_id=excluded.run_id, extracted_ms=excluded.extracted_ms",
                )
                .map_err(&e)?;
            for u in users {
                let user = &u.user;
                st.execute(params![
                    user.channel_user_id,
                    user.channel,
                    user.user_name,
                    serde_json::to_string(&user.attributes).unwrap_or_default(),
                    serde_json::to_string(&user.matched_filters).unwrap_or_default(),
                    u.run_id,
                    u.extracted_at_ms
                ])
                .map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }

    /// All stored users, by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn users(&self) -> Result<Vec<ExportedUser>, StateError> {
        let mut all = Vec::new();
        loop {
            let page = self.users_page(
                all.last()
                    .map(|u: &ExportedUser| u.user.channel_user_id.as_str()),
                10_000,
            )?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// Up to `limit` stored users after `after` (by id): read the table page by page.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn users_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExportedUser>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT user, channel, user_name, attributes, matched_filters, run_id, extracted_ms FROM users
                 WHERE ?1 IS NULL OR user > ?1 ORDER BY user LIMIT ?2",
            )
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                let attrs: String = r.get(3)?;
                let matched: String = r.get(4)?;
                Ok(ExportedUser {
                    user: User {
                        channel_user_id: r.get(0)?,
                        channel: r.get(1)?,
                        user_name: r.get(2)?,
                        attributes: serde_json::from_str(&attrs).unwrap_or_default(),
                        matched_filters: serde_json::from_str(&matched).unwrap_or_default(),
                    },
                    run_id: r.get(5)?,
                    extracted_at_ms: r.get(6)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }
}
