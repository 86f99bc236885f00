//! The domain's nouns, shared by every layer: a [`User`] and a time [`Window`].
//!
//! They live here, not in the Engati client or a sink, so that the source (`engati`), the plan,
//! the sinks and the state store speak of the same thing without importing each other.

/// Half-open time window `[start_ms, end_ms)`, ms since epoch UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// Inclusive start, ms since epoch UTC.
    pub start_ms: i64,
    /// Exclusive end, ms since epoch UTC.
    pub end_ms: i64,
}

impl Window {
    /// True when `t` (ms since epoch UTC) is inside `[start, end)`.
    pub fn contains(&self, t: i64) -> bool {
        self.start_ms <= t && t < self.end_ms
    }

    /// True when the two windows share at least one millisecond.
    pub fn overlaps(&self, other: &Window) -> bool {
        self.start_ms < other.end_ms && other.start_ms < self.end_ms
    }
}

/// A bot user: who a conversation is with. Read from the Users API (docs/engati-api.md, "Users
/// API") or a users file; written to the `users` table and the state store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// Channel-user id, the Conversations API's path parameter (for WhatsApp the phone number
    /// in digits, no `+`).
    pub channel_user_id: String,
    /// Channel (`whatsapp`, `web`, ...), when known (null for a users file without it).
    pub channel: Option<String>,
    /// Display name, when known.
    pub user_name: Option<String>,
    /// Attributes as text (`name -> value`, in the API's order; non-string JSON values are
    /// rendered as JSON text).
    pub attributes: Vec<(String, String)>,
    /// The `NAME=VALUE` filters that selected this user, in filter order (empty for a users
    /// file).
    pub matched_filters: Vec<String>,
}

/// A user as an output recorded it: the [`User`] and the run that last exported it (one row
/// of the `users` table and of the state store's `users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedUser {
    /// The user.
    pub user: User,
    /// The run that last exported the user.
    pub run_id: String,
    /// That run's start, ms since epoch UTC.
    pub extracted_at_ms: i64,
}
