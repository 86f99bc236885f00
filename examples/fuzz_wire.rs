//! The long fuzz run of the wire parser and the normalizer (issue 12, "The wire parser never
//! panics"):
//!
//! ```text
//! cargo run --release --example fuzz_wire -- N [--seed S] [--start I] [--no-heavy]
//! ```
//!
//! Feeds N bodies (Conversations pages, Users bodies, error bodies) made by the shared harness
//! (`tests/fuzz_wire/harness.rs`: real sandbox pages mutated with structure and at the byte
//! level, and made-up adversarial bodies) through the exporter's own path, checking the
//! harness's invariants after each one, then the heavy cases: 50 MB bodies, 10,000- and
//! 1,000,000-level nesting, a Users response of 1,000,000 entries. Prints inputs/s, the totals
//! (inputs, messages, rows, rejects), the peak RSS (`VmHWM`) and the heap in use, counted by a
//! counting allocator: the largest heap in use between two cases is what "memory stays bounded"
//! means here. Case `I` of seed `S` is the same bytes on every machine: a panic saves the case's
//! bodies to `fuzz_wire-crash-S-I-*.bin` and prints the command that replays it alone
//! (`--start I`, N = 1). Exit status: 0 when every invariant held, 101 on a panic.

#[path = "../tests/fuzz_wire/harness.rs"]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use harness::{Harness, Outcome, Seeds, heavy, rss_kib};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on to `System`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn rss_line() -> String {
    let (hwm, rss) = rss_kib();
    format!(
        "RSS {:.0} MiB, peak RSS {:.0} MiB, heap in use {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        mib(LIVE.load(Ordering::Relaxed))
    )
}

struct Args {
    inputs: u64,
    seed: u64,
    start: u64,
    heavy: bool,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        inputs: 0,
        seed: 1,
        start: 0,
        heavy: true,
    };
    let mut n = None;
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .ok_or_else(|| format!("{what} takes a number"))
        };
        match arg.as_str() {
            "--seed" => a.seed = num("--seed")?,
            "--start" => a.start = num("--start")?,
            "--no-heavy" => a.heavy = false,
            v if n.is_none() => {
                n = Some(
                    v.replace('_', "")
                        .parse()
                        .map_err(|_| format!("N must be a number, not `{v}`"))?,
                )
            }
            v => return Err(format!("unexpected argument `{v}`")),
        }
    }
    a.inputs = n.ok_or("usage: fuzz_wire N [--seed S] [--start I] [--no-heavy]")?;
    Ok(a)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let seeds = Seeds::new(a.seed);
    println!(
        "fuzz_wire: seed {}, {} inputs from case {}; {} seed pages ({} messages), {} Users bodies; {}",
        a.seed,
        a.inputs,
        a.start,
        seeds.pages.len(),
        seeds.messages(),
        seeds.users_bodies.len(),
        rss_line()
    );
    let mut h = Harness::new();
    let heap_at_start = LIVE.load(Ordering::Relaxed);
    let mut heap_between_max = heap_at_start;
    let started = Instant::now();
    let step = (a.inputs / 10).max(1);
    let mut next_report = step;
    let mut case = a.start;
    while h.totals.inputs < a.inputs {
        let c = seeds.case(a.seed, case);
        if catch_unwind(AssertUnwindSafe(|| h.run(&c))).is_err() {
            let mut names = Vec::new();
            for (k, body) in c.bodies().into_iter().enumerate() {
                let name = format!("fuzz_wire-crash-{}-{case}-{k}.bin", a.seed);
                if std::fs::write(&name, body).is_ok() {
                    names.push(name);
                }
            }
            eprintln!(
                "PANIC in case {case} of seed {} (bodies saved: {}); replay it alone with:\n  cargo run --release --example fuzz_wire -- 1 --seed {} --start {case} --no-heavy",
                a.seed,
                names.join(", "),
                a.seed
            );
            std::process::exit(101);
        }
        case += 1;
        heap_between_max = heap_between_max.max(LIVE.load(Ordering::Relaxed));
        if h.totals.inputs >= next_report {
            let s = started.elapsed().as_secs_f64();
            println!(
                "  {:>11} inputs  {:>7.0} s  {:>7.0} inputs/s  {:>5.1} MB/s  {}",
                h.totals.inputs,
                s,
                h.totals.inputs as f64 / s,
                h.totals.bytes as f64 / 1e6 / s,
                rss_line()
            );
            next_report += step;
        }
    }
    h.flush();
    let secs = started.elapsed().as_secs_f64();
    let t = h.totals;
    assert_eq!(t.messages, t.rows + t.out_of_window + t.rejects);
    let (fuzz_hwm, _) = rss_kib();
    println!(
        "fuzz: {} inputs ({} cases) in {secs:.0} s = {:.0} inputs/s ({:.1} MB/s), no panic; every invariant held",
        t.inputs,
        case - a.start,
        t.inputs as f64 / secs,
        t.bytes as f64 / 1e6 / secs
    );
    println!("{t}");
    println!(
        "memory: peak RSS {:.0} MiB; heap in use between cases at most {:.1} MiB (after the seeds: {:.1} MiB)",
        fuzz_hwm as f64 / 1024.0,
        mib(heap_between_max),
        mib(heap_at_start)
    );
    if a.heavy {
        heavy_cases(&seeds);
    }
}

