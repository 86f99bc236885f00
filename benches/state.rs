//! State store at scale: 1,000,000 users.
//!
//! `cargo bench --bench state` (add `-- --users N` for another size). Prints the median of 3
//! runs of each step:
//! - save: a first incremental run commits watermarks for every user (units of 5,000 users,
//!   one transaction each, as the sink does);
//! - load: reading every watermark at the start of the next run;
//! - update: the next night moves every watermark one day (same units);
//! - users: upserting every user's row for the users table, then reading them back;
//! - resume lookup: the run's committed units;
//!
//! and the size of the state directory.

use std::time::Instant;

use engati_etl::model::{ExportedUser, User};
use engati_etl::state::{CommitPlan, StateStore, WatermarkMove};

const DAY: i64 = 86_400_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn commit_all(
    st: &mut StateStore,
    out: &std::path::Path,
    run: &str,
    users: &[String],
    start: i64,
    end: i64,
) {
    for (i, chunk) in users.chunks(5000).enumerate() {
        let plan = CommitPlan {
            unit_progress: Some((format!("unit-{i}"), chunk.len() as u32)),
            watermarks: chunk
                .iter()
                .map(|u| WatermarkMove {
                    namespace: "incremental".into(),
                    user: u.clone(),
                    start_ms: start,
                    end_ms: end,
                })
                .collect(),
            ..Default::default()
        };
        st.commit(run, &plan, out, 0).expect("commit");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--users")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // Sorted, as the pipeline plans them (units are runs of consecutive ids).
    let mut users: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "91{:010}",
                7_000_000_000u64 + i as u64 * 104_729 % 2_999_999_999
            )
        })
        .collect();
    users.sort();
    let (mut save, mut load, mut update, mut upsert, mut read_users, mut resume, mut size) =
        (vec![], vec![], vec![], vec![], vec![], vec![], 0u64);
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path();
        let mut st = StateStore::open(&out.join("_state")).expect("open");
        let t = Instant::now();
        commit_all(&mut st, out, "night-1", &users, 0, DAY);
        save.push(t.elapsed().as_secs_f64());
        st.finish_run("night-1", "succeeded", "{}", 0)
            .expect("finish");

        let t = Instant::now();
        let marks = st.watermarks("incremental", "night-2").expect("load");
        load.push(t.elapsed().as_secs_f64());
        assert_eq!(marks.len(), n);

        let t = Instant::now();
        commit_all(&mut st, out, "night-2", &users, DAY, 2 * DAY);
        update.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let units = st.run_units("night-2").expect("units");
        resume.push(t.elapsed().as_secs_f64());
        assert_eq!(units.len(), n.div_ceil(5000));

        let rows: Vec<ExportedUser> = users
            .iter()
            .map(|u| ExportedUser {
                user: User {
                    channel_user_id: u.clone(),
                    channel: Some("whatsapp".into()),
                    user_name: Some("Asha".into()),
                    attributes: vec![
                        ("feedback".into(), "1".into()),
                        ("segment".into(), "vip".into()),
                    ],
                    matched_filters: vec!["feedback=1".into()],
                },
                run_id: "night-2".into(),
                extracted_at_ms: 0,
            })
            .collect();
        let t = Instant::now();
        st.upsert_users(&rows).expect("users");
        upsert.push(t.elapsed().as_secs_f64());
        st.finish_run("night-2", "succeeded", "{}", 0)
            .expect("finish");
        let t = Instant::now();
        assert_eq!(st.users().expect("read").len(), n);
        read_users.push(t.elapsed().as_secs_f64());
        drop(st);
        size = std::fs::read_dir(out.join("_state"))
            .expect("dir")
            .flatten()
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
    }
    println!("state store, {n} users (median of 3):");
    println!(
        "  save    first run, {} commits of 5,000 watermarks   {:>8.2} s",
        n.div_ceil(5000),
        median(save)
    );
    println!(
        "  load    all watermarks at run start              {:>8.2} s",
        median(load)
    );
    println!(
        "  update  next night, every watermark +1 day       {:>8.2} s",
        median(update)
    );
    println!(
        "  resume  committed units of a run                 {:>8.4} s",
        median(resume)
    );
    println!(
        "  users   upsert all users                         {:>8.2} s",
        median(upsert)
    );
    println!(
        "  users   read all users                           {:>8.2} s",
        median(read_users)
    );
    println!(
        "  size    state directory after the run            {:>8.1} MB",
        size as f64 / 1e6
    );
}
