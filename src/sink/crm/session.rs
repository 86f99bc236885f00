//! Conversation sessions and their transcripts (pure: no I/O).
//!
//! A user's messages are grouped into sessions: a new session starts after an inactivity gap
//! (default 30 minutes). A session becomes one CRM activity whose body is a readable
//! transcript (time, who, text; files as links; options listed), timestamped at the session
//! start, with a stable key. Sessions only grow: a message within the gap of an existing
//! session joins it (the activity is updated), others start new sessions; two existing
//! sessions are never merged, so activity ids stay stable across runs.

use std::fmt::Write as _;

use xxhash_rust::xxh3::Xxh3Default;

use crate::time::{DAY_MS, civil_from_days, day_of};

/// One transcript line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The message's `message_id`.
    pub message_id: String,
    /// Its time, ms since epoch UTC.
    pub sent_at_ms: i64,
    /// Its position in the API's answer for its window (the tie-breaker after the time: a
    /// question and its answer often share a millisecond).
    pub position: u32,
    /// `Customer: text` style line without the time (rendered in front at render time).
    pub text: String,
}

/// Orders lines as the conversation happened: by time, then by the API's order for ties.
pub fn sort_lines(lines: &mut [Line]) {
    lines.sort_by_key(|l| (l.sent_at_ms, l.position));
}

/// A session: a key and its lines, sorted by time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Stable key (16 hex chars).
    pub key: String,
    /// Lines, by (time, position in the API's answer).
    pub lines: Vec<Line>,
}

impl Session {
    /// First message time (ms since epoch UTC).
    pub fn start_ms(&self) -> i64 {
        self.lines.first().map_or(0, |l| l.sent_at_ms)
    }
    /// Last message time.
    pub fn end_ms(&self) -> i64 {
        self.lines.last().map_or(0, |l| l.sent_at_ms)
    }
}

/// The fields of a message a transcript needs.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    /// `message_id`.
    pub message_id: &'a str,
    /// `sent_at`, ms.
    pub sent_at_ms: i64,
    /// `position`.
    pub position: u32,
    /// `sender`.
    pub sender: Option<&'a str>,
    /// `direction`.
    pub direction: &'a str,
    /// `message_type`.
    pub message_type: Option<&'a str>,
    /// `text`.
    pub text: Option<&'a str>,
    /// `file_url`.
    pub file_url: Option<&'a str>,
    /// `file_mime_type`.
    pub file_mime_type: Option<&'a str>,
}

/// The transcript line of a message: `Customer: ...`, `Bot: ...`, `Agent: ...`, `— event`.
pub fn line_of(m: &MessageView<'_>) -> Line {
    let who = match (m.direction, m.sender) {
        ("event", _) => "—",
        ("inbound", _) => "Customer",
        (_, Some(s)) if s.eq_ignore_ascii_case("agent") => "Agent",
        _ => "Bot",
    };
    let mut text = String::new();
    match m.message_type {
        Some("OPTIONS") => {
            let _ = write!(text, "Options: {}", m.text.unwrap_or(""));
        }
        _ => text.push_str(m.text.unwrap_or("")),
    }
    if let Some(url) = m.file_url {
        if !text.is_empty() {
            text.push(' ');
        }
        match m.file_mime_type {
            Some(mime) => {
                let _ = write!(text, "[file {mime}: {url}]");
            }
            None => {
                let _ = write!(text, "[file: {url}]");
            }
        }
    }
    if let Some(t) = m.message_type.filter(|t| {
        !matches!(
            *t,
            "TEXT" | "OPTIONS" | "FILE_RECEIVED" | "AGENT_PARTICIPATION_STATUS"
        )
    }) {
        text.insert_str(0, &format!("[{t}] "));
    }
    let text = if who == "—" {
        format!("— {text}")
    } else {
        format!("{who}: {text}")
    };
    Line {
        message_id: m.message_id.to_owned(),
        sent_at_ms: m.sent_at_ms,
        position: m.position,
        text,
    }
}

/// The key of a session started by `first_message_id` (16 hex chars).
pub fn session_key(bot_key: &str, user: &str, first_message_id: &str) -> String {
    let mut h = Xxh3Default::new();
    for part in [bot_key, user, first_message_id] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("{:016x}", h.digest())
}

/// An existing session of the user (from the ledger): its key and time span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Key.
    pub key: String,
    /// First message time.
    pub start_ms: i64,
    /// Last message time.
    pub end_ms: i64,
}

