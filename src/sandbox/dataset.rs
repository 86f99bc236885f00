//! The sandbox's data: users and their messages, deterministic for a seed.
//!
//! Each user's history is generated from their own ChaCha8 stream (seed, user index), so a user
//! looks the same whatever the number of users. Conversations come from the vendored corpus
//! (real human chats, 28 languages) and are mixed with the bot-side message types of the
//! contract (docs/engati-api.md): OPTIONS lists (with emoji), FILE_RECEIVED with a `file` object,
//! AGENT_PARTICIPATION_STATUS with HTML inside a JSON string, agent replies with HTML, media
//! types, unknown types, timestamps in every documented form and offset, 20 KB messages,
//! several messages in the same millisecond (some identical), and messages exactly on UTC
//! midnight. Messages are kept sorted by time; ties keep their insertion order.

use std::borrow::Cow;
use std::sync::RwLock;

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::corpus::{Conversation, conversations};
use crate::time::{DAY_MS, civil_from_days, day_of};

/// How the sandbox generates data. All fields have defaults ([`DataConfig::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// Seed: the same seed gives the same users, messages, ids and keys.
    pub seed: u64,
    /// Number of users.
    pub users: usize,
    /// First day of generated history, ms since epoch UTC (a UTC midnight).
    pub start_ms: i64,
    /// Days of history.
    pub days: u32,
    /// Average conversation sessions per user over the whole history.
    pub sessions_per_user: f64,
    /// Share of users who are dense: they average `dense_sessions_per_user` sessions instead
    /// (a realistic skew: most users sparse, a few very busy); default 0.
    pub dense_user_rate: f64,
    /// Average sessions of a dense user over the whole history.
    pub dense_sessions_per_user: f64,
    /// Share of messages whose timestamp is garbage (for dead-letter tests); default 0.
    pub malformed_rate: f64,
    /// Share of messages with a message type outside the contract (`LOCATION`, `CAROUSEL`).
    pub unknown_type_rate: f64,
    /// Share of user messages that are 20 KB pastes.
    pub long_message_rate: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            seed: 42,
            users: 50,
            start_ms: crate::time::days_from_civil(2026, 8, 1) * DAY_MS,
            days: 31,
            sessions_per_user: 6.0,
            dense_user_rate: 0.0,
            dense_sessions_per_user: 0.0,
            malformed_rate: 0.0,
            unknown_type_rate: 0.003,
            long_message_rate: 0.002,
        }
    }
}

/// A sandbox user as the Users API lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxUser {
    /// WhatsApp: `91` + 10 digits; web: a UUID; telegram: 10 digits.
    pub channel_user_id: String,
    /// `whatsapp`, `web` or `telegram`.
    pub channel: &'static str,
    /// A display name.
    pub user_name: String,
    /// `feedback` (1-5), `segment` (vip/regular/new), `opt1` (yes/no), `city`, `language`,
    /// and `email` for some users.
    pub attributes: Vec<(String, String)>,
}

/// The `file` object of a FILE_RECEIVED message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// URL (with the platform's mangled extension).
    pub url: String,
    /// MIME type.
    #[serde(rename = "mimeType")]
    pub mime_type: String,
    /// IMAGE / DOCUMENT / ...
    #[serde(rename = "uploadType")]
    pub upload_type: String,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The instant, ms since epoch UTC.
    pub ts_ms: i64,
    /// How `timestamp` is rendered: index into [`TS_FORMS`], or [`MALFORMED`].
    pub ts_form: u8,
    /// `user`, `bot`, `agent`, ...
    pub sender: &'static str,
    /// `TEXT`, `OPTIONS`, ...
    pub message_type: &'static str,
    /// The `response` string.
    pub response: Cow<'static, str>,
    /// The message's `user_id` (a web-session UUID).
    pub session_uuid: u128,
    /// The `file` object, for FILE_RECEIVED.
    pub file: Option<Box<FileInfo>>,
    /// Adds an unknown field (`wa_message_id`) to the JSON, to check raw_json keeps it.
    pub extra_field: bool,
}

