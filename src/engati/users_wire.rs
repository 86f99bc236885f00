//! The Users API body (docs/engati-api.md, "Users API"), read as a stream.
//!
//! The Users API answers every matching user in one response (no paging is documented): a
//! million users are a body of about 170 MB. The body is read twice from wherever it is (a
//! slice, or the file the client spooled it to), never as a tree or a list in memory:
//!
//! 1. [`locate`] walks the whole body once, skipping values, and finds where the list is by
//!    the tolerant reader's rules (below); it checks the body is complete JSON (a body cut
//!    short is a retryable error, found before any user is taken);
//! 2. [`stream`] walks it again and hands each user, read on its own, to a callback (the
//!    pipeline's stores them in the state store as they come).
//!
//! Shapes read: `{"users": [...]}` (list keys configurable, tried in order); a bare
//! top-level array; `{"responseObject": [...]}`; `{"responseObject": {"content" | "users":
//! [...]}}`. Object keys behave as in a `serde_json::Map`: a repeated key keeps its last
//! value, and errors name the keys sorted. A user's id is read from the first of
//! `keys.id_keys` present (string or number). An unknown shape is an error naming the JSON
//! path, the keys looked for and what was found, never an empty list.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufReader, Read, Seek, SeekFrom};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::wire::{DecodeError, json_type, quoted_list, scalar_text};
use crate::model::User;

/// Key names the tolerant Users reader tries (docs/engati-api.md, "Users API").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersKeys {
    /// Keys that may hold the list in an object body; default `users`.
    pub list_keys: Vec<String>,
    /// Keys that may hold a user's id; default `channel_user_id`, `channelUserId`, `user_id`.
    pub id_keys: Vec<String>,
}

impl Default for UsersKeys {
    fn default() -> Self {
        UsersKeys {
            list_keys: vec!["users".into()],
            id_keys: vec![
                "channel_user_id".into(),
                "channelUserId".into(),
                "user_id".into(),
            ],
        }
    }
}

/// Where the list is in a body, as [`locate`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListPath {
    /// The body is the list.
    Root,
    /// `$.<key>`: the `nth` occurrence (0-based) of `key` in the top object.
    Key {
        /// The key.
        key: String,
        /// Which occurrence (the last one: a repeated key keeps its last value).
        nth: usize,
    },
    /// `$.responseObject.<key>`: occurrence `outer_nth` of `responseObject`, occurrence `nth`
    /// of `key` in it.
    Nested {
        /// Occurrence of `responseObject` in the top object.
        outer_nth: usize,
        /// The key inside it.
        key: String,
        /// Its occurrence there.
        nth: usize,
    },
}

const RESPONSE_OBJECT: &str = "responseObject";

impl ListPath {
    /// The JSON path (`$`, `$.users`, `$.responseObject.content`), for errors.
    pub fn json_path(&self) -> String {
        match self {
            ListPath::Root => "$".into(),
            ListPath::Key { key, .. } => format!("$.{key}"),
            ListPath::Nested { key, .. } => format!("$.{RESPONSE_OBJECT}.{key}"),
        }
    }
}

/// Why streaming users stopped: the body, or the callback.
#[derive(Debug)]
pub enum StreamError<E> {
    /// The body (an item that is not a user, or not readable).
    Decode(DecodeError),
    /// The callback's error.
    Stopped(E),
}

/// Reads a Users API body held in memory: every user, in the body's order.
///
/// # Errors
/// [`DecodeError::Syntax`] for non-JSON bodies; [`DecodeError::Shape`] naming the JSON path,
/// the keys looked for and what was found.
pub fn parse_users(body: &[u8], keys: &UsersKeys) -> Result<Vec<User>, DecodeError> {
    let len = body.len() as u64;
    let path = locate(&mut serde_json::Deserializer::from_slice(body), keys, len)?;
    let mut users = Vec::new();
    let mut push = |u: User| -> Result<(), std::convert::Infallible> {
        users.push(u);
        Ok(())
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    match stream(&mut de, &path, keys, len, &mut push) {
        Ok(()) => Ok(users),
        Err(StreamError::Decode(e)) => Err(e),
        Err(StreamError::Stopped(never)) => match never {},
    }
}

/// Reading buffer for a spooled body.
const READ_BUFFER: usize = 256 * 1024;

/// [`locate`] over a spooled body (read from its start); also returns its length in bytes.
///
/// # Errors
/// As [`locate`]; an I/O error reads as a syntax error (the body could not be read whole).
pub fn locate_file(file: &std::fs::File, keys: &UsersKeys) -> Result<ListPath, DecodeError> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut de = serde_json::Deserializer::from_reader(reader_at_start(file));
    locate(&mut de, keys, len)
}

