use super::*;

fn rec(path: &str, user: &str) -> FileRecord {
    FileRecord {
        path: path.into(),
        stream: "messages".into(),
        unit_key: "k".into(),
        cells_from: 0,
        cells_to: 1,
        min_user: user.into(),
        max_user: user.into(),
        min_ms: 0,
        max_ms: 10,
        rows: 1,
        bytes: 1,
    }
}

#[test]
fn a_commit_renames_staged_files_and_replaces_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut st = StateStore::open(&out.join("_state")).unwrap();
    std::fs::write(out.join(".a.tmp"), "new").unwrap();
    std::fs::write(out.join("old"), "old").unwrap();
    let plan = CommitPlan {
        adds: vec![(".a.tmp".into(), "a".into())],
        removes: vec!["old".into()],
        records: vec![rec("a", "u1")],
        ..Default::default()
    };
    st.commit("r1", &plan, out, 0).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("a")).unwrap(), "new");
    assert!(!out.join("old").exists() && !out.join(".a.tmp").exists());
    assert_eq!(st.files("messages").unwrap().len(), 1);
    assert_eq!(
        st.overlapping_files("messages", 5, 20, "u0", "u2")
            .unwrap()
            .len(),
        1
    );
    assert!(
        st.overlapping_files("messages", 10, 20, "u0", "u2")
            .unwrap()
            .is_empty()
    );
    assert!(
        st.overlapping_files("messages", 0, 20, "u2", "u3")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn recovery_rolls_pending_commits_forward_and_removes_strays() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    {
        let st = StateStore::open(&out.join("_state")).unwrap();
        // Simulate a crash right after the transaction: pending commit, files not moved.
        let plan = CommitPlan {
            adds: vec![(".b.tmp".into(), "b".into())],
            removes: vec!["gone".into()],
            ..Default::default()
        };
        st.conn
            .execute(
                "INSERT INTO commits(run_id, state, plan, created_ms) VALUES('r', 'pending', ?1, 0)",
                [serde_json::to_string(&plan).unwrap()],
            )
            .unwrap();
    }
    std::fs::write(out.join(".b.tmp"), "b").unwrap();
    std::fs::write(out.join("gone"), "x").unwrap();
    std::fs::create_dir_all(out.join("messages")).unwrap();
    std::fs::write(out.join("messages/.stray.parquet.tmp"), "x").unwrap();
    let mut st = StateStore::open(&out.join("_state")).unwrap();
    assert_eq!(st.recover(out).unwrap(), (1, 1));
    assert!(out.join("b").exists() && !out.join("gone").exists());
    assert!(!out.join("messages/.stray.parquet.tmp").exists());
}

#[test]
fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = StateStore::open(dir.path()).unwrap();
    assert!(matches!(
        StateStore::open(dir.path()),
        Err(StateError::Locked(_))
    ));
}

#[test]
fn runs_resume_only_with_the_same_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = StateStore::open(dir.path()).unwrap();
    let a = st.begin_run("export", "h1", "{}", None, "r1", 1).unwrap();
    assert!(!a.resumed);
    let b = st.begin_run("export", "h1", "{}", None, "r2", 2).unwrap();
    assert_eq!(
        b,
        RunStart {
            run_id: "r1".into(),
            resumed: true
        }
    );
    st.finish_run("r1", "succeeded", "{}", 3).unwrap();
    let c = st.begin_run("export", "h1", "{}", None, "r3", 4).unwrap();
    assert_eq!(
        c,
        RunStart {
            run_id: "r3".into(),
            resumed: false
        }
    );
}

#[test]
fn watermarks_move_only_by_contiguous_extension_and_remember_the_start_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut st = StateStore::open(&out.join("_state")).unwrap();
    let mv = |s, e| WatermarkMove {
        namespace: "incremental".into(),
        user: "u".into(),
        start_ms: s,
        end_ms: e,
    };
    let plan = |m: Vec<WatermarkMove>| CommitPlan {
        watermarks: m,
        ..Default::default()
    };
    st.commit("r1", &plan(vec![mv(0, 10)]), out, 0).unwrap();
    st.finish_run("r1", "succeeded", "{}", 0).unwrap();
    st.commit("r2", &plan(vec![mv(5, 10)]), out, 0).unwrap(); // lookback: no move
    st.commit("r2", &plan(vec![mv(10, 20)]), out, 0).unwrap();
    st.commit("r2", &plan(vec![mv(20, 30)]), out, 0).unwrap();
    assert_eq!(st.watermarks("incremental", "other").unwrap()["u"], (0, 30));
    assert_eq!(st.watermarks("incremental", "r2").unwrap()["u"], (0, 10));
    st.commit("r2", &plan(vec![mv(40, 50)]), out, 0).unwrap(); // a gap: no move
    assert_eq!(st.watermarks("incremental", "x").unwrap()["u"], (0, 30));
}
