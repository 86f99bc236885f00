//! Everything that knows the Engati wire format and how to talk to it
//! (`docs/engati-api.md`).
//!
//! - [`provider`]: brands and their base URLs;
//! - [`client`]: HTTP, auth, limits, retries;
//! - [`conversations`]: one (user, window)'s pages as a stream, with the stop rules;
//! - [`error`]: [`ApiError`](error::ApiError) and its retry classification;
//! - [`wire`]: the JSON shapes, read tolerantly;
//! - [`wire_message`]: one message, and its residual (what no column holds);
//! - [`users`]: the user list (Users API or a users file);
//! - [`users_wire`]: the Users API body, read as a stream.

pub mod adaptive;
pub mod cell_read;
pub mod client;
pub mod conversations;
pub mod error;
pub mod provider;
pub mod seek;
pub mod users;
pub mod users_wire;
pub mod wire;
pub mod wire_message;

use std::path::PathBuf;

use self::client::ClientConfig;
use self::provider::Provider;
use self::users::AttributeFilter;

/// Where the users come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersSource {
    /// Users API, one call per filter, a union.
    Filters(Vec<AttributeFilter>),
    /// A file of channel-user ids (no Users API call).
    File(PathBuf),
}

/// The source of a run, validated (`config::source`): which tenant, which users, how to call.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The brand (names the `provider` column).
    pub provider: Provider,
    /// HTTP client settings; its `api_key` is empty until read (`config::read_key`).
    pub client: ClientConfig,
    /// The key file, if the key is not in `ENGATI_API_KEY`.
    pub api_key_file: Option<PathBuf>,
    /// Which users.
    pub users: UsersSource,
    /// Messages per request, 1..=500.
    pub page_size: u32,
    /// Read each window of more than one page twice and keep it only when two reads agree
    /// (`engati::conversations`).
    pub double_read: bool,
}