/// [`stream`] over a spooled body (read from its start).
///
/// # Errors
/// As [`stream`].
pub fn stream_file<E>(
    file: &std::fs::File,
    path: &ListPath,
    keys: &UsersKeys,
    on_user: &mut dyn FnMut(User) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut de = serde_json::Deserializer::from_reader(reader_at_start(file));
    stream(&mut de, path, keys, len, on_user)
}

fn reader_at_start(file: &std::fs::File) -> impl Read + '_ {
    let mut f = file;
    let at_start = f.seek(SeekFrom::Start(0));
    // A failed seek reads as an empty body, which the reader reports.
    let f: Box<dyn Read + '_> = match at_start {
        Ok(_) => Box::new(f),
        Err(_) => Box::new(std::io::empty()),
    };
    BufReader::with_capacity(READ_BUFFER, f)
}

/// Walks a whole body, skipping values, and finds the list by the module's rules.
///
/// # Errors
/// [`DecodeError::Syntax`] for a body that is not complete JSON (`truncated` when cut short);
/// [`DecodeError::Shape`] when no list is where the rules look. `len` is the body's length,
/// for messages.
pub fn locate<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    keys: &UsersKeys,
    len: u64,
) -> Result<ListPath, DecodeError> {
    let mut interesting: Vec<&str> = keys.list_keys.iter().map(String::as_str).collect();
    interesting.push(RESPONSE_OBJECT);
    let top = Probe {
        interesting: &interesting,
        inner: Some(keys),
    }
    .deserialize(&mut *de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| DecodeError::syntax(&e, len as usize))?;
    decide(top, keys)
}

/// Hands each user of the list at `path` to `on_user`, in order, without holding more than
/// one user. `path` comes from [`locate`] over the same body.
///
/// # Errors
/// [`StreamError::Decode`]: an item that is not a user object or has no id (`Shape`, naming
/// `$.users[i]`), or that cannot be read (too deep, a number out of range: `Syntax`);
/// [`StreamError::Stopped`] with the callback's error.
pub fn stream<'de, R: serde_json::de::Read<'de>, E>(
    de: &mut serde_json::Deserializer<R>,
    path: &ListPath,
    keys: &UsersKeys,
    len: u64,
    on_user: &mut dyn FnMut(User) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let mut sink = Sink {
        keys,
        json_path: path.json_path(),
        on_user,
        failed: None,
    };
    let result = Walk {
        path,
        sink: &mut sink,
    }
    .deserialize(&mut *de)
    .and_then(|()| de.end());
    match (result, sink.failed) {
        (_, Some(f)) => Err(f),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(StreamError::Decode(DecodeError::syntax(&e, len as usize))),
    }
}