/// Timestamp forms: (date separator, UTC offset in minutes).
pub const TS_FORMS: [(char, i32); 5] = [('-', 330), ('-', 0), ('/', 330), ('-', -300), ('-', 60)];
/// `ts_form` of a garbage timestamp.
pub const MALFORMED: u8 = 255;

impl StoredMessage {
    /// The `timestamp` string as the API renders it.
    pub fn timestamp_string(&self) -> String {
        if self.ts_form == MALFORMED {
            return format!("{}T99:99", crate::time::date_string(self.ts_ms));
        }
        let (sep, off) = TS_FORMS[usize::from(self.ts_form) % TS_FORMS.len()];
        let local = self.ts_ms + i64::from(off) * 60_000;
        let (y, m, d) = civil_from_days(day_of(local));
        let in_day = local.rem_euclid(DAY_MS);
        let sign = if off < 0 { '-' } else { '+' };
        format!(
            "{y:04}{sep}{m:02}{sep}{d:02} {:02}:{:02}:{:02}.{:03}{sign}{:02}{:02}",
            in_day / 3_600_000,
            in_day / 60_000 % 60,
            in_day / 1000 % 60,
            in_day % 1000,
            off.abs() / 60,
            off.abs() % 60
        )
    }

    /// The message's `user_id` string (UUID form).
    pub fn user_id_string(&self) -> String {
        let h = format!("{:032x}", self.session_uuid);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// Serializable wire view of this message.
    pub fn wire(&self) -> WireView<'_> {
        let is_status = self.message_type == "AGENT_PARTICIPATION_STATUS";
        WireView {
            sender: self.sender,
            message_type: self.message_type,
            response: &self.response,
            timestamp: self.timestamp_string(),
            user_id: self.user_id_string(),
            file: if is_status {
                None
            } else {
                Some(self.file.as_deref())
            },
            attachments: if is_status { None } else { Some(()) },
            wa_message_id: self.extra_field.then(|| {
                format!(
                    "wamid.{:016x}",
                    self.session_uuid as u64 ^ self.ts_ms as u64
                )
            }),
        }
    }
}

/// A message as JSON on the wire (field order as in docs/engati-api.md).
#[derive(Serialize)]
pub struct WireView<'a> {
    sender: &'static str,
    message_type: &'static str,
    response: &'a str,
    timestamp: String,
    user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<Option<&'a FileInfo>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "null_unit")]
    attachments: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wa_message_id: Option<String>,
}

fn null_unit<S: serde::Serializer>(_: &Option<()>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_none()
}

/// Users and messages. Messages sit behind a lock per user so live arrivals can be added,
/// and users behind one lock so tests can change their attributes (a user joining a segment).
pub struct Dataset {
    /// The generation settings.
    pub config: DataConfig,
    users: RwLock<Vec<SandboxUser>>,
    index: std::collections::HashMap<String, usize>,
    /// Each user's messages, sorted by time (`sandbox::shift` changes them while serving).
    pub(super) messages: Vec<RwLock<Vec<StoredMessage>>>,
}

/// The index range of the messages (sorted by time) a request's bounds select: `start`
/// (inclusive unless `start_exclusive`) and `end` (exclusive unless `end_inclusive`).
pub(super) fn select(
    msgs: &[StoredMessage],
    start: Option<i64>,
    end: i64,
    start_exclusive: bool,
    end_inclusive: bool,
) -> std::ops::Range<usize> {
    let lo = match start {
        None => 0,
        Some(s) if start_exclusive => msgs.partition_point(|m| m.ts_ms <= s),
        Some(s) => msgs.partition_point(|m| m.ts_ms < s),
    };
    let hi = msgs.partition_point(|m| m.ts_ms < end || (end_inclusive && m.ts_ms == end));
    lo..hi.max(lo)
}