/// Runs `f` on `body`, printing its time and the heap it added at its peak.
fn measure<T>(name: &str, body: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let out = f(body);
    let secs = t.elapsed().as_secs_f64();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    println!(
        "  {name}: {:.1} MB in {secs:.2} s ({:.0} MB/s); heap peak +{:.0} MiB ({:.1}x the body); {}",
        body.len() as f64 / 1e6,
        body.len() as f64 / 1e6 / secs,
        mib(peak),
        peak as f64 / body.len().max(1) as f64,
        rss_line()
    );
    out
}

fn heavy_cases(seeds: &Seeds) {
    println!("heavy cases:");
    let mut h = Harness::new();
    let history = seeds.history;
    let page = |name: &str, body: Vec<u8>, h: &mut Harness| {
        let out = measure(name, &body, |b| {
            let out = h.cell("u", None, history, &[b.to_vec()]);
            h.flush();
            out
        });
        println!("    -> {:?}", out[0]);
        out.into_iter().next().expect("one page")
    };
    let body = heavy::page_of_real_messages(seeds, heavy::MB50);
    let out = page("50 MB page of real messages", body, &mut h);
    assert!(matches!(out, Outcome::Read(c) if c.rows > 100_000));
    let out = page(
        "50 MB page of one message (a 50 MB response string with escapes)",
        heavy::one_huge_message(heavy::MB50),
        &mut h,
    );
    assert!(matches!(out, Outcome::Read(c) if c.rows == 1));
    let mut body = heavy::page_of_real_messages(seeds, heavy::MB50);
    let q = body.iter().rposition(|&b| b == b'"').expect("a string");
    body.splice(q..q, *b"\xff");
    let out = page(
        "50 MB page, one invalid UTF-8 byte near the end",
        body,
        &mut h,
    );
    assert_eq!(out, Outcome::NotUtf8);
    let mut body = heavy::page_of_real_messages(seeds, heavy::MB50);
    body.truncate(body.len() / 2);
    let out = page("50 MB page cut in the middle", body, &mut h);
    assert!(matches!(out, Outcome::Decode(e) if e.is_retryable()));
    let out = page(
        "50 MB array of `{}` (a reject each: no timestamp)",
        heavy::many_items(b"{}", heavy::MB50),
        &mut h,
    );
    assert!(matches!(out, Outcome::Read(c) if c.rejected > 10_000_000));
    let out = page(
        "50 MB array of `0` (a reject each: not an object)",
        heavy::many_items(b"0", heavy::MB50),
        &mut h,
    );
    assert!(matches!(out, Outcome::Read(c) if c.rejected > 20_000_000));
    for depth in [10_000, 1_000_000] {
        for (what, body, expect) in heavy::nesting(depth) {
            let out = h.cell("u", None, history, std::slice::from_ref(&body));
            let users = h.users(&body);
            h.error_body(&body);
            println!(
                "  {depth} levels in {what}: page -> {:?}; Users -> {}",
                out[0],
                match &users {
                    Ok(u) => format!("{} users", u.len()),
                    Err(e) => format!("error: {e}"),
                }
            );
            match (expect, &out[0]) {
                (Some(n), Outcome::Read(c)) => assert_eq!(c.rejected, n),
                (None, Outcome::Decode(_)) => {}
                (_, other) => panic!("{what}: {other:?}"),
            }
        }
    }
    h.flush();
    let body = heavy::users_body(1_000_000);
    let users = measure("Users response of 1,000,000 entries", &body, |b| {
        h.users(b).expect("a Users body")
    });
    assert_eq!(users.len(), 1_000_000);
    drop(users);
    println!("after the heavy cases: {}", rss_line());
}