/// What the first pass learnt about a value.
enum Info {
    Array,
    Object(ObjectInfo),
    Other(&'static str),
}

/// An object's keys (sorted, for messages) and, for the keys of interest, the last
/// occurrence's index and value.
#[derive(Default)]
struct ObjectInfo {
    keys: BTreeSet<String>,
    last: BTreeMap<String, (usize, Info)>,
}

impl ObjectInfo {
    fn array(&self, key: &str) -> Option<usize> {
        match self.last.get(key) {
            Some((nth, Info::Array)) => Some(*nth),
            _ => None,
        }
    }
}

/// First-pass seed: the kind of a value; for an object, its keys and what the keys of
/// interest hold (one level further for the top object's `inner` keys).
struct Probe<'a> {
    interesting: &'a [&'a str],
    /// At the top: the keys whose objects are looked into (`responseObject`'s lists).
    inner: Option<&'a UsersKeys>,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = Info;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Info, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = Info;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Info, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Info::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Info, A::Error> {
        let mut info = ObjectInfo::default();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let inner_keys: Vec<&str> = match self.inner {
            Some(k) => ["content", "users"]
                .into_iter()
                .chain(k.list_keys.iter().map(String::as_str))
                .collect(),
            None => Vec::new(),
        };
        // Keys are kept for messages only where a list is looked for.
        let keep_keys = self.inner.is_some() || !self.interesting.is_empty();
        while let Some(key) = map.next_key::<String>()? {
            if self.interesting.contains(&key.as_str()) {
                let nested = self.inner.is_some() && key == RESPONSE_OBJECT;
                let value = map.next_value_seed(Probe {
                    interesting: if nested { &inner_keys } else { &[] },
                    inner: None,
                })?;
                let n = seen.entry(key.clone()).or_insert(0);
                info.last.insert(key.clone(), (*n, value));
                *n += 1;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            if keep_keys {
                info.keys.insert(key);
            }
        }
        Ok(Info::Object(info))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Info, E> {
        Ok(Info::Other("a string"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Info, E> {
        Ok(Info::Other("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Info, E> {
        Ok(Info::Other("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Info, E> {
        Ok(Info::Other("a number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Info, E> {
        Ok(Info::Other("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Info, E> {
        Ok(Info::Other("null"))
    }
}

/// The tolerant reader's rules over what the first pass found.
fn decide(top: Info, keys: &UsersKeys) -> Result<ListPath, DecodeError> {
    let looked_for = format!(
        "a list under {} or `responseObject` (an array, or an object with `content` or `users`), or a top-level array",
        quoted_list(&keys.list_keys)
    );
    let shape = |path: &str, found: String| DecodeError::Shape {
        path: path.into(),
        looked_for: looked_for.clone(),
        found,
    };
    let joined = |keys: &BTreeSet<String>| {
        format!(
            "keys {}",
            keys.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let obj = match top {
        Info::Array => return Ok(ListPath::Root),
        Info::Other(found) => return Err(shape("$", found.into())),
        Info::Object(obj) => obj,
    };
    for k in &keys.list_keys {
        if let Some(nth) = obj.array(k) {
            return Ok(ListPath::Key {
                key: k.clone(),
                nth,
            });
        }
    }
    match obj.last.get(RESPONSE_OBJECT) {
        Some((nth, Info::Array)) => {
            return Ok(ListPath::Key {
                key: RESPONSE_OBJECT.into(),
                nth: *nth,
            });
        }
        Some((outer_nth, Info::Object(inner))) => {
            for k in ["content", "users"]
                .into_iter()
                .chain(keys.list_keys.iter().map(String::as_str))
            {
                if let Some(nth) = inner.array(k) {
                    return Ok(ListPath::Nested {
                        outer_nth: *outer_nth,
                        key: k.into(),
                        nth,
                    });
                }
            }
            return Err(shape("$.responseObject", joined(&inner.keys)));
        }
        _ => {}
    }
    Err(shape(
        "$",
        if obj.keys.is_empty() {
            "an empty object".into()
        } else {
            joined(&obj.keys)
        },
    ))
}

/// The second pass's callback and what stopped it.
struct Sink<'a, E> {
    keys: &'a UsersKeys,
    json_path: String,
    on_user: &'a mut dyn FnMut(User) -> Result<(), E>,
    failed: Option<StreamError<E>>,
}

/// Second-pass seed: down `path` to the list, skipping everything else.
struct Walk<'p, 's, 'a, E> {
    path: &'p ListPath,
    sink: &'s mut Sink<'a, E>,
}

impl<'de, E> DeserializeSeed<'de> for Walk<'_, '_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path {
            ListPath::Root => d.deserialize_seq(Items { sink: self.sink }),
            ListPath::Key { key, nth } => d.deserialize_map(Find {
                key,
                nth: *nth,
                then: Then::Items,
                sink: self.sink,
            }),
            ListPath::Nested {
                outer_nth,
                key,
                nth,
            } => d.deserialize_map(Find {
                key: RESPONSE_OBJECT,
                nth: *outer_nth,
                then: Then::Find(key, *nth),
                sink: self.sink,
            }),
        }
    }
}

/// What to do with the value found by [`Find`].
#[derive(Clone, Copy)]
enum Then<'p> {
    /// It is the list.
    Items,
    /// It is an object holding the list at occurrence `.1` of key `.0`.
    Find(&'p str, usize),
}

/// Finds occurrence `nth` of `key` in an object and goes on with `then`.
struct Find<'p, 's, 'a, E> {
    key: &'p str,
    nth: usize,
    then: Then<'p>,
    sink: &'s mut Sink<'a, E>,
}

impl<'de, E> Visitor<'de> for Find<'_, '_, '_, E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the object located in the first pass")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = 0;
        while let Some(k) = map.next_key::<String>()? {
            if k != self.key {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if seen == self.nth {
                match self.then {
                    Then::Items => map.next_value_seed(SeqSeed {
                        sink: &mut *self.sink,
                    })?,
                    Then::Find(key, nth) => map.next_value_seed(MapSeed(Find {
                        key,
                        nth,
                        then: Then::Items,
                        sink: &mut *self.sink,
                    }))?,
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
            seen += 1;
        }
        Ok(())
    }
}

struct MapSeed<'p, 's, 'a, E>(Find<'p, 's, 'a, E>);

impl<'de, E> DeserializeSeed<'de> for MapSeed<'_, '_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self.0)
    }
}

struct SeqSeed<'s, 'a, E> {
    sink: &'s mut Sink<'a, E>,
}

impl<'de, E> DeserializeSeed<'de> for SeqSeed<'_, '_, E> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(Items { sink: self.sink })
    }
}

/// The list: each item read on its own into a [`User`] and handed to the callback.
struct Items<'s, 'a, E> {
    sink: &'s mut Sink<'a, E>,
}

impl<'de, E> Visitor<'de> for Items<'_, '_, E> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the list located in the first pass")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let sink = self.sink;
        let mut i = 0usize;
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            let stop = match user_of(&item, &sink.json_path, i, sink.keys) {
                Ok(user) => (sink.on_user)(user).err().map(StreamError::Stopped),
                Err(e) => Some(StreamError::Decode(e)),
            };
            if let Some(stop) = stop {
                sink.failed = Some(stop);
                return Err(de::Error::custom("stopped"));
            }
            i += 1;
        }
        Ok(())
    }
}