const NAMES: [&str; 24] = [
    "Asha",
    "Ravi",
    "Priya",
    "Arjun",
    "Meera",
    "Kiran",
    "Fatima",
    "Imran",
    "Lakshmi",
    "Vikram",
    "Ananya",
    "Rahul",
    "Zoya",
    "Karthik",
    "Divya",
    "Sanjay",
    "Aisha",
    "Rohan",
    "Nadia",
    "Suresh",
    "प्रिया",
    "கார்த்திக்",
    "عائشہ",
    "রাহুল",
];
const CITIES: [&str; 8] = [
    "Mumbai",
    "Delhi",
    "Chennai",
    "Bengaluru",
    "Kolkata",
    "Lahore",
    "Dhaka",
    "Pune",
];
const AGENTS: [&str; 4] = ["Ravi", "Neha", "Oscar", "Aarti"];
const MENU: [&str; 4] = [
    "[Track order, Talk to agent, FAQs]",
    "[Yes, No]",
    "[English, हिन्दी, தமிழ், اردو]",
    "[Check balance, Block card, Talk to agent]",
];
const RATING: &str = "[⭐, ⭐⭐, ⭐⭐⭐, ⭐⭐⭐⭐, ⭐⭐⭐⭐⭐]";
const EMOJI: [&str; 6] = [" 😊", " 👍", " 🙏", " 😂", " ❤️", " 🎉"];

fn user_rng(seed: u64, index: usize, salt: u64) -> ChaCha8Rng {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(&seed.to_le_bytes());
    h.update(&(index as u64).to_le_bytes());
    h.update(&salt.to_le_bytes());
    ChaCha8Rng::seed_from_u64(h.digest())
}

impl Dataset {
    /// Generates the dataset (cost grows with users x sessions).
    pub fn generate(config: DataConfig) -> Self {
        let corpus = conversations();
        let mut users = Vec::with_capacity(config.users);
        let mut messages = Vec::with_capacity(config.users);
        for i in 0..config.users {
            let mut rng = user_rng(config.seed, i, 1);
            let user = make_user(i, &mut rng);
            let lang = user
                .attributes
                .iter()
                .find(|(k, _)| k == "language")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            // Dense users are drawn from a stream of their own, so the other users' data does
            // not change with the skew settings.
            let dense = config.dense_user_rate > 0.0
                && user_rng(config.seed, i, 3).random_bool(config.dense_user_rate.min(1.0));
            let mut rng = user_rng(config.seed, i, 2);
            let msgs = make_history(&config, &lang, corpus, &mut rng, dense);
            users.push(user);
            messages.push(RwLock::new(msgs));
        }
        let index = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.channel_user_id.clone(), i))
            .collect();
        Dataset {
            config,
            users: RwLock::new(users),
            index,
            messages,
        }
    }

    /// All users, in index order (a copy).
    pub fn users(&self) -> Vec<SandboxUser> {
        self.users.read().expect("sandbox lock").clone()
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.messages.len()
    }

    /// The index of a user by channel-user id.
    pub fn user_index(&self, channel_user_id: &str) -> Option<usize> {
        self.index.get(channel_user_id).copied()
    }

    /// Users whose attribute `name` equals `value` (the Users API's filter), copied.
    pub fn users_matching(&self, name: &str, value: &str) -> Vec<SandboxUser> {
        self.users
            .read()
            .expect("sandbox lock")
            .iter()
            .filter(|u| u.attributes.iter().any(|(k, v)| k == name && v == value))
            .cloned()
            .collect()
    }

    /// Sets (or adds) attribute `name` of user `index`: e.g. a user joining a segment.
    pub fn set_attribute(&self, index: usize, name: &str, value: &str) {
        let mut users = self.users.write().expect("sandbox lock");
        let attrs = &mut users[index].attributes;
        match attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_owned(),
            None => attrs.push((name.to_owned(), value.to_owned())),
        }
    }

    /// Messages of user `index` with `start_ms <= ts < end_ms`, cloned, in API order.
    pub fn messages_between(&self, index: usize, start_ms: i64, end_ms: i64) -> Vec<StoredMessage> {
        let msgs = self.messages[index].read().expect("sandbox lock");
        msgs.iter()
            .filter(|m| start_ms <= m.ts_ms && m.ts_ms < end_ms)
            .cloned()
            .collect()
    }

    /// Total messages stored.
    pub fn message_count(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.read().expect("sandbox lock").len())
            .sum()
    }

    /// Runs `f` on the slice of user `index`'s messages selected by the bounds: `start`
    /// (inclusive unless `start_exclusive`) and `end` (exclusive unless `end_inclusive`).
    pub fn with_range<R>(
        &self,
        index: usize,
        start: Option<i64>,
        end: i64,
        start_exclusive: bool,
        end_inclusive: bool,
        f: impl FnOnce(&[StoredMessage]) -> R,
    ) -> R {
        let msgs = self.messages[index].read().expect("sandbox lock");
        f(&msgs[select(&msgs, start, end, start_exclusive, end_inclusive)])
    }

    /// A new live message for user `index` at `ts_ms` (text from the corpus), deterministic in
    /// (seed, index, `n`).
    pub fn live_message(&self, index: usize, ts_ms: i64, n: u64) -> StoredMessage {
        let mut rng = user_rng(self.config.seed, index, 1000 + n);
        let conv = &conversations()[rng.random_range(0..conversations().len())];
        let turn = &conv.turns[rng.random_range(0..conv.turns.len())];
        StoredMessage {
            ts_ms,
            ts_form: rng.random_range(0..TS_FORMS.len() as u8),
            sender: if turn.0 == 0 { "user" } else { "bot" },
            message_type: "TEXT",
            response: Cow::Borrowed(turn.2.as_str()),
            session_uuid: rng.random(),
            file: None,
            extra_field: false,
        }
    }
}

