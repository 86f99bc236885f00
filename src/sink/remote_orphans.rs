//! The orphan sweep of an output on object storage, at a worker's start (after its claim):
//! objects under `messages/`, `_dead_letter/` and `users/` that no committed manifest keeps.
//!
//! Deleted:
//! - **dead objects**: paths a committed manifest removed (of any namespace: object names are
//!   never reused, so a removed path is dead for good) that are still there, because a worker
//!   stopped between its manifest and its deletes;
//! - **orphans**: objects the ledger does not name, uploaded by a writer that claimed this
//!   namespace before this worker did (the writer id is in every name it uploads). Such a
//!   writer can never commit again (see `remote_files`), so its uploads are garbage.
//!
//! Kept: every object in the ledger, and objects of other namespaces' writers (a concurrent
//! shard's in-flight uploads) or of writers that claimed after this one.

use futures_util::{StreamExt, TryStreamExt};

use super::SinkError;
use super::remote_files::writer_of;
use crate::state::StateStore;
use crate::storage::Remote;

/// The directories of data objects.
const DATA_DIRS: [&str; 3] = ["messages", "_dead_letter", "users"];
/// Deletes in flight at once.
const PARALLEL: usize = 8;

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Objects removed by a committed manifest that were still there.
    pub removed: usize,
    /// Uploads no manifest names, of writers this worker's claim superseded.
    pub orphans: usize,
}

/// Sweeps the output for a worker that claimed namespace `ns_key` at `claim_seq`, with the
/// local state replayed through that claim.
///
/// # Errors
/// Store errors (listing or deleting), state errors.
pub async fn sweep(
    remote: &Remote,
    state: &StateStore,
    ns_key: &str,
    claim_seq: u64,
) -> Result<Swept, SinkError> {
    let live = state.ledger_paths()?;
    let dead = state.removed_paths()?;
    let earlier = state.writers_before(ns_key, claim_seq)?;
    let mut out = Swept::default();
    let mut doomed = Vec::new();
    for dir in DATA_DIRS {
        for (rel, _) in remote.list(dir).await? {
            if live.contains(&rel) {
                continue;
            }
            if dead.contains(&rel) {
                out.removed += 1;
            } else if writer_of(&rel).is_some_and(|w| earlier.contains(w)) {
                out.orphans += 1;
            } else {
                continue;
            }
            doomed.push(rel);
        }
    }
    futures_util::stream::iter(doomed.iter())
        .map(|rel| remote.delete(rel))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(out)
}
