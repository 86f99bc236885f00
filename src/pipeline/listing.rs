//! The run's users, listed into the state store (`listed_users`) as they are read: the Users
//! API body (spooled to a file beside the store, then streamed user by user: never a tree or
//! a list in memory) or the users file, line by line. Ids that cannot be exported are set
//! aside; a sharded run keeps its shard's users only. Stored in batches of
//! [`LISTING_BATCH`] users, one transaction each; the store sorts and unites them.
//!
//! Outputs without a state store (stdout), `plan` and `users` list into a scratch store in a
//! temporary directory ([`scratch_store`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::RunError;
use crate::engati::UsersSource;
use crate::engati::client::Client;
use crate::engati::error::{ApiError, RequestError};
use crate::engati::users::{
    RejectedUser, UsersFileRead, check_user_id, read_users_file_with, shown_id,
};
use crate::engati::users_wire::{self, StreamError};
use crate::model::User;
use crate::shard::Shard;
use crate::state::{LISTING_BATCH, StateError, StateStore};

/// What listing found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Ids listed that cannot be exported (in this shard), each once, by id.
    pub rejected: Vec<RejectedUser>,
    /// Users listed that belong to other shards (skipped).
    pub other_shards: u64,
}

/// A store in a temporary directory (removed with it): for outputs that keep no state.
pub struct Scratch {
    /// The store.
    pub store: StateStore,
    /// Its directory, removed when dropped (after the store).
    pub dir: tempfile::TempDir,
}

/// Opens a scratch store in a new temporary directory.
///
/// # Errors
/// [`RunError::State`] when the directory or the store cannot be created.
pub fn scratch_store() -> Result<Scratch, RunError> {
    let dir = tempfile::Builder::new()
        .prefix("engati-etl-")
        .tempdir()
        .map_err(|source| StateError::Io {
            action: "creating a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    let store = StateStore::open(dir.path())?;
    Ok(Scratch { store, dir })
}

/// Lists the users of `source` into `store` (replacing its previous listing), each with
/// `from_ms` as the start of its range, keeping `shard`'s users only. The store comes back
/// whatever happened.
///
/// # Errors
/// [`RunError::Source`] (a Users API call, a body the reader cannot take),
/// [`RunError::UsersFile`], [`RunError::State`].
pub async fn list_users(
    client: &Client,
    source: &UsersSource,
    shard: Option<Shard>,
    from_ms: i64,
    mut store: StateStore,
) -> (StateStore, Result<Listing, RunError>) {
    if let Err(e) = store.begin_listing() {
        return (store, Err(e.into()));
    }
    let mut acc = Accumulator {
        store,
        batch: Vec::with_capacity(LISTING_BATCH),
        filter: None,
        from_ms,
        shard,
        rejected: BTreeMap::new(),
        other_shards: 0,
    };
    let result = match source {
        UsersSource::Filters(filters) => {
            let spool = spool_path(&acc.store);
            let mut result = Ok(());
            for f in filters {
                acc.filter = Some(f.to_string());
                let (back, r) = list_filter(client, f, acc, &spool).await;
                acc = back;
                result = r;
                if result.is_err() {
                    break;
                }
            }
            let _ = std::fs::remove_file(&spool);
            result
        }
        UsersSource::File(path) => {
            let path = path.clone();
            let (back, r) = blocking(acc, move |acc| {
                read_users_file_with(&path, &mut |u| acc.push(u)).map_err(|e| match e {
                    UsersFileRead::File(e) => RunError::UsersFile(e),
                    UsersFileRead::Stopped(e) => RunError::State(e),
                })?;
                Ok(())
            })
            .await;
            acc = back;
            r
        }
    };
    let Accumulator {
        store,
        rejected,
        other_shards,
        ..
    } = acc;
    let listing = result.map(|()| Listing {
        rejected: rejected.into_values().collect(),
        other_shards,
    });
    (store, listing)
}

/// One filter: the body spooled and located (retried as one request), then streamed into the
/// store on a blocking thread.
async fn list_filter(
    client: &Client,
    f: &crate::engati::users::AttributeFilter,
    acc: Accumulator,
    spool: &std::path::Path,
) -> (Accumulator, Result<(), RunError>) {
    let opened = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(spool);
    let file = match opened {
        Ok(file) => file,
        Err(source) => {
            let e = StateError::Io {
                action: "creating the Users API spool file",
                path: spool.to_owned(),
                source,
            };
            return (acc, Err(e.into()));
        }
    };
    let path = match client.users_spooled(&f.name, &f.value, &file).await {
        Ok(p) => p,
        Err(e) => return (acc, Err(e.into())),
    };
    let keys = client.config().users_keys.clone();
    let what = format!("Users API, attribute {f}");
    blocking(acc, move |acc| {
        users_wire::stream_file(&file, &path, &keys, &mut |u| acc.push(u)).map_err(|e| match e {
            StreamError::Decode(d) => RunError::Source(RequestError {
                what,
                attempts: 1,
                source: ApiError::Decode(d),
            }),
            StreamError::Stopped(e) => RunError::State(e),
        })
    })
    .await
}

/// Runs `work` on a blocking thread with the accumulator, then stores what is left of its
/// batch; hands the accumulator back.
async fn blocking(
    mut acc: Accumulator,
    work: impl FnOnce(&mut Accumulator) -> Result<(), RunError> + Send + 'static,
) -> (Accumulator, Result<(), RunError>) {
    let joined = tokio::task::spawn_blocking(move || {
        let r = work(&mut acc).and_then(|()| acc.flush().map_err(RunError::from));
        (acc, r)
    })
    .await;
    match joined {
        Ok(done) => done,
        // A panic on the blocking thread (a bug) goes on here.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Users on their way into the store, a batch at a time.
struct Accumulator {
    store: StateStore,
    batch: Vec<User>,
    /// The filter being listed (`NAME=VALUE`), `None` for a users file.
    filter: Option<String>,
    from_ms: i64,
    shard: Option<Shard>,
    rejected: BTreeMap<String, RejectedUser>,
    other_shards: u64,
}

impl Accumulator {
    fn push(&mut self, u: User) -> Result<(), StateError> {
        if self.shard.is_some_and(|s| !s.contains(&u.channel_user_id)) {
            self.other_shards += 1;
            return Ok(());
        }
        if let Err(reason) = check_user_id(&u.channel_user_id) {
            let shown = shown_id(&u.channel_user_id);
            self.rejected
                .entry(u.channel_user_id)
                .or_insert(RejectedUser {
                    channel_user_id: shown,
                    reason,
                });
            return Ok(());
        }
        self.batch.push(u);
        if self.batch.len() >= LISTING_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StateError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let r = self
            .store
            .add_listed_users(&self.batch, self.filter.as_deref(), self.from_ms);
        self.batch.clear();
        r
    }
}

/// Where a store's Users API body is spooled while it is read: beside its database.
pub fn spool_path(store: &StateStore) -> PathBuf {
    store.path().with_file_name("users-body.json.tmp")
}