fn make_user(i: usize, rng: &mut ChaCha8Rng) -> SandboxUser {
    let channel_roll = rng.random_range(0..10u32);
    let (channel, channel_user_id) = match channel_roll {
        0..=6 => (
            "whatsapp",
            format!(
                "91{:010}",
                7_000_000_000u64 + (i as u64 * 104_729) % 2_999_999_999
            ),
        ),
        7 | 8 => {
            let v: u128 = rng.random();
            let h = format!("{v:032x}");
            (
                "web",
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ),
            )
        }
        _ => (
            "telegram",
            format!("5{:09}", (i as u64 * 7_919) % 1_000_000_000),
        ),
    };
    let name = NAMES[rng.random_range(0..NAMES.len())];
    let language = match rng.random_range(0..10u32) {
        0..=5 => "en",
        6 => "hi",
        7 => "ta",
        8 => "ur",
        _ => "bn",
    };
    let segment = match rng.random_range(0..10u32) {
        0 => "vip",
        1..=3 => "new",
        _ => "regular",
    };
    let mut attributes = vec![
        (
            "feedback".to_owned(),
            rng.random_range(1..=5u32).to_string(),
        ),
        ("segment".to_owned(), segment.to_owned()),
        (
            "opt1".to_owned(),
            if rng.random_bool(0.5) { "yes" } else { "no" }.to_owned(),
        ),
        (
            "city".to_owned(),
            CITIES[rng.random_range(0..CITIES.len())].to_owned(),
        ),
        ("language".to_owned(), language.to_owned()),
    ];
    if rng.random_bool(0.6) {
        attributes.push((
            "email".to_owned(),
            format!("{}.{}@example.com", name_ascii(name, i), i),
        ));
    }
    SandboxUser {
        channel_user_id,
        channel,
        user_name: name.to_owned(),
        attributes,
    }
}

