//! The users to export: from the Users API (one call per attribute filter, a union without
//! duplicates) or from a users file of channel-user ids (no API call).
//!
//! The list is sorted by `channel_user_id` so that every run plans the same cells in the same
//! order (file names and resume depend on it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::client::Client;
use super::error::RequestError;
use crate::model::User;

/// `NAME=VALUE`: users whose attribute `NAME` equals `VALUE` (docs/engati-api.md, "Users API").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeFilter {
    /// Attribute name.
    pub name: String,
    /// Attribute value (compared as text by the API).
    pub value: String,
}

impl std::fmt::Display for AttributeFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

impl std::str::FromStr for AttributeFilter {
    type Err = String;
    /// Parses `NAME=VALUE` (the first `=` splits; the value may contain `=`, and may be empty).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok(AttributeFilter {
                name: name.trim().to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!(
                "attribute filter `{s}` must look like NAME=VALUE, e.g. feedback=1"
            )),
        }
    }
}

/// Longest channel-user id accepted, bytes (WhatsApp ids are phone numbers; other channels use
/// UUIDs or e-mail addresses).
pub const MAX_USER_ID_BYTES: usize = 256;

/// Checks that `id` can be sent as the Conversations API's path segment and reach exactly
/// that user's endpoint: not empty, at most [`MAX_USER_ID_BYTES`], no control character, and
/// not `.` or `..` (which a URL resolves as path navigation). Every other character is
/// percent-encoded on the wire.
///
/// # Errors
/// Why the id is refused.
pub fn check_user_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.len() > MAX_USER_ID_BYTES {
        return Err(format!(
            "the id is {} bytes long (at most {MAX_USER_ID_BYTES})",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return Err("`.` and `..` cannot be a URL path segment".into());
    }
    if id.chars().any(char::is_control) {
        return Err("the id contains a control character".into());
    }
    Ok(())
}

/// An id as messages show it: at most 40 characters.
pub fn shown_id(id: &str) -> String {
    if id.chars().count() <= 40 {
        return id.to_owned();
    }
    let head: String = id.chars().take(40).collect();
    format!("{head}… ({} bytes)", id.len())
}

/// A user the Users API listed that cannot be exported, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectedUser {
    /// The id, shortened to 40 characters.
    pub channel_user_id: String,
    /// Why.
    pub reason: String,
}

/// Lists users matching any of `filters` (a union; each user once, first listing wins for its
/// fields; `matched_filters` collects every filter that listed them), sorted by id; and the
/// listed users whose id cannot be exported ([`check_user_id`]).
///
/// # Errors
/// The first [`RequestError`] of a Users API call.
pub async fn list_users(
    client: &Client,
    filters: &[AttributeFilter],
) -> Result<(Vec<User>, Vec<RejectedUser>), RequestError> {
    let mut by_id: BTreeMap<String, User> = BTreeMap::new();
    let mut rejected: BTreeMap<String, RejectedUser> = BTreeMap::new();
    for f in filters {
        for u in client.users(&f.name, &f.value).await? {
            if let Err(reason) = check_user_id(&u.channel_user_id) {
                let channel_user_id = shown_id(&u.channel_user_id);
                rejected.entry(u.channel_user_id).or_insert(RejectedUser {
                    channel_user_id,
                    reason,
                });
                continue;
            }
            let entry = by_id.entry(u.channel_user_id.clone()).or_insert(u);
            let label = f.to_string();
            if !entry.matched_filters.contains(&label) {
                entry.matched_filters.push(label);
            }
        }
    }
    Ok((
        by_id.into_values().collect(),
        rejected.into_values().collect(),
    ))
}

/// Why a users file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    /// I/O error.
    #[error("cannot read users file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A CSV syntax error.
    #[error("users file {path}, line {line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// An id that cannot be exported ([`check_user_id`]).
    #[error("users file {path}, line {line}: channel-user id `{id}`: {reason}")]
    BadId {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The id, shortened.
        id: String,
        /// Why.
        reason: String,
    },
    /// No id in the file.
    #[error(
        "users file {path} lists no channel-user ids (one id per line, or a CSV with a `channel_user_id` column)"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

