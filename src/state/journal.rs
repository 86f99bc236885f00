//! The commit journal: a commit is recorded `pending` with its effect on the state, its files
//! are renamed into place and the replaced ones deleted, then it is marked done; recovery rolls
//! pending commits forward and removes stray staged files (its own shard's only).

use super::watermarks::advance_watermarks;
use super::*;

impl StateStore {
    /// Finishes pending commits (roll forward) and deletes staged files no commit refers to.
    /// Returns the number of commits finished and stray files removed.
    ///
    /// # Errors
    /// [`StateError::LostStagedFile`] if a pending commit's staged file vanished; I/O errors.
    pub fn recover(&mut self, out_dir: &Path) -> Result<(usize, usize), StateError> {
        let pending: Vec<(i64, String)> = {
            let mut st = self
                .conn
                .prepare("SELECT id, plan FROM commits WHERE state='pending' ORDER BY id")
                .map_err(sql(&self.path))?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql(&self.path))?;
            rows.collect::<Result<_, _>>().map_err(sql(&self.path))?
        };
        for (id, plan) in &pending {
            let plan: CommitPlan = serde_json::from_str(plan).unwrap_or_default();
            self.apply(*id, &plan, out_dir)?;
        }
        let strays = remove_stray_staged_files(out_dir, self.shard)?;
        Ok((pending.len(), strays))
    }

    /// Records a commit (pending) with its ledger, progress and watermark changes, in one
    /// transaction; then renames/deletes its files and marks it done.
    ///
    /// # Errors
    /// SQLite or I/O errors. If it fails after the transaction, the next
    /// [`recover`](Self::recover) finishes it.
    pub fn commit(
        &mut self,
        run_id: &str,
        plan: &CommitPlan,
        out_dir: &Path,
        now_ms: i64,
    ) -> Result<i64, StateError> {
        let path = self.path.clone();
        let e = sql(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        tx.execute(
            "INSERT INTO commits(run_id, state, plan, created_ms) VALUES(?1, 'pending', ?2, ?3)",
            params![
                run_id,
                serde_json::to_string(plan).unwrap_or_default(),
                now_ms
            ],
        )
        .map_err(&e)?;
        let id = tx.last_insert_rowid();
        {
            let mut del = tx
                .prepare_cached("DELETE FROM files WHERE path=?1")
                .map_err(&e)?;
            for r in &plan.removes {
                del.execute([r]).map_err(&e)?;
            }
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO files(path, stream, unit_key, cells_from, cells_to, min_user, max_user, min_ms, max_ms, rows, bytes, run_id, commit_id, checksum)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(&e)?;
            for f in &plan.records {
                ins.execute(params![
                    f.path,
                    f.stream,
                    f.unit_key,
                    f.cells_from,
                    f.cells_to,
                    f.min_user,
                    f.max_user,
                    f.min_ms,
                    f.max_ms,
                    f.rows as i64,
                    f.bytes as i64,
                    run_id,
                    id,
                    f.checksum
                ])
                .map_err(&e)?;
            }
            if let Some((unit, done)) = &plan.unit_progress {
                tx.execute(
                    "INSERT INTO run_units(run_id, unit_key, cells_done) VALUES(?1, ?2, ?3)
                     ON CONFLICT(run_id, unit_key) DO UPDATE SET cells_done=excluded.cells_done",
                    params![run_id, unit, done],
                )
                .map_err(&e)?;
            }
            advance_watermarks(&tx, run_id, &plan.watermarks).map_err(&e)?;
            if let Some(m) = &plan.manifest {
                super::manifests::record(&tx, m).map_err(&e)?;
                super::manifests::remove_paths(&tx, &plan.removes).map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)?;
        fail::fail_point!("state::after_journal", |_| crate::hooks::crash(
            "after a journaled commit"
        ));
        self.apply(id, plan, out_dir)?;
        Ok(id)
    }

    fn apply(&mut self, id: i64, plan: &CommitPlan, out_dir: &Path) -> Result<(), StateError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (staged, fin) in &plan.adds {
            let (s, f) = (out_dir.join(staged), out_dir.join(fin));
            match std::fs::rename(&s, &f) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    if !f.exists() {
                        return Err(StateError::LostStagedFile {
                            db: self.path.clone(),
                            commit: id,
                            path: s,
                        });
                    }
                }
                Err(source) => {
                    return Err(StateError::Io {
                        action: "renaming staged file to",
                        path: f,
                        source,
                    });
                }
            }
            if let Some(p) = f.parent()
                && !dirs.iter().any(|d| d == p)
            {
                dirs.push(p.to_owned());
            }
            fail::fail_point!("state::mid_apply", |_| crate::hooks::crash(
                "in the middle of a commit's renames"
            ));
        }
        let finals: std::collections::HashSet<&str> =
            plan.adds.iter().map(|(_, f)| f.as_str()).collect();
        for r in &plan.removes {
            if finals.contains(r.as_str()) {
                continue; // replaced in place by the rename
            }
            let p = out_dir.join(r);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StateError::Io {
                        action: "removing replaced file",
                        path: p,
                        source,
                    });
                }
            }
            if let Some(parent) = p.parent()
                && !dirs.iter().any(|d| d == parent)
            {
                dirs.push(parent.to_owned());
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        self.conn
            .execute("DELETE FROM commits WHERE id=?1", [id])
            .map_err(sql(&self.path))?;
        Ok(())
    }
}

/// Removes the staged files (`.*.tmp`) under `out_dir` (not under `_state`) that belong to
/// `shard`: those whose name carries its tag, or no tag for an unsharded store. Other shards
/// writing the same output stage their own files there at the same time.
pub(super) fn remove_stray_staged_files(
    out_dir: &Path,
    shard: Option<Shard>,
) -> Result<usize, StateError> {
    let mut removed = 0;
    let mut stack = vec![out_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if name != "_state" {
                    stack.push(p);
                }
            } else if name.starts_with('.')
                && name.ends_with(STAGED_SUFFIX)
                && Shard::tag_in(&name) == shard
            {
                std::fs::remove_file(&p).map_err(|source| StateError::Io {
                    action: "removing stray staged file",
                    path: p.clone(),
                    source,
                })?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}