fn name_ascii(name: &str, i: usize) -> String {
    if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        format!("user{i}")
    }
}

fn make_history(
    cfg: &DataConfig,
    lang: &str,
    corpus: &'static [Conversation],
    rng: &mut ChaCha8Rng,
    dense: bool,
) -> Vec<StoredMessage> {
    let mean = if dense {
        cfg.dense_sessions_per_user
    } else {
        cfg.sessions_per_user
    }
    .max(0.0);
    let sessions = rng.random_range(0.0..=(2.0 * mean)).round() as u32;
    let mut out = Vec::new();
    for _ in 0..sessions {
        let day = rng.random_range(0..cfg.days.max(1));
        let day_start = cfg.start_ms + i64::from(day) * DAY_MS;
        // Most sessions in daytime IST; some start exactly on UTC midnight.
        let start = if rng.random_bool(0.05) {
            day_start
        } else {
            day_start + rng.random_range(0..DAY_MS)
        };
        session(cfg, lang, corpus, rng, start, &mut out);
    }
    out.sort_by_key(|m| m.ts_ms);
    out
}

/// Appends the messages of one session to `out`: who spoke, when, what, in the session's
/// timestamp form.
struct SessionOut<'a> {
    cfg: &'a DataConfig,
    session_uuid: u128,
    ts_form: u8,
    out: &'a mut Vec<StoredMessage>,
}

impl SessionOut<'_> {
    fn push(
        &mut self,
        rng: &mut ChaCha8Rng,
        ts_ms: i64,
        sender: &'static str,
        message_type: &'static str,
        response: Cow<'static, str>,
        file: Option<Box<FileInfo>>,
    ) {
        let cfg = self.cfg;
        let malformed = cfg.malformed_rate > 0.0 && rng.random_bool(cfg.malformed_rate.min(1.0));
        let unknown =
            cfg.unknown_type_rate > 0.0 && rng.random_bool(cfg.unknown_type_rate.min(1.0));
        self.out.push(StoredMessage {
            ts_ms,
            ts_form: if malformed { MALFORMED } else { self.ts_form },
            sender,
            message_type: if unknown {
                if rng.random_bool(0.5) {
                    "LOCATION"
                } else {
                    "CAROUSEL"
                }
            } else {
                message_type
            },
            response,
            session_uuid: self.session_uuid,
            file,
            extra_field: rng.random_bool(0.1),
        });
    }

    /// A customer's turn, sometimes with an uploaded file.
    fn user_turn(&mut self, rng: &mut ChaCha8Rng, ts: i64, text: &'static str) {
        let cfg = self.cfg;
        let response: Cow<'static, str> =
            if cfg.long_message_rate > 0.0 && rng.random_bool(cfg.long_message_rate.min(1.0)) {
                Cow::Owned(long_paste(text, rng))
            } else if rng.random_bool(0.08) {
                Cow::Owned(format!("{text}{}", EMOJI[rng.random_range(0..EMOJI.len())]))
            } else {
                Cow::Borrowed(text)
            };
        self.push(rng, ts, "user", "TEXT", response, None);
        if rng.random_bool(0.03) {
            let n = rng.random_range(1..999u32);
            let (name, mime, kind) = if rng.random_bool(0.7) {
                (format!("IMG_{n:03}.jpeg"), "image/jpeg", "IMAGE")
            } else {
                (format!("invoice_{n}.pdf"), "application/pdf", "DOCUMENT")
            };
            let file = FileInfo {
                url: format!(
                    "https://files.engati.example/{name}-{:05X}.{}",
                    rng.random_range(0..0xFFFFFu32),
                    name.rsplit('.').next().unwrap_or("bin")
                ),
                mime_type: mime.to_owned(),
                upload_type: kind.to_owned(),
            };
            let placeholder = Cow::Owned(format!("User uploaded {name} - [{mime}]"));
            self.push(
                rng,
                ts + 1500,
                "user",
                "FILE_RECEIVED",
                placeholder,
                Some(Box::new(file)),
            );
        }
    }

    /// A bot's (or, once an agent joined, the agent's) turn: sometimes duplicated in the same
    /// millisecond, sometimes followed by a media message.
    fn bot_turn(&mut self, rng: &mut ChaCha8Rng, ts: i64, text: &'static str, agent: bool) {
        let response: Cow<'static, str> = if agent && rng.random_bool(0.3) {
            Cow::Owned(format!("<p>{}</p>", html_escape::encode_text(text)))
        } else {
            Cow::Borrowed(text)
        };
        let sender = if agent { "agent" } else { "bot" };
        self.push(rng, ts, sender, "TEXT", response.clone(), None);
        // The same bot message twice in one millisecond (an identical duplicate), or a
        // different one in the same millisecond.
        let roll = rng.random_range(0..100u32);
        if roll < 2 {
            self.push(rng, ts, sender, "TEXT", response, None);
        } else if roll < 4 {
            self.push(rng, ts, "bot", "OPTIONS", Cow::Borrowed(MENU[1]), None);
        }
        if rng.random_bool(0.02) {
            let kind = ["IMAGE", "VIDEO", "AUDIO", "DOCUMENT"][rng.random_range(0..4)];
            let url = format!(
                "https://cdn.engati.example/media/{:08x}",
                rng.random::<u32>()
            );
            self.push(rng, ts + 10, "bot", kind, Cow::Owned(url), None);
        }
    }

    /// An agent joining the conversation (an AGENT_PARTICIPATION_STATUS event).
    fn agent_joins(&mut self, rng: &mut ChaCha8Rng, ts: i64) {
        let name = AGENTS[rng.random_range(0..AGENTS.len())];
        let json = format!(
            "{{\"agentId\":{},\"PARTICIPATION_MESSAGE\":\"<strong>{name}</strong> joined the conversation\"}}",
            rng.random_range(1000..9999)
        );
        self.push(
            rng,
            ts,
            "bot",
            "AGENT_PARTICIPATION_STATUS",
            Cow::Owned(json),
            None,
        );
    }
}