/// Where new lines went: grown known sessions and new sessions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// (known session key, its new lines).
    pub joined: Vec<(String, Vec<Line>)>,
    /// New sessions' lines.
    pub fresh: Vec<Vec<Line>>,
}

/// Where new lines go. A line joins the first known
/// session whose `[start - gap, end + gap]` contains it (which then grows); the remaining
/// lines are split into new sessions wherever two consecutive lines are more than `gap`
/// apart. Lines must be sorted by (time, position).
pub fn assign(lines: Vec<Line>, known: &[Known], gap_ms: i64) -> Assignment {
    let mut joined: Vec<(String, Vec<Line>)> = Vec::new();
    let mut fresh: Vec<Vec<Line>> = Vec::new();
    let mut spans: Vec<Known> = known.to_vec();
    for line in lines {
        let t = line.sent_at_ms;
        if let Some(i) = spans
            .iter()
            .position(|k| k.start_ms - gap_ms <= t && t <= k.end_ms + gap_ms)
        {
            let k = &mut spans[i];
            k.start_ms = k.start_ms.min(t);
            k.end_ms = k.end_ms.max(t);
            match joined.iter_mut().find(|(key, _)| *key == k.key) {
                Some((_, v)) => v.push(line),
                None => joined.push((k.key.clone(), vec![line])),
            }
            continue;
        }
        match fresh.last_mut() {
            Some(cur) if t - cur.last().map_or(t, |l| l.sent_at_ms) <= gap_ms => cur.push(line),
            _ => fresh.push(vec![line]),
        }
    }
    Assignment { joined, fresh }
}

/// How a transcript is rendered for a CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Plain text, one line per message (BottleCRM).
    Plain,
    /// HTML, one `<p>` per message (HubSpot's rich-text body).
    Html,
}