/// One list item as a [`User`].
fn user_of(
    item: &serde_json::Value,
    path: &str,
    i: usize,
    keys: &UsersKeys,
) -> Result<User, DecodeError> {
    let obj = item.as_object().ok_or_else(|| DecodeError::Shape {
        path: format!("{path}[{i}]"),
        looked_for: "a user object".into(),
        found: json_type(item).into(),
    })?;
    let id = keys
        .id_keys
        .iter()
        .find_map(|k| obj.get(k).and_then(scalar_text))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| DecodeError::Shape {
            path: format!("{path}[{i}]"),
            looked_for: format!("a user id under {}", quoted_list(&keys.id_keys)),
            found: format!(
                "keys {}",
                obj.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
    let text_of = |names: &[&str]| names.iter().find_map(|k| obj.get(*k).and_then(scalar_text));
    let attributes = match obj.get("attributes") {
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = scalar_text(v).unwrap_or_else(|| v.to_string());
                (k.clone(), v)
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(User {
        channel_user_id: id,
        channel: text_of(&["channel", "channelName", "platform"]),
        user_name: text_of(&["user_name", "userName", "name"]),
        attributes,
        matched_filters: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_reader_accepts_documented_variants() {
        let k = UsersKeys::default();
        let bodies: [&[u8]; 5] = [
            br#"{"users":[{"channel_user_id":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}"#,
            br#"[{"channelUserId":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]"#,
            br#"{"responseObject":[{"user_id":9195,"channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}"#,
            br#"{"responseObject":{"content":[{"channel_user_id":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}}"#,
            br#"{"responseObject":{"users":[{"channel_user_id":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}}"#,
        ];
        for body in bodies {
            let users = parse_users(body, &k).unwrap();
            assert_eq!(users.len(), 1);
            assert_eq!(users[0].channel_user_id, "9195");
            assert_eq!(users[0].channel.as_deref(), Some("whatsapp"));
            assert_eq!(
                users[0].attributes,
                vec![("feedback".into(), "1".into()), ("n".into(), "2".into())]
            );
        }
    }

    #[test]
    fn users_reader_names_keys_for_unknown_shapes() {
        let k = UsersKeys::default();
        let err = parse_users(br#"{"data":{"rows":[]}}"#, &k).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`users`") && text.contains("data"), "{text}");
        let err = parse_users(br#"{"users":[{"phone":"1"}]}"#, &k).unwrap_err();
        assert!(err.to_string().contains("channel_user_id"), "{err}");
        assert!(err.to_string().contains("phone"), "{err}");
    }

    #[test]
    fn users_reader_finds_the_list_without_a_tree_of_the_body() {
        let k = UsersKeys::default();
        let ids = |body: &[u8]| -> Vec<String> {
            parse_users(body, &k)
                .unwrap()
                .into_iter()
                .map(|u| u.channel_user_id)
                .collect()
        };
        // A repeated key keeps its last value, as a serde_json::Map does.
        assert_eq!(
            ids(br#"{"users":[{"user_id":"1"}],"users":[{"user_id":"2"}]}"#),
            ["2"]
        );
        // A list key that holds no list falls through to responseObject.
        assert_eq!(
            ids(br#"{"users":{"n":1},"responseObject":{"content":[{"user_id":3}]}}"#),
            ["3"]
        );
        // Deep nesting beside the list is skipped, not parsed into a tree.
        let deep = format!(
            r#"{{"meta":{}1{},"users":[{{"user_id":"4"}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(ids(deep.as_bytes()), ["4"]);
        // Inside a user it is too deep to read, as are numbers out of range.
        let deep_user = format!(
            r#"[{{"user_id":"5","attributes":{{"x":{}1{}}}}}]"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for bad in [deep_user.as_bytes(), br#"[{"user_id":1e400}]"#] {
            assert!(matches!(
                parse_users(bad, &k),
                Err(DecodeError::Syntax { .. })
            ));
        }
        // Keys are named sorted, the path and index of a bad item given.
        let err = parse_users(br#"{"z":1,"a":2}"#, &k).unwrap_err();
        assert!(err.to_string().ends_with("found keys a, z"), "{err}");
        let err = parse_users(br#"{"responseObject":{"b":[],"a":[]}}"#, &k).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Shape { path, found, .. }
            if path == "$.responseObject" && found == "keys a, b"),
            "{err}"
        );
        let err = parse_users(br#"{"users":[{"user_id":"1"},7]}"#, &k).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Shape { path, found, .. }
            if path == "$.users[1]" && found == "a number"),
            "{err}"
        );
        assert!(matches!(
            parse_users(b"null", &k),
            Err(DecodeError::Shape { found, .. }) if found == "null"
        ));
    }

    #[test]
    fn a_spooled_body_is_streamed_user_by_user_and_the_callback_can_stop_it() {
        use std::io::Write;
        let k = UsersKeys::default();
        let body = br#"{"meta":{"n":[1,2]},"users":[{"user_id":"a"},{"user_id":"b"},{"user_id":"c"}],"responseObject":{"content":[]}}"#;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(body).unwrap();
        let path = locate_file(&f, &k).unwrap();
        assert_eq!(
            path,
            ListPath::Key {
                key: "users".into(),
                nth: 0
            }
        );
        let mut ids = Vec::new();
        let mut keep = |u: User| -> Result<(), &'static str> {
            ids.push(u.channel_user_id);
            if ids.len() == 2 { Err("full") } else { Ok(()) }
        };
        match stream_file(&f, &path, &k, &mut keep) {
            Err(StreamError::Stopped("full")) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(ids, ["a", "b"]);
        // A body cut short is found by the first pass, before any user is taken: retryable.
        f.set_len(body.len() as u64 - 20).unwrap();
        let err = locate_file(&f, &k).unwrap_err();
        assert!(err.is_retryable(), "{err}");
        // The nested and repeated shapes are found in a spooled body as in memory.
        let nested = br#"{"responseObject":{"users":[{"user_id":"x"}],"content":{},"content":[{"user_id":"y"}]}}"#;
        let mut g = tempfile::tempfile().unwrap();
        g.write_all(nested).unwrap();
        let path = locate_file(&g, &k).unwrap();
        let mut got = Vec::new();
        stream_file(&g, &path, &k, &mut |u: User| -> Result<(), ()> {
            got.push(u.channel_user_id);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, ["y"]);
    }
}