fn session(
    cfg: &DataConfig,
    lang: &str,
    corpus: &'static [Conversation],
    rng: &mut ChaCha8Rng,
    start: i64,
    out: &mut Vec<StoredMessage>,
) {
    let conv = pick_conversation(corpus, lang, rng);
    let session_uuid: u128 = rng.random();
    let ts_form = rng.random_range(0..TS_FORMS.len() as u8);
    let mut s = SessionOut {
        cfg,
        session_uuid,
        ts_form,
        out,
    };
    // The bot opens with a menu, at the session start (which may be exactly UTC midnight).
    let menu = MENU[rng.random_range(0..MENU.len())];
    s.push(rng, start, "bot", "OPTIONS", Cow::Borrowed(menu), None);
    let agent_from = if rng.random_bool(0.25) {
        Some(rng.random_range(0..conv.turns.len().max(1)))
    } else {
        None
    };
    let mut last = start;
    for (i, (speaker, offset, text)) in conv.turns.iter().enumerate() {
        let ts = start + 1000 + *offset as i64 + rng.random_range(0..1000);
        last = last.max(ts);
        if agent_from == Some(i) {
            s.agent_joins(rng, ts - 1);
        }
        if *speaker == 0 {
            s.user_turn(rng, ts, text.as_str());
        } else {
            s.bot_turn(rng, ts, text.as_str(), agent_from.is_some_and(|a| i >= a));
        }
    }
    if rng.random_bool(0.3) {
        s.push(
            rng,
            last + 5000,
            "bot",
            "OPTIONS",
            Cow::Borrowed(RATING),
            None,
        );
        let stars = "⭐".repeat(rng.random_range(1..=5));
        let at = last + 9000 + rng.random_range(0..20_000);
        s.push(rng, at, "user", "TEXT", Cow::Owned(stars), None);
    }
}

