//! Everything that knows the Engati wire format and how to talk to it (engati-api.md).
//!
//! - [`provider`]: brands and their base URLs;
//! - [`client`]: HTTP, auth, limits, retries;
//! - [`error`]: [`ApiError`](error::ApiError) and its retry classification;
//! - [`wire`]: the JSON shapes, read tolerantly;
//! - [`users`]: the user list (Users API or a users file).

pub mod client;
pub mod error;
pub mod provider;
pub mod users;
pub mod wire;