const ID_HEADERS: [&str; 5] = ["channel_user_id", "channeluserid", "user_id", "phone", "id"];

/// Reads a users file: one channel-user id per line, or a CSV whose header names a
/// `channel_user_id` column (also `channelUserId`, `user_id`, `phone`, `id`) and optionally
/// `channel` and `user_name`. Blank lines and lines starting with `#` are skipped; a `+` before
/// a phone number is dropped (WhatsApp ids are digits only). Duplicates are removed; sorted.
///
/// # Errors
/// [`UsersFileError`] naming the file and line.
pub fn read_users_file(path: &Path) -> Result<Vec<User>, UsersFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut id_col = 0usize;
    let mut channel_col = None;
    let mut name_col = None;
    let mut by_id: BTreeMap<String, User> = BTreeMap::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| UsersFileError::Csv {
            path: path.to_owned(),
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        if i == 0 {
            let lower: Vec<String> = rec.iter().map(|f| f.to_ascii_lowercase()).collect();
            if let Some(c) = lower.iter().position(|f| ID_HEADERS.contains(&f.as_str())) {
                id_col = c;
                channel_col = lower.iter().position(|f| f == "channel");
                name_col = lower.iter().position(|f| f == "user_name" || f == "name");
                continue;
            }
        }
        let Some(id) = rec.get(id_col).map(|s| s.trim_start_matches('+')) else {
            continue;
        };
        if id.is_empty() {
            continue;
        }
        if let Err(reason) = check_user_id(id) {
            return Err(UsersFileError::BadId {
                path: path.to_owned(),
                line: rec.position().map_or(0, |p| p.line()),
                id: shown_id(id),
                reason,
            });
        }
        let get = |c: Option<usize>| {
            c.and_then(|c| rec.get(c))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        by_id.entry(id.to_owned()).or_insert_with(|| User {
            channel_user_id: id.to_owned(),
            channel: get(channel_col),
            user_name: get(name_col),
            attributes: Vec::new(),
            matched_filters: Vec::new(),
        });
    }
    if by_id.is_empty() {
        return Err(UsersFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(by_id.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_name_equals_value() {
        let f: AttributeFilter = "feedback=1".parse().unwrap();
        assert_eq!((f.name.as_str(), f.value.as_str()), ("feedback", "1"));
        let f: AttributeFilter = "url=a=b".parse().unwrap();
        assert_eq!(f.value, "a=b");
        let err = "feedback".parse::<AttributeFilter>().unwrap_err();
        assert!(err.contains("NAME=VALUE"));
        assert!("=1".parse::<AttributeFilter>().is_err());
    }

    #[test]
    fn users_files_take_plain_lists_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("ids.txt");
        std::fs::write(
            &plain,
            "# ids\n919565428256\n\n+919000000001\n919565428256\n",
        )
        .unwrap();
        let ids: Vec<_> = read_users_file(&plain)
            .unwrap()
            .into_iter()
            .map(|u| u.channel_user_id)
            .collect();
        assert_eq!(ids, vec!["919000000001", "919565428256"]);
        let csv = dir.path().join("u.csv");
        std::fs::write(
            &csv,
            "name,channel_user_id,channel\nAsha,9195,whatsapp\nRavi,9196,\n",
        )
        .unwrap();
        let users = read_users_file(&csv).unwrap();
        assert_eq!(users[0].channel_user_id, "9195");
        assert_eq!(users[0].channel.as_deref(), Some("whatsapp"));
        assert_eq!(users[0].user_name.as_deref(), Some("Asha"));
        assert_eq!(users[1].channel, None);
        let empty = dir.path().join("e.txt");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(matches!(
            read_users_file(&empty),
            Err(UsersFileError::Empty { .. })
        ));
    }
}
