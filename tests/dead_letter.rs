//! Unknown message types flow through; malformed timestamps go to the dead-letter file.

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_timestamps_are_dead_lettered_and_the_run_exits_1() {
    let mut cfg = small();
    cfg.data.malformed_rate = 0.03;
    cfg.data.unknown_type_rate = 0.05;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    let rows = read_parquet(&out);
    assert_same(
        &rows,
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-11")),
        "valid rows",
    );
    assert!(
        rows.iter()
            .any(|r| matches!(r.key.3.as_deref(), Some("LOCATION") | Some("CAROUSEL"))),
        "unknown types are rows"
    );
    // The malformed ones, with their reason, raw JSON and cell: each cell asks for
    // [start - 1 ms, end) (the sandbox's default reading), so count what those requests return.
    let mut bad = 0;
    for u in &users {
        let i = sb.data().user_index(u).unwrap();
        for d in 0..10 {
            let s = day("2026-08-01") + d * 86_400_000;
            bad += sb
                .data()
                .with_range(i, Some(s - 1), s + 86_400_000, false, false, |m| {
                    m.iter()
                        .filter(|m| m.ts_form == engati_etl::sandbox::dataset::MALFORMED)
                        .count()
                });
        }
    }
    assert!(bad > 0);
    let dl: Vec<serde_json::Value> = files_under(&out.join("_dead_letter"))
        .iter()
        .flat_map(|f| json_lines(f))
        .collect();
    assert_eq!(
        dl.len(),
        bad,
        "every malformed message the API returned is dead-lettered once"
    );
    for d in &dl {
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .contains("is not in a known form"),
            "{d}"
        );
        assert!(d["raw_json"].as_str().unwrap().contains("T99:99"));
        assert!(users.contains(&d["channel_user_id"].as_str().unwrap().to_string()));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_run_report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "completed_with_rejects");
    assert_eq!(
        report["messages"]["rejected"].as_u64().unwrap() as usize,
        dl.len()
    );
}
