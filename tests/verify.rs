//! `verify`: a clean export verifies (exit 0); each deliberate corruption is found with exit 1
//! and the right finding (a same-size, same-rows rewrite by its checksum); `--against-api` sees a message the output lost; unsupported outputs
//! are refused with exit 2.

use std::path::{Path, PathBuf};

use crate::util::*;

/// Exports a few sandbox days (attribute opt1=yes) into `dir/out`; returns the output.
async fn exported(dir: &Path, format: &[&str]) -> PathBuf {
    let sb = start(small()).await;
    let out = dir.join("out");
    let mut more = vec!["--attribute", "opt1=yes", "--out", out.to_str().unwrap()];
    more.extend_from_slice(format);
    let args = with(export_args(&sb, "2026-08-01", "2026-08-05"), &more);
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    out
}

/// Copies a directory tree (an output and its state) so each corruption starts clean.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Runs `verify --out OUT --json`; returns the exit code and the report.
async fn verify(out: &Path) -> (Option<i32>, serde_json::Value) {
    let o = run(
        &args(&["verify", "--out", out.to_str().unwrap(), "--json"]),
        None,
    )
    .await;
    let report = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify prints JSON ({e}): {}", text(&o)));
    (o.status.code(), report)
}

/// The findings of `kind`.
fn found<'a>(report: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn messages_files(out: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v = message_files(out, ext);
    v.sort();
    v
}