fn pick_conversation<'c>(
    corpus: &'c [Conversation],
    lang: &str,
    rng: &mut ChaCha8Rng,
) -> &'c Conversation {
    if lang != "en" && rng.random_bool(0.5) {
        let same: Vec<&Conversation> = corpus.iter().filter(|c| c.lang == lang).collect();
        if !same.is_empty() {
            return same[rng.random_range(0..same.len())];
        }
    }
    &corpus[rng.random_range(0..corpus.len())]
}

fn long_paste(seed_text: &str, rng: &mut impl Rng) -> String {
    let mut s = String::with_capacity(20_600);
    let corpus = conversations();
    s.push_str(seed_text);
    while s.len() < 20_480 {
        let c = &corpus[rng.random_range(0..corpus.len())];
        for t in &c.turns {
            s.push('\n');
            s.push_str(&t.2);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_users_are_independent_of_count() {
        let a = Dataset::generate(DataConfig {
            users: 5,
            ..Default::default()
        });
        let b = Dataset::generate(DataConfig {
            users: 8,
            ..Default::default()
        });
        assert_eq!(a.users(), b.users()[..5].to_vec());
        for i in 0..5 {
            assert_eq!(
                a.messages_between(i, i64::MIN, i64::MAX),
                b.messages_between(i, i64::MIN, i64::MAX)
            );
        }
    }

    #[test]
    fn data_has_the_edge_cases_tests_rely_on() {
        let d = Dataset::generate(DataConfig {
            users: 60,
            long_message_rate: 0.01,
            ..Default::default()
        });
        let all: Vec<StoredMessage> = (0..60)
            .flat_map(|i| d.messages_between(i, i64::MIN, i64::MAX))
            .collect();
        assert!(
            all.iter().any(|m| m.ts_ms % DAY_MS == 0),
            "a message on UTC midnight"
        );
        assert!(
            all.iter().any(|m| m.response.len() >= 20_000),
            "a 20 KB message"
        );
        assert!(
            all.iter()
                .any(|m| m.message_type == "FILE_RECEIVED" && m.file.is_some())
        );
        assert!(
            all.iter()
                .any(|m| m.message_type == "AGENT_PARTICIPATION_STATUS")
        );
        assert!(all.iter().any(|m| m.response.contains('⭐')));
        assert!(
            all.iter()
                .any(|m| !m.response.is_ascii() && !m.response.contains('⭐'))
        );
        let same_ms_identical = (0..60).any(|i| {
            d.messages_between(i, i64::MIN, i64::MAX)
                .windows(2)
                .any(|w| {
                    w[0].ts_ms == w[1].ts_ms
                        && w[0].response == w[1].response
                        && w[0].sender == w[1].sender
                        && w[0].message_type == w[1].message_type
                })
        });
        assert!(same_ms_identical, "identical messages in one millisecond");
        let forms: std::collections::HashSet<u8> = all.iter().map(|m| m.ts_form).collect();
        assert!(forms.len() >= 4);
    }

    #[test]
    fn timestamps_render_in_the_documented_form() {
        let m = StoredMessage {
            ts_ms: crate::time::days_from_civil(2026, 8, 12) * DAY_MS + 30_807_512,
            ts_form: 0,
            sender: "user",
            message_type: "TEXT",
            response: Cow::Borrowed("hi"),
            session_uuid: 1,
            file: None,
            extra_field: false,
        };
        assert_eq!(m.timestamp_string(), "2026-08-12 14:03:27.512+0530");
        let slash = StoredMessage {
            ts_form: 2,
            ..m.clone()
        };
        assert_eq!(slash.timestamp_string(), "2026/08/12 14:03:27.512+0530");
        let west = StoredMessage { ts_form: 3, ..m };
        assert_eq!(west.timestamp_string(), "2026-08-12 03:33:27.512-0500");
    }
}
