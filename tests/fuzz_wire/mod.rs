//! The wire parser never panics: a short seeded fuzz run of the page parser, the normalizer and
//! the Users parser through the exporter's own path (`harness`), and the adversarial bodies:
//! pages cut at every byte, deep nesting, invalid UTF-8, numbers where strings belong, large
//! pages, a large Users response. The long run is `cargo run --release --example fuzz_wire`.

mod harness;

use engati_etl::engati::wire::{DecodeError, parse_conversations_page};
use engati_etl::model::Window;
use engati_etl::normalize::PageCounts;
use harness::{Harness, Outcome, Seeds, heavy};

const SEED: u64 = 20_260_812;
/// Cases in the short run: about 5,500 bodies (about 12 s in a debug build).
const CASES: u64 = 3_000;

fn seeds() -> Seeds {
    Seeds::new(SEED)
}

#[test]
fn fuzzed_bodies_never_panic_and_every_message_is_accounted_for() {
    let seeds = seeds();
    let mut h = Harness::new();
    for i in 0..CASES {
        h.run(&seeds.case(SEED, i));
    }
    h.flush();
    let t = h.totals;
    eprintln!("{t}");
    assert_eq!(t.messages, t.rows + t.out_of_window + t.rejects, "{t}");
    // Every path was taken: a generator that stopped reaching one would pass vacuously.
    for (what, n) in [
        ("rows", t.rows),
        ("rejects", t.rejects),
        ("out of window", t.out_of_window),
        ("not UTF-8", t.not_utf8),
        ("syntax errors", t.decode_syntax),
        ("shape errors", t.decode_shape),
        ("batches", t.batches),
        ("users read", t.users_read),
        ("users refused", t.users_refused),
        ("error bodies", t.error_bodies),
    ] {
        assert!(n > 0, "no {what}: {t}");
    }
}

#[test]
fn real_pages_are_read_whole_with_only_their_malformed_timestamps_rejected() {
    let seeds = seeds();
    let mut h = Harness::new();
    let (mut malformed, mut messages) = (0, 0);
    for p in &seeds.pages {
        let (user, channel) = &seeds.users[p.user];
        let out = h.cell(
            user,
            Some(channel),
            seeds.history,
            std::slice::from_ref(&p.body),
        );
        // The sandbox writes a malformed timestamp as `<date>T99:99`.
        let bad = p.body.windows(6).filter(|w| w == b"T99:99").count() as u64;
        assert_eq!(
            out,
            vec![Outcome::Read(PageCounts {
                rows: p.messages as u64 - bad,
                out_of_window: 0,
                rejected: bad,
            })]
        );
        malformed += bad;
        messages += p.messages;
    }
    h.flush();
    assert!(
        malformed > 0 && messages > 1000,
        "{malformed} of {messages}"
    );
}