fn hhmmss(ms: i64) -> String {
    let t = ms.rem_euclid(DAY_MS) / 1000;
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

fn ymd(ms: i64) -> String {
    let (y, m, d) = civil_from_days(day_of(ms));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The header of a transcript: `Engati conversation · WhatsApp · 2026-08-12 14:03–14:20 UTC ·
/// 12 messages · session <key>` (with `part k of n` when split).
pub fn header(channel: &str, s: &Session, part: usize, parts: usize) -> String {
    let mut h = format!(
        "Engati conversation · {channel} · {} {}–{} UTC · {} messages · session {}",
        ymd(s.start_ms()),
        &hhmmss(s.start_ms())[..5],
        &hhmmss(s.end_ms())[..5],
        s.lines.len(),
        s.key
    );
    if parts > 1 {
        let _ = write!(h, " · part {part} of {parts}");
    }
    h
}

/// Renders a session into bodies of at most `max_chars` characters each: lines packed into
/// parts by [`parts::pack`](super::parts::pack) (each part filled before the next; a long
/// message continues into the next part; nothing cut before
/// [`MAX_PARTS`](super::parts::MAX_PARTS) parts), each with its header.
pub fn render(channel: &str, s: &Session, style: Style, max_chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::with_capacity(s.lines.len());
    let mut day = None;
    for l in &s.lines {
        let d = day_of(l.sent_at_ms);
        let stamp = if day == Some(d) {
            hhmmss(l.sent_at_ms)
        } else {
            day = Some(d);
            format!("{} {}", ymd(l.sent_at_ms), hhmmss(l.sent_at_ms))
        };
        lines.push(format!("{stamp} {}", l.text));
    }
    // Leave room for the header (at most ~200 chars) and separators.
    let budget = max_chars.saturating_sub(260).max(200);
    let parts = super::parts::pack(lines, style, budget);
    let total = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, lines)| {
            let h = header(channel, s, i + 1, total);
            match style {
                Style::Plain => format!("{h}\n\n{}", lines.join("\n")),
                Style::Html => {
                    let mut body =
                        format!("<p><strong>{}</strong></p>", html_escape::encode_text(&h));
                    for l in &lines {
                        body.push_str("<p>");
                        body.push_str(&html_escape::encode_text(l));
                        body.push_str("</p>");
                    }
                    body
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, t: i64) -> Line {
        Line {
            message_id: id.into(),
            sent_at_ms: t,
            position: 0,
            text: format!("Customer: m{id}"),
        }
    }

    const MIN: i64 = 60_000;

    #[test]
    fn lines_render_who_and_what() {
        let m = MessageView {
            message_id: "a",
            sent_at_ms: 0,
            position: 0,
            sender: Some("bot"),
            direction: "outbound",
            message_type: Some("OPTIONS"),
            text: Some("Track order | Talk to agent"),
            file_url: None,
            file_mime_type: None,
        };
        assert_eq!(
            line_of(&m).text,
            "Bot: Options: Track order | Talk to agent"
        );
        let f = MessageView {
            sender: Some("user"),
            direction: "inbound",
            message_type: Some("FILE_RECEIVED"),
            text: Some("User uploaded a.jpeg - [image/jpeg]"),
            file_url: Some("https://x/a.jpeg"),
            file_mime_type: Some("image/jpeg"),
            ..m
        };
        assert_eq!(
            line_of(&f).text,
            "Customer: User uploaded a.jpeg - [image/jpeg] [file image/jpeg: https://x/a.jpeg]"
        );
        let e = MessageView {
            direction: "event",
            message_type: Some("AGENT_PARTICIPATION_STATUS"),
            text: Some("Ravi joined the conversation"),
            ..m
        };
        assert_eq!(line_of(&e).text, "— Ravi joined the conversation");
        let a = MessageView {
            sender: Some("agent"),
            message_type: Some("TEXT"),
            text: Some("Hello"),
            ..m
        };
        assert_eq!(line_of(&a).text, "Agent: Hello");
        let u = MessageView {
            message_type: Some("LOCATION"),
            text: Some("12.9,77.6"),
            ..m
        };
        assert_eq!(line_of(&u).text, "Bot: [LOCATION] 12.9,77.6");
    }

    #[test]
    fn a_gap_starts_a_new_session_and_known_sessions_grow() {
        let lines = vec![
            line("1", 0),
            line("2", 10 * MIN),
            line("3", 45 * MIN),
            line("4", 200 * MIN),
        ];
        let Assignment { joined, fresh } = assign(lines.clone(), &[], 30 * MIN);
        assert!(joined.is_empty());
        assert_eq!(
            fresh.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        // A known session ending at -5 min absorbs lines within 30 min of it.
        let known = [Known {
            key: "k".into(),
            start_ms: -60 * MIN,
            end_ms: -5 * MIN,
        }];
        let Assignment { joined, fresh } = assign(lines, &known, 30 * MIN);
        assert_eq!(joined.len(), 1);
        assert_eq!(
            joined[0].1.len(),
            2,
            "0 and 10 min chain onto the known session; 45 min is 35 min after 10"
        );
        assert_eq!(fresh.len(), 2);
    }

    #[test]
    fn long_transcripts_split_into_parts_under_the_limit() {
        let lines: Vec<Line> = (0..300)
            .map(|i| Line {
                message_id: i.to_string(),
                sent_at_ms: i * 1000,
                position: 0,
                text: format!("Customer: {}", "x".repeat(100)),
            })
            .collect();
        let s = Session {
            key: "abc".into(),
            lines,
        };
        for style in [Style::Plain, Style::Html] {
            let parts = render("WhatsApp", &s, style, 10_000);
            assert!(parts.len() >= 3, "{}", parts.len());
            assert!(parts.iter().all(|p| p.chars().count() <= 10_000));
            assert!(parts[1].contains("part 2 of"));
            let all: usize = parts.iter().map(|p| p.matches("Customer:").count()).sum();
            assert_eq!(all, 300, "no line lost");
        }
        let huge = Session {
            key: "k".into(),
            lines: vec![Line {
                message_id: "1".into(),
                sent_at_ms: 0,
                position: 0,
                text: "y".repeat(30_000),
            }],
        };
        // A message longer than a part continues into the next parts: nothing is lost.
        let parts = render("WhatsApp", &huge, Style::Plain, 10_000);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.chars().count() <= 10_000));
        assert!(parts.iter().all(|p| !p.contains("[truncated")));
        assert_eq!(parts.concat().matches('y').count(), 30_000);
        assert!(render("SMS", &huge, Style::Plain, 65_536)[0].contains(&"y".repeat(30_000)));
    }

    #[test]
    fn session_keys_are_stable() {
        assert_eq!(session_key("b", "u", "m1"), session_key("b", "u", "m1"));
        assert_ne!(session_key("b", "u", "m1"), session_key("b", "u", "m2"));
    }
}