fn rel(out: &Path, p: &Path) -> String {
    p.strip_prefix(out)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_export_verifies_and_each_corruption_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let clean = exported(dir.path(), &["--format", "parquet"]).await;
    let (code, report) = verify(&clean).await;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["consistent"], true);
    assert!(report["totals"]["message_ids"].as_u64().unwrap() > 50);
    // The table says so too.
    let o = run(&args(&["verify", "--out", clean.to_str().unwrap()]), None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("consistent"));

    let case = |name: &str| {
        let out = dir.path().join(name);
        copy_dir(&clean, &out);
        out
    };
    // 1. A deleted file.
    let out = case("deleted");
    let victim = messages_files(&out, ".parquet")[0].clone();
    std::fs::remove_file(&victim).unwrap();
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    let f = found(&report, "missing_file");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["path"], rel(&out, &victim));
    assert!(
        f[0]["partition"]
            .as_str()
            .unwrap()
            .starts_with("date=2026-08-")
    );
    assert!(!found(&report, "partition_rows").is_empty(), "{report:#}");

    // 2. A truncated file.
    let out = case("truncated");
    let victim = messages_files(&out, ".parquet")[1].clone();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    for kind in ["size_mismatch", "unreadable_file"] {
        let f = found(&report, kind);
        assert_eq!(f.len(), 1, "{kind}: {report:#}");
        assert_eq!(f[0]["path"], rel(&out, &victim));
    }

    // 3. A duplicated file (a copy under another name).
    let out = case("duplicated");
    let victim = messages_files(&out, ".parquet")[0].clone();
    let copy = victim.with_file_name("part-copy-00000.parquet");
    std::fs::copy(&victim, &copy).unwrap();
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    let stray = found(&report, "stray_file");
    assert_eq!(stray.len(), 1, "{report:#}");
    assert_eq!(stray[0]["path"], rel(&out, &copy));
    let dups = found(&report, "duplicate_message_id");
    assert!(!dups.is_empty(), "{report:#}");
    assert!(dups.iter().all(|d| d["path"] == rel(&out, &copy)));

    // 4. A dropped window: a partition's files and their ledger rows removed together.
    let out = case("dropped");
    let day = out.join("messages/date=2026-08-03");
    assert!(day.is_dir());
    std::fs::remove_dir_all(&day).unwrap();
    let db = rusqlite::Connection::open(out.join("_state/state.sqlite3")).unwrap();
    let n = db
        .execute(
            "DELETE FROM files WHERE path LIKE 'messages/date=2026-08-03/%'",
            [],
        )
        .unwrap();
    assert!(n > 0);
    drop(db);
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    let f = found(&report, "run_rows");
    assert_eq!(f.len(), 1, "{report:#}");
    assert!(f[0]["run_id"].is_string());
    assert!(found(&report, "missing_file").is_empty(), "{report:#}");

    // 5. A staged file left behind.
    let out = case("staged");
    let staged = out.join("messages/date=2026-08-02/.part-x-00000-000.parquet.abcd1234.tmp");
    std::fs::write(&staged, b"partial").unwrap();
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    let f = found(&report, "staged_file");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["path"], rel(&out, &staged));
    assert_eq!(f[0]["severity"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_gzip_row_counts_are_checked_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = exported(dir.path(), &["--format", "jsonl", "--gzip"]).await;
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(0), "{report:#}");
    // One line fewer, the file re-gzipped: size and rows both differ from the ledger.
    let victim = messages_files(&out, ".jsonl.gz")[0].clone();
    let lines = json_lines(&victim);
    assert!(lines.len() > 1);
    let mut text = String::new();
    for l in &lines[1..] {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    std::fs::write(&victim, gz.finish().unwrap()).unwrap();
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    let f = found(&report, "row_count_mismatch");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["path"], rel(&out, &victim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_api_finds_a_message_the_output_lost() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sink = format!("format = \"jsonl\"\nout = \"{}\"", out.display());
    let range = "since = \"2026-08-01\"\nuntil = \"2026-08-04\"";
    let p = pipeline_file(dir.path(), &sb, range, &sink, &["opt1=yes"]);
    let p = p.to_str().unwrap();
    let o = run(&args(&["run", p, "--quiet"]), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let check = |more: &'static [&'static str]| {
        let mut a = args(&["verify", p, "--json", "--against-api", "--sample", "100000"]);
        a.extend(more.iter().map(|s| s.to_string()));
        a
    };
    let o = run(&check(&[]), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        report["totals"]["api_cells"].as_u64().unwrap() > 3,
        "{report:#}"
    );

    // A message deleted from a file, the ledger told of the new size and rows, its checksum
    // forgotten (so the files check passes; the API check finds the message and names it).
    let victim = messages_files(&out, ".jsonl")[0].clone();
    let lines = json_lines(&victim);
    let gone = lines[0].clone();
    let mut text_ = String::new();
    for l in &lines[1..] {
        text_.push_str(&l.to_string());
        text_.push('\n');
    }
    std::fs::write(&victim, &text_).unwrap();
    let db = rusqlite::Connection::open(out.join("_state/state.sqlite3")).unwrap();
    db.execute(
        "UPDATE files SET rows = rows - 1, bytes = ?2, checksum = NULL WHERE path = ?1",
        rusqlite::params![rel(&out, &victim), text_.len() as i64],
    )
    .unwrap();
    drop(db);
    let o = run(&check(&["--seed", "3"]), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = found(&report, "api_missing_in_output");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["user"], gone["channel_user_id"]);
    assert!(
        f[0]["detail"]
            .as_str()
            .unwrap()
            .contains(gone["message_id"].as_str().unwrap()),
        "{report:#}"
    );
    assert!(found(&report, "missing_file").is_empty(), "{report:#}");
    assert!(found(&report, "checksum_mismatch").is_empty(), "{report:#}");
}

/// Replaces one ASCII letter or digit at the start of a `content` value of `file` (JSONL) with
/// another: the same bytes, lines and `message_id`s, other content. Returns the line changed.
fn rewrite_one_character(file: &Path) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let key = b"\"content\":\"";
    let mut line = 0;
    for i in 0..bytes.len().saturating_sub(key.len()) {
        if bytes[i] == b'\n' {
            line += 1;
        }
        if &bytes[i..i + key.len()] != key {
            continue;
        }
        let at = i + key.len();
        let c = bytes[at];
        if c.is_ascii_alphanumeric() {
            bytes[at] = if c == b'x' { b'y' } else { b'x' };
            std::fs::write(file, &bytes).unwrap();
            return line;
        }
    }
    panic!(
        "no content value starting with a letter or digit in {}",
        file.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_with_the_same_size_and_rows_is_found_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let clean = exported(dir.path(), &["--format", "jsonl"]).await;
    let (code, report) = verify(&clean).await;
    assert_eq!(code, Some(0), "{report:#}");
    let t = &report["totals"];
    assert_eq!(t["checksums_checked"], t["ledger_files"], "{report:#}");
    assert_eq!(t["files_without_checksum"], 0, "{report:#}");
    assert!(found(&report, "no_checksum").is_empty(), "{report:#}");

    let out = dir.path().join("rewritten");
    copy_dir(&clean, &out);
    let victim = messages_files(&out, ".jsonl")[0].clone();
    let (size, lines) = (
        std::fs::metadata(&victim).unwrap().len(),
        json_lines(&victim),
    );
    let line = rewrite_one_character(&victim);
    let after = json_lines(&victim);
    assert_eq!(std::fs::metadata(&victim).unwrap().len(), size);
    assert_eq!(after.len(), lines.len());
    assert_ne!(after[line]["content"], lines[line]["content"]);
    assert_eq!(after[line]["message_id"], lines[line]["message_id"]);

    let path = rel(&out, &victim);
    let db = rusqlite::Connection::open(out.join("_state/state.sqlite3")).unwrap();
    let recorded: String = db
        .query_row("SELECT checksum FROM files WHERE path = ?1", [&path], |r| {
            r.get(0)
        })
        .unwrap();
    drop(db);
    let actual = format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(&std::fs::read(&victim).unwrap())
    );
    assert_ne!(recorded, actual);
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    let f = found(&report, "checksum_mismatch");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["path"], path);
    assert_eq!(f[0]["severity"], "error");
    let detail = f[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&recorded) && detail.contains(&actual),
        "{detail}"
    );
    // Nothing else tells: the size, the rows and the ids are right.
    let errors: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{report:#}");

    // The same file in a ledger an older version wrote (no checksum): not compared, a warning.
    let db = rusqlite::Connection::open(out.join("_state/state.sqlite3")).unwrap();
    db.execute("UPDATE files SET checksum = NULL WHERE path = ?1", [&path])
        .unwrap();
    drop(db);
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["totals"]["files_without_checksum"], 1, "{report:#}");
    let w = found(&report, "no_checksum");
    assert_eq!(w.len(), 1, "{report:#}");
    assert_eq!(w[0]["severity"], "warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_outputs_and_bad_usage_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("table");
    std::fs::create_dir_all(delta.join("_delta_log")).unwrap();
    for (a, says) in [
        (vec!["verify", "--out", delta.to_str().unwrap()], "Delta"),
        (
            vec!["verify", "--out", "s3://bucket/prefix"],
            "object storage",
        ),
        (vec!["verify", "--against-api"], "pipeline"),
        (
            vec!["verify", "--out", dir.path().to_str().unwrap()],
            "no state",
        ),
    ] {
        let o = run(&args(&a), None).await;
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        assert!(
            text(&o).to_lowercase().contains(&says.to_lowercase()),
            "{a:?}: {}",
            text(&o)
        );
    }
    let crm = dir.path().join("crm.toml");
    std::fs::write(
        &crm,
        "[source]\nprovider = \"custom\"\n[range]\n[sink]\nformat = \"crm\"\n",
    )
    .unwrap();
    let o = run(&args(&["verify", crm.to_str().unwrap()]), None).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("CRM output is not supported yet"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_dropped_after_later_runs_is_found_by_the_balance() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    // Two exports that overlap on 08-04: the second replaces the first's rows there.
    for (since, until) in [("2026-08-01", "2026-08-05"), ("2026-08-04", "2026-08-06")] {
        let flags = ["--attribute", "opt1=yes", "--format", "parquet", "--out", o];
        let a = with(export_args(&sb, since, until), &flags);
        let r = run(&a, Some(&sb.ids.api_key)).await;
        assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    }
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(0), "{report:#}");
    // Every file of both runs has its checksum, and it is right.
    let t = &report["totals"];
    assert_eq!(t["checksums_checked"], t["ledger_files"], "{report:#}");
    // The first run's 08-02 dropped with its ledger rows: a later run exists, so the per-run
    // check cannot tell; the balance of the reports can.
    std::fs::remove_dir_all(out.join("messages/date=2026-08-02")).unwrap();
    let db = rusqlite::Connection::open(out.join("_state/state.sqlite3")).unwrap();
    db.execute(
        "DELETE FROM files WHERE path LIKE 'messages/date=2026-08-02/%'",
        [],
    )
    .unwrap();
    drop(db);
    let (code, report) = verify(&out).await;
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(found(&report, "output_rows").len(), 1, "{report:#}");
    assert!(found(&report, "run_rows").is_empty(), "{report:#}");
}
