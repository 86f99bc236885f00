//! CPU floor of turning Conversations pages into output (benchmark 1 of the performance
//! issue): `cargo bench --bench cpu`.
//!
//! The corpus is real sandbox pages (500 messages each, every message type, 20 KB pastes,
//! 28 languages), rendered exactly as the sandbox serves them. Per message, measured by
//! criterion with throughput in messages and in page bytes:
//! - `a_parse_value`: `serde_json::from_slice::<Value>` of each page (a generic parser);
//! - `a_parse_wire`: our borrowed parse (envelope, then each message into `WireMessage`);
//! - `b_normalize`: parse + normalize into Arrow batches;
//! - `c_parquet`: b + Parquet encode with the default settings (zstd, in memory);
//! - `d_jsonl`: b + JSONL encode (in memory).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engati_etl::engati::wire::{WireMessage, parse_conversations_page};
use engati_etl::model::Window;
use engati_etl::normalize::PageNormalizer;
use engati_etl::sandbox::dataset::{DataConfig, Dataset};
use engati_etl::sandbox::render_page;
use engati_etl::schema::{MessageBatchBuilder, RowContext, messages_schema};
use engati_etl::sink::{Encoding, Format};

struct Corpus {
    pages: Vec<(String, Vec<u8>)>,
    messages: u64,
    bytes: u64,
}

fn corpus() -> Corpus {
    let data = Dataset::generate(DataConfig {
        users: 300,
        sessions_per_user: 12.0,
        ..DataConfig::default()
    });
    let mut pages = Vec::new();
    let (mut messages, mut bytes) = (0u64, 0u64);
    for u in data.users() {
        let i = data.user_index(&u.channel_user_id).expect("user");
        let all = data.messages_between(i, i64::MIN, i64::MAX);
        for chunk in all.chunks(500) {
            let body = render_page("conversations", chunk);
            messages += chunk.len() as u64;
            bytes += body.len() as u64;
            pages.push((u.channel_user_id.clone(), body));
        }
    }
    Corpus {
        pages,
        messages,
        bytes,
    }
}

fn cx() -> RowContext {
    RowContext {
        provider: "engati".into(),
        customer_id: "61179".into(),
        bot_key: "bb67e0773bed4c7e".into(),
        run_id: "bench".into(),
        extracted_at_ms: 0,
        raw_json: engati_etl::schema::RawJson::default(),
    }
}

const ALL: Window = Window {
    start_ms: i64::MIN,
    end_ms: i64::MAX,
};

fn normalize_all(c: &Corpus, cx: &RowContext, mut sink: impl FnMut(arrow_array::RecordBatch)) {
    let keys = vec!["conversations".to_string(), "messages".to_string()];
    let mut rejects = Vec::new();
    // One builder for all pages, as the exporter keeps one (a batch per page here).
    let mut b = MessageBatchBuilder::with_capacity(500, c.pages[0].1.len());
    for (user, body) in &c.pages {
        let spans = parse_conversations_page(body, &keys).expect("page");
        let text = std::str::from_utf8(body).expect("utf8");
        let mut n = PageNormalizer::new(cx, user, Some("whatsapp"), ALL);
        n.page(text, &spans, 1, &mut b, &mut rejects);
        sink(b.finish());
        rejects.clear();
    }
}

fn bench(c: &mut Criterion) {
    let corpus = corpus();
    eprintln!(
        "corpus: {} pages, {} messages, {:.1} MB of JSON",
        corpus.pages.len(),
        corpus.messages,
        corpus.bytes as f64 / 1e6
    );
    // The end-to-end benchmark divides its CPU per message by this floor: record the corpus.
    let stats = format!(
        "{{\"pages\": {}, \"messages\": {}, \"bytes\": {}}}\n",
        corpus.pages.len(),
        corpus.messages,
        corpus.bytes
    );
    let _ = std::fs::create_dir_all("target/criterion");
    let _ = std::fs::write("target/criterion/floor_corpus.json", stats);
    let cx = cx();
    let keys = vec!["conversations".to_string(), "messages".to_string()];
    for (unit, throughput) in [
        ("messages", Throughput::Elements(corpus.messages)),
        ("bytes", Throughput::Bytes(corpus.bytes)),
    ] {
        let mut g = c.benchmark_group(format!("floor_{unit}"));
        g.throughput(throughput);
        g.sample_size(10);
        g.bench_function("a_parse_value", |b| {
            b.iter(|| {
                for (_, body) in &corpus.pages {
                    black_box(serde_json::from_slice::<serde_json::Value>(body).expect("json"));
                }
            })
        });
        g.bench_function("a_parse_wire", |b| {
            b.iter(|| {
                for (_, body) in &corpus.pages {
                    let spans = parse_conversations_page(body, &keys).expect("page");
                    let text = std::str::from_utf8(body).expect("utf8");
                    for s in spans {
                        black_box(WireMessage::parse(&text[s]).expect("message"));
                    }
                }
            })
        });
        g.bench_function("b_normalize", |b| {
            b.iter(|| normalize_all(&corpus, &cx, |batch| drop(black_box(batch))))
        });
        let parquet = Encoding::new(
            Format::Parquet,
            false,
            engati_etl::config::DEFAULT_ZSTD_LEVEL,
            engati_etl::config::DEFAULT_ROW_GROUP_BYTES,
            6,
        )
        .expect("encoding");
        g.bench_function("c_parquet", |b| {
            b.iter(|| {
                let mut w = parquet::arrow::ArrowWriter::try_new(
                    Vec::with_capacity(64 << 20),
                    messages_schema(),
                    Some((*parquet.parquet).clone()),
                )
                .expect("writer");
                normalize_all(&corpus, &cx, |batch| w.write(&batch).expect("write"));
                black_box(w.into_inner().expect("close").len())
            })
        });
        g.bench_function("d_jsonl", |b| {
            b.iter(|| {
                let mut w = engati_etl::sink::part::jsonl_writer(Vec::with_capacity(256 << 20));
                normalize_all(&corpus, &cx, |batch| {
                    w.write(&engati_etl::sink::part::json_ready(&batch).expect("tz"))
                        .expect("write")
                });
                w.finish().expect("finish");
                black_box(w.into_inner().len())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
