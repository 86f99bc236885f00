//! The documentation cannot drift from the code: every key of every pipeline-file section is
//! in the reference pipeline (`pipelines/adhoc.toml`) and the README's configuration table,
//! the reference pipeline parses, and the README's defaults and memory bounds are the code's.

use std::collections::BTreeSet;

use engati_etl::config::{
    self, PipelineFile, PrivacySection, RangeSection, SandboxSection, SinkSection, SourceSection,
};
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names a `#[derive(Deserialize)]` struct declares (what serde would accept).
fn fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    struct Probe<'a>(&'a mut Vec<&'static str>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut out = Vec::new();
    let _ = T::deserialize(Probe(&mut out));
    out
}

fn sections() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("source", fields::<SourceSection>()),
        ("range", fields::<RangeSection>()),
        ("sink", fields::<SinkSection>()),
        ("privacy", fields::<PrivacySection>()),
        ("sandbox", fields::<SandboxSection>()),
    ]
}

fn read(path: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path).unwrap()
}

#[test]
fn the_reference_pipeline_parses_and_shows_every_key() {
    let text = read("pipelines/adhoc.toml");
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/adhoc.toml"));
    PipelineFile::load(path).expect("the reference pipeline parses");
    for (section, keys) in sections() {
        assert!(keys.len() > 3, "{section}: introspection found {keys:?}");
        let start = text
            .find(&format!("[{section}]"))
            .unwrap_or_else(|| panic!("adhoc.toml has a [{section}] section (maybe commented)"));
        let body = &text[start..];
        let body = &body[..body[1..].find("\n[").map_or(body.len(), |i| i + 1)];
        let body = body.replace("\n# [", "\n[");
        for key in keys {
            let shown = body.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            });
            assert!(shown, "pipelines/adhoc.toml does not show {section}.{key}");
        }
    }
}

#[test]
fn the_readme_table_lists_every_key_with_the_code_defaults() {
    let readme = read("README.md");
    let table: BTreeSet<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    let row = |key: &str| {
        table
            .iter()
            .find(|l| l.starts_with(&format!("| `{key}`")))
            .copied()
    };
    for (section, keys) in sections() {
        if section == "sandbox" {
            let sb = row("[sandbox]").expect("README lists [sandbox]");
            for key in keys.iter().filter(|k| **k != "enabled" && **k != "hubspot") {
                assert!(
                    sb.contains(&format!("`{key}`")),
                    "README [sandbox] row lacks {key}"
                );
            }
            continue;
        }
        for key in keys {
            if key == "no_gzip" {
                continue;
            }
            assert!(
                row(&format!("{section}.{key}")).is_some(),
                "README configuration table lacks `{section}.{key}`"
            );
        }
    }
    for (key, default) in [
        ("source.page_size", config::DEFAULT_PAGE_SIZE.to_string()),
        (
            "source.concurrency",
            config::DEFAULT_CONCURRENCY.to_string(),
        ),
        (
            "source.max_concurrency",
            config::DEFAULT_MAX_CONCURRENCY.to_string(),
        ),
        ("source.max_rps", config::DEFAULT_MAX_RPS.to_string()),
        (
            "source.timeout_secs",
            config::DEFAULT_TIMEOUT_SECS.to_string(),
        ),
        (
            "source.max_retries",
            config::DEFAULT_MAX_RETRIES.to_string(),
        ),
        ("range.window", format!("`{}`", config::DEFAULT_WINDOW)),
        ("range.lookback", format!("`{}`", config::DEFAULT_LOOKBACK)),
        (
            "sink.target_file_bytes",
            config::DEFAULT_TARGET_FILE_BYTES.to_string(),
        ),
        (
            "sink.row_group_bytes",
            config::DEFAULT_ROW_GROUP_BYTES.to_string(),
        ),
        ("sink.zstd_level", config::DEFAULT_ZSTD_LEVEL.to_string()),
        (
            "sink.checkpoint_users",
            config::DEFAULT_CHECKPOINT_USERS.to_string(),
        ),
        (
            "sink.crm_requests_per_10s",
            config::crm::DEFAULT_CRM_REQUESTS_PER_10S.to_string(),
        ),
        (
            "sink.session_gap",
            format!("`{}`", config::crm::DEFAULT_SESSION_GAP),
        ),
    ] {
        let r = row(key).unwrap_or_else(|| panic!("README row {key}"));
        let cells: Vec<&str> = r.split('|').map(str::trim).collect();
        assert!(
            cells.get(4).is_some_and(|c| c.contains(&default)),
            "README says the default of {key} is {:?}, the code says {default}",
            cells.get(4)
        );
    }
}

#[test]
fn the_readme_memory_bounds_are_the_codes() {
    let readme = read("README.md");
    let para = readme
        .split("\n- **")
        .find(|p| p.starts_with("Bounded memory"))
        .expect("README has a Bounded memory guarantee");
    let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
    let mib = |b: u64| format!("{} MiB", b >> 20);
    for needle in [
        format!(
            "{} cells per request in flight",
            config::LOOKAHEAD_CELLS_PER_REQUEST
        ),
        format!(
            "at most {} cells",
            fmt_thousands(config::MAX_LOOKAHEAD_CELLS as u64)
        ),
        format!("{} pages each", engati_etl::pipeline::PAGES_AHEAD),
        mib(config::DEFAULT_BUFFER_BYTES),
        format!(
            "{} rows",
            fmt_thousands(engati_etl::pipeline::BATCH_ROWS as u64)
        ),
        mib(engati_etl::sink::files::MAX_PENDING_BYTES as u64),
        format!("up to {} of pages", mib(engati_etl::pipeline::HOLD_BYTES)),
    ] {
        assert!(
            para.contains(&needle),
            "Bounded memory should say {needle}: {para}"
        );
    }
}

fn fmt_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_readme_schema_is_the_messages_schema() {
    let readme = read("README.md");
    let start = readme
        .find("### `messages`")
        .expect("README documents the messages table");
    let columns: Vec<&str> = readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with("| `"))
        .map(|l| l.trim_start_matches("| `").split('`').next().unwrap())
        .collect();
    let schema = engati_etl::schema::messages_schema();
    let want: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(columns, want, "README's messages table, column for column");
}