#[test]
fn a_page_cut_at_every_byte_is_a_retryable_decode_error() {
    let seeds = seeds();
    let mut h = Harness::new();
    let pages = seeds
        .pages
        .iter()
        .filter(|p| p.messages >= 3 && p.body.len() < 6000)
        .take(4);
    let mut cuts = 0;
    for p in pages {
        for cut in 0..p.body.len() {
            let out = h.cell("u", None, seeds.history, &[p.body[..cut].to_vec()]);
            match &out[0] {
                Outcome::NotUtf8 => {}
                Outcome::Decode(e) => assert!(e.is_retryable(), "cut at {cut}: {e}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
            cuts += 1;
        }
    }
    assert!(cuts > 4000, "{cuts}");
}

#[test]
fn ten_thousand_levels_of_nesting_are_a_reject_or_a_decode_error_never_a_crash() {
    let seeds = seeds();
    let mut h = Harness::new();
    for depth in [10_000, 1_000_000] {
        for (what, body, expect) in heavy::nesting(depth) {
            let out = h.cell("u", None, seeds.history, std::slice::from_ref(&body));
            match (expect, &out[0]) {
                (Some(rejects), Outcome::Read(c)) => {
                    assert_eq!(c.rejected, rejects, "{depth} levels in {what}: {c:?}")
                }
                (None, Outcome::Decode(_)) => {}
                (_, other) => panic!("{depth} levels in {what}: {other:?}"),
            }
            assert!(h.users(&body).is_err(), "{depth} levels in {what}");
            h.error_body(&body);
        }
    }
    h.flush();
}

#[test]
fn bodies_that_are_not_utf8_are_refused_and_never_read_in_part() {
    let seeds = seeds();
    let mut h = Harness::new();
    let keys = ["conversations".to_string()];
    let mut body = seeds.pages[0].body.clone();
    let q = body.iter().rposition(|&b| b == b'"').expect("a string");
    body.splice(q..q, *b"\xed\xa0\x80");
    assert_eq!(
        h.cell("u", None, seeds.history, std::slice::from_ref(&body)),
        vec![Outcome::NotUtf8]
    );
    // The parser alone refuses it too: invalid UTF-8 inside a message is never a message.
    assert!(matches!(
        parse_conversations_page(&body, &keys),
        Err(DecodeError::Syntax { .. })
    ));
    let mut users = seeds.users_bodies[0].0.clone();
    users.insert(users.len() - 4, 0xff);
    assert!(matches!(h.users(&users), Err(DecodeError::Syntax { .. })));
}

#[test]
fn numbers_where_strings_belong_are_read_as_text_or_rejected() {
    let mut h = Harness::new();
    let all = Window {
        start_ms: i64::MIN,
        end_ms: i64::MAX,
    };
    let body = br#"{"conversations":[
        {"sender":1,"message_type":2,"response":3,"timestamp":1786523607512,"user_id":4,"text":5},
        {"sender":true,"message_type":-0,"response":1e400,"timestamp":"1786523607"},
        {"sender":1e400,"timestamp":1786523607512},
        {"sender":"user","timestamp":1.786523607512e12},
        {"sender":"user","timestamp":123456789012345678901234567890},
        {"sender":"user","timestamp":-1786523607512},
        {"sender":"user","file":{"url":7,"mimeType":8},"timestamp":1786523607512},
        {"sender":"user","file":9,"timestamp":1786523607512}
    ]}"#;
    let out = h.cell("u", None, all, &[body.to_vec()]);
    // Numbers are text where text is read (ids are sometimes numeric), `response` survives
    // verbatim; a number that does not fit f64, a fractional or negative or 30-digit epoch,
    // and a number where an object belongs are rejects.
    assert_eq!(
        out,
        vec![Outcome::Read(PageCounts {
            rows: 3,
            out_of_window: 0,
            rejected: 5,
        })]
    );
    h.flush();
}

#[test]
fn a_50_mb_body_is_read_whole_or_refused_whole() {
    let seeds = seeds();
    let mut h = Harness::new();
    let one = |out: Vec<Outcome>| out.into_iter().next().expect("one page");
    // One 50 MB message: a row whose content is the whole string.
    let body = heavy::one_huge_message(heavy::MB50);
    let out = one(h.cell("u", None, seeds.history, std::slice::from_ref(&body)));
    assert_eq!(
        out,
        Outcome::Read(PageCounts {
            rows: 1,
            out_of_window: 0,
            rejected: 0
        })
    );
    h.flush();
    // The same body cut in the middle, or with one byte that is not UTF-8 near its end.
    let mut cut = body.len() / 2;
    while body[cut] >= 0x80 {
        cut += 1; // on a character boundary: this cut is about JSON, not UTF-8
    }
    let out = one(h.cell("u", None, seeds.history, &[body[..cut].to_vec()]));
    assert!(
        matches!(&out, Outcome::Decode(e) if e.is_retryable()),
        "{out:?}"
    );
    let mut bad = body;
    let at = bad.len() - 10;
    bad[at] = 0xff;
    let out = one(h.cell("u", None, seeds.history, &[bad]));
    assert_eq!(out, Outcome::NotUtf8);
    // 5 MB of real messages in one page (the 50 MB one is in the long run: debug is slow).
    let body = heavy::page_of_real_messages(&seeds, 5_000_000);
    let Outcome::Read(c) = one(h.cell("u", None, seeds.history, &[body])) else {
        panic!("not read")
    };
    assert!(c.rows > 10_000 && c.rejected > 0, "{c:?}");
    h.flush();
}

#[test]
fn a_users_response_of_100_000_entries_is_read_whole() {
    let mut h = Harness::new();
    let users = h.users(&heavy::users_body(100_000)).expect("read");
    assert_eq!(users.len(), 100_000);
    assert_eq!(users[99_999].channel_user_id, "917000099999");
    assert_eq!(users[0].attributes.len(), 5);
}
