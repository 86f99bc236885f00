//! The encoding settings visibly reach the files: rotation at `target_file_bytes`, row groups
//! bounded by `row_group_bytes`, the zstd level; and the output bytes are reproducible (a run
//! pinned to the same start time writes byte-identical files).

use std::path::{Path, PathBuf};

use crate::util::*;
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};

async fn export(
    sb: &engati_etl::sandbox::SandboxHandle,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) {
    let base = [
        "--attribute",
        "opt1=yes",
        "--attribute",
        "opt1=no",
        "--format",
        "parquet",
        "--out",
        out.to_str().unwrap(),
    ];
    let args = with(
        export_args(sb, "2026-08-01", "2026-08-04"),
        &[&base[..], extra].concat(),
    );
    let mut env = env.to_vec();
    env.push(("ENGATI_API_KEY", &sb.ids.api_key));
    let o = run_env(&args, &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn meta(f: &PathBuf) -> parquet::file::metadata::ParquetMetaData {
    let r = SerializedFileReader::new(std::fs::File::open(f).unwrap()).unwrap();
    r.metadata().clone()
}

fn compressed_bytes(files: &[PathBuf]) -> i64 {
    files
        .iter()
        .flat_map(|f| meta(f).row_groups().to_vec())
        .map(|rg| rg.compressed_size())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_row_groups_and_zstd_level_reach_the_files() {
    // Dense enough for several 4,096-row batches per day (rotation happens between batches).
    let mut cfg = small();
    cfg.data.users = 60;
    cfg.data.days = 3;
    cfg.data.sessions_per_user = 60.0;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-04"));
    assert!(want.len() > 3 * 2 * 4096, "{} messages", want.len());

    // Defaults: one file per partition and unit, one row group each.
    let plain = dir.path().join("plain");
    export(&sb, &plain, &[], &[]).await;
    let plain_files = message_files(&plain, ".parquet");
    assert_eq!(plain_files.len(), 3, "one file per day: {plain_files:?}");
    assert!(plain_files.iter().all(|f| meta(f).num_row_groups() == 1));

    // Tiny files: several files per partition (a file is closed once it passes the target,
    // so every file but a partition's last is at least that big), never an empty file, the
    // same rows.
    let small_out = dir.path().join("small");
    export(&sb, &small_out, &["--target-file-bytes", "20000"], &[]).await;
    let files = message_files(&small_out, ".parquet");
    assert!(files.len() >= 3 * 2, "rotated: {} files", files.len());
    for part in files.chunk_by(|a, b| a.parent() == b.parent()) {
        assert!(part.len() >= 2, "{:?} rotated", part[0].parent());
        for f in &part[..part.len() - 1] {
            let size = std::fs::metadata(f).unwrap().len();
            assert!(
                size >= 20_000,
                "{} closed early at {size} bytes",
                f.display()
            );
        }
    }
    for f in &files {
        assert!(
            meta(f).file_metadata().num_rows() > 0,
            "never an empty file"
        );
    }
    assert_same(
        &read_parquet(&small_out),
        &want,
        "rotated files hold the same rows",
    );

    // Small row groups: a day's file holds several (a row group ends once past the size).
    let rg = dir.path().join("rg");
    export(&sb, &rg, &["--row-group-bytes", "4096"], &[]).await;
    for f in message_files(&rg, ".parquet") {
        assert!(
            meta(&f).num_row_groups() > 1,
            "{}: one row group",
            f.display()
        );
    }
    assert_same(
        &read_parquet(&rg),
        &want,
        "small row groups hold the same rows",
    );

    // The zstd level: the same rows, zstd in every column chunk but those of the constant or
    // near-constant columns (dictionary pages and run-length indices, written uncompressed),
    // smaller at level 19 than at 1.
    let l1 = dir.path().join("l1");
    let l19 = dir.path().join("l19");
    export(&sb, &l1, &["--zstd-level", "1"], &[]).await;
    export(&sb, &l19, &["--zstd-level", "19"], &[]).await;
    let (f1, f19) = (
        message_files(&l1, ".parquet"),
        message_files(&l19, ".parquet"),
    );
    for f in f1.iter().chain(&f19) {
        for rg in meta(f).row_groups() {
            for c in rg.columns() {
                let name = c.column_path().string();
                let constant = [
                    "provider",
                    "customer_id",
                    "bot_key",
                    "channel",
                    "sender",
                    "direction",
                    "message_type",
                    "file_mime_type",
                    "run_id",
                    "extracted_at",
                ]
                .contains(&name.as_str());
                if constant {
                    assert_eq!(c.compression(), Compression::UNCOMPRESSED, "{name}");
                } else {
                    assert!(
                        matches!(c.compression(), Compression::ZSTD(_)),
                        "{name}: {:?}",
                        c.compression()
                    );
                }
            }
        }
    }
    let (b1, b19) = (compressed_bytes(&f1), compressed_bytes(&f19));
    assert!(
        b19 < b1,
        "level 19 ({b19} bytes) compresses more than level 1 ({b1} bytes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_run_writes_byte_identical_files() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let pin = [("FAILPOINTS", "pipeline::start_ms=return(1790000000000)")];
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    export(&sb, &a, &[], &pin).await;
    export(&sb, &b, &[], &pin).await;
    let listing = |out: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<PathBuf> = files_under(out)
            .into_iter()
            .filter(|f| !f.starts_with(out.join("_state")) && !f.ends_with("_run_report.json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|f| {
                (
                    f.strip_prefix(out).unwrap().to_owned(),
                    std::fs::read(&f).unwrap(),
                )
            })
            .collect()
    };
    let (la, lb) = (listing(&a), listing(&b));
    assert!(la.len() > 3, "{} files", la.len());
    assert_eq!(
        la.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        lb.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for ((p, x), (_, y)) in la.iter().zip(&lb) {
        assert!(x == y, "{} differs between two pinned runs", p.display());
    }
}
