//! Phase 4 of a CRM commit: the unit's dead letters (the pipeline's rejects and the CRM's
//! refusals) and its progress (and watermarks) committed together in the state store.

use super::{CrmSink, Refusal};
use crate::sink::durable::{sync_parents, write_file};
use crate::sink::{Committed, DeadLetters, SinkError, UnitInfo, WrittenFile, watermark_moves};
use crate::state::{CommitPlan, FileRecord, STAGED_SUFFIX, checksum};

impl CrmSink {
    /// Commits the first `done` cells of `info`, delivered (`rows` messages) with `refused`.
    pub(super) fn commit_unit(
        &mut self,
        info: &UnitInfo,
        done: usize,
        mut dead: DeadLetters,
        refused: &[Refusal],
        rows: u64,
    ) -> Result<Committed, SinkError> {
        for (user, key, why) in refused {
            dead.push_json(
                &serde_json::json!({"run_id": self.run.run_id, "channel_user_id": user,
                "window_start_ms": info.window.start_ms, "window_end_ms": info.window.end_ms,
                "session_key": key, "reason": why, "crm": self.spec.kind.as_str()}),
            );
        }
        self.report.rejects += refused.iter().filter(|(_, k, _)| !k.is_empty()).count() as u64;
        let cells_to = info.first_cell + done as u32;
        let mut plan = CommitPlan {
            unit_progress: Some((info.key.0.clone(), cells_to)),
            ..Default::default()
        };
        if let Some(ns) = &self.run.watermarks {
            plan.watermarks = watermark_moves(ns, &info.cells[..done], &dead.unreadable);
        }
        let mut files = Vec::new();
        if !dead.is_empty() {
            let stem = format!("part-{}-{:05}-{}", info.key.0, info.first_cell, self.run8);
            let staged = format!("_dead_letter/.{stem}.jsonl.{}{STAGED_SUFFIX}", self.run8);
            let path = format!("_dead_letter/{stem}.jsonl");
            // Durable (file and directory entry) before the journal refers to it.
            write_file(&self.spec.out_dir.join(&staged), &dead.lines)?;
            sync_parents(&self.spec.out_dir, std::iter::once(staged.as_str()))?;
            plan.adds.push((staged, path.clone()));
            plan.records.push(FileRecord {
                path: path.clone(),
                stream: "dead_letter".into(),
                unit_key: info.key.0.clone(),
                cells_from: info.first_cell,
                cells_to,
                min_user: String::new(),
                max_user: String::new(),
                min_ms: info.window.start_ms,
                max_ms: info.window.end_ms,
                rows: dead.rows,
                bytes: dead.lines.len() as u64,
                checksum: Some(checksum::of_bytes(&dead.lines)),
            });
            files.push(WrittenFile {
                path,
                bytes: dead.lines.len() as u64,
            });
        }
        self.state.commit(
            &self.run.run_id,
            &plan,
            &self.spec.out_dir,
            crate::time::now_ms(),
        )?;
        Ok(Committed {
            rows,
            rejects: dead.rows,
            files,
            ..Committed::default()
        })
    }
}
