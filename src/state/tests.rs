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
        checksum: Some(checksum::of_bytes(path.as_bytes())),
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

#[test]
fn recovery_removes_only_its_own_shards_staged_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mine = Shard { index: 1, count: 3 };
    let mut st = StateStore::open(&out.join("_state").join(mine.tag())).unwrap();
    st.claim_shard(Some(mine)).unwrap();
    let names = [
        ".part-20260801T0000-s1of3-a1b2c3d4e5f6-00000.parquet.20260812.tmp",
        ".part-20260801T0000-s2of3-a1b2c3d4e5f6-00000.parquet.20260812.tmp",
        ".part-20260801T0000-a1b2c3d4e5f6-00000.parquet.20260812.tmp",
        ".part-users-s0of3.parquet.20260812.tmp",
    ];
    for n in names {
        std::fs::write(out.join(n), "x").unwrap();
    }
    let (_, strays) = st.recover(out).unwrap();
    assert_eq!(strays, 1);
    let left: Vec<bool> = names.iter().map(|n| out.join(n).exists()).collect();
    assert_eq!(left, [false, true, true, true]);
    // An unsharded store's recovery leaves the shards' files alone too.
    let mut plain = StateStore::open(&out.join("plain")).unwrap();
    plain.claim_shard(None).unwrap();
    assert_eq!(plain.recover(out).unwrap().1, 1);
    assert!(out.join(names[1]).exists() && out.join(names[3]).exists());
}

#[test]
fn a_shards_state_is_refused_to_another_shard_and_to_unsharded_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s0 = Shard { index: 0, count: 3 };
    {
        let mut st = StateStore::open(dir.path()).unwrap();
        st.claim_shard(Some(s0)).unwrap();
    }
    let mut st = StateStore::open(dir.path()).unwrap();
    assert_eq!(st.shard(), Some(s0), "the claim is kept in the store");
    let err = st
        .claim_shard(Some(Shard { index: 1, count: 3 }))
        .unwrap_err();
    assert!(err.to_string().contains("shard 0/3"), "{err}");
    assert!(matches!(
        st.claim_shard(None),
        Err(StateError::Shard { .. })
    ));
    st.claim_shard(Some(s0)).unwrap();
    // A store an unsharded run used is not a shard's.
    let other = tempfile::tempdir().unwrap();
    let mut st = StateStore::open(other.path()).unwrap();
    st.begin_run("range", "h", "{}", None, "r1", 0).unwrap();
    assert!(st.claim_shard(Some(s0)).is_err());
    st.claim_shard(None).unwrap();
}

fn listed(id: &str, name: &str) -> User {
    User {
        channel_user_id: id.into(),
        channel: Some("whatsapp".into()),
        user_name: Some(name.into()),
        attributes: vec![("city".into(), name.into())],
        matched_filters: vec![],
    }
}

fn manifest(seq: u64, kind: ManifestKind, adds: &[&str], removes: &[&str]) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        kind,
        seq,
        writer: "w".into(),
        written_ms: 5,
        run: RunMeta {
            run_id: "r1".into(),
            namespace: "export".into(),
            params_hash: "h".into(),
            params: "{}".into(),
            until_ms: Some(10),
            started_ms: 1,
        },
        adds: adds.iter().map(|p| rec(p, "u1")).collect(),
        removes: removes.iter().map(|p| p.to_string()).collect(),
        unit: (kind == ManifestKind::Commit).then(|| UnitProgress {
            unit_key: format!("unit-{seq}"),
            cells_done: 3,
        }),
        watermarks: Vec::new(),
        status: (kind == ManifestKind::Finish).then(|| "succeeded".to_owned()),
        report: None,
    }
}

#[test]
fn listed_users_are_a_sorted_union_with_the_first_listing_winning() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = StateStore::open(dir.path()).unwrap();
    st.begin_listing().unwrap();
    st.add_listed_users(&[listed("b", "B"), listed("a", "A")], Some("opt1=yes"), 5)
        .unwrap();
    st.add_listed_users(
        &[listed("c", "C"), listed("a", "A2")],
        Some("segment=vip"),
        5,
    )
    .unwrap();
    st.add_listed_users(&[listed("a", "A3")], Some("opt1=yes"), 5)
        .unwrap();
    let all = st.listed_users_page(None, 10).unwrap();
    let ids: Vec<&str> = all.iter().map(|u| u.channel_user_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(all[0].user_name.as_deref(), Some("A"));
    assert_eq!(all[0].matched_filters, ["opt1=yes", "segment=vip"]);
    assert_eq!(all[1].matched_filters, ["opt1=yes"]);
    let page = st.listed_users_page(Some("a"), 1).unwrap();
    assert_eq!(page[0].channel_user_id, "b");
    assert_eq!(
        st.listed_user("c").unwrap().unwrap().user_name.as_deref(),
        Some("C")
    );
    assert_eq!(st.listed_user("z").unwrap(), None);
    // Cells: every user from 5 to 3 windows of 10 -> [5,10), [10,20), [20,25).
    let stats = st.listed_stats(25, crate::grid::Grid::epoch(10)).unwrap();
    assert_eq!(
        stats,
        ListedStats {
            users: 3,
            users_with_cells: 3,
            cells: 9,
            earliest_ms: Some(5)
        }
    );
    // A new listing replaces the old one; promoted users keep the latest attributes.
    assert_eq!(st.promote_listed_users("r1", 7).unwrap(), 3);
    st.begin_listing().unwrap();
    st.add_listed_users(&[listed("a", "A9")], None, 5).unwrap();
    st.promote_listed_users("r2", 8).unwrap();
    let users = st.users().unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(users[0].user.user_name.as_deref(), Some("A9"));
    assert_eq!(users[0].run_id, "r2");
    assert_eq!(users[1].run_id, "r1");
}

#[test]
fn incremental_ranges_start_from_the_watermark_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut st = StateStore::open(&out.join("_state")).unwrap();
    let mark = |user: &str, end| WatermarkMove {
        namespace: "incremental".into(),
        user: user.into(),
        start_ms: 0,
        end_ms: end,
    };
    let night1 = CommitPlan {
        watermarks: vec![mark("a", 100), mark("b", 1000)],
        ..Default::default()
    };
    st.commit("r1", &night1, out, 0).unwrap();
    // The resumed run r2 moved a's watermark and gave c its first one.
    let r2 = CommitPlan {
        watermarks: vec![
            mark("a", 200),
            WatermarkMove {
                start_ms: 50,
                ..mark("c", 300)
            },
        ],
        ..Default::default()
    };
    st.commit("r2", &r2, out, 0).unwrap();
    st.begin_listing().unwrap();
    let users: Vec<User> = ["a", "b", "c", "d"].iter().map(|u| listed(u, u)).collect();
    st.add_listed_users(&users, None, 10).unwrap();
    st.start_from_watermarks("main", "incremental", "r2", 10, 30, 500)
        .unwrap();
    let from: Vec<i64> = ["a", "b", "c", "d"]
        .iter()
        .map(|u| {
            let reader = ListedReader::open(st.path()).unwrap();
            let page = reader.page(None, i64::MAX, 10).unwrap();
            page.into_iter().find(|r| r.user == *u).unwrap().from_ms
        })
        .collect();
    // a: 100 (before r2) - 30; b: at until already; c: none before r2 -> start; d: new.
    assert_eq!(from, [70, 500, 10, 10]);
    let reader = ListedReader::open(st.path()).unwrap();
    let ids: Vec<String> = reader
        .page(Some("a"), 500, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.user)
        .collect();
    assert_eq!(ids, ["c", "d"], "b has no cell before until");
}

#[test]
fn replayed_manifests_rebuild_the_ledger_and_resume_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = StateStore::open(dir.path()).unwrap();
    assert!(
        st.apply_manifest("k", &manifest(1, ManifestKind::Start, &[], &[]))
            .unwrap()
    );
    let m2 = manifest(2, ManifestKind::Commit, &["a", "b"], &[]);
    assert!(st.apply_manifest("k", &m2).unwrap());
    assert!(!st.apply_manifest("k", &m2).unwrap(), "applied once");
    assert_eq!(st.last_manifest_seq("k").unwrap(), 2);
    // An unfinished run: resumed with its committed unit.
    let start = st
        .begin_run("export", "h", "{}", Some(10), "r2", 9)
        .unwrap();
    assert_eq!((start.run_id.as_str(), start.resumed), ("r1", true));
    assert_eq!(st.run_units("r1").unwrap().get("unit-2"), Some(&3));
    assert_eq!(st.ledger_paths().unwrap().len(), 2);
    // The manifests' records carry the checksums into the rebuilt ledger.
    let sums: Vec<Option<String>> = st
        .ledger_files()
        .unwrap()
        .into_iter()
        .map(|f| f.record.checksum)
        .collect();
    assert_eq!(
        sums,
        [
            Some(checksum::of_bytes(b"a")),
            Some(checksum::of_bytes(b"b"))
        ]
    );
}

#[test]
fn manifests_without_checksums_still_read_and_none_is_not_written() {
    let mut m = manifest(2, ManifestKind::Commit, &["a"], &[]);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["adds"][0]["checksum"], checksum::of_bytes(b"a"));
    // A manifest an older version wrote: no `checksum` in its records.
    m.adds[0].checksum = None;
    let old = serde_json::to_string(&m).unwrap();
    assert!(!old.contains("checksum"), "{old}");
    let back: Manifest = serde_json::from_str(&old).unwrap();
    assert_eq!(back.adds[0].checksum, None);
    let dir = tempfile::tempdir().unwrap();
    let mut st = StateStore::open(dir.path()).unwrap();
    st.apply_manifest("k", &back).unwrap();
    assert_eq!(st.ledger_files().unwrap()[0].record.checksum, None);
}

/// The `files` table as versions before the checksum column created it.
const FILES_WITHOUT_CHECKSUM: &str = "
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta(key, value) VALUES('schema_version', '1');
CREATE TABLE files(
  path TEXT PRIMARY KEY,
  stream TEXT NOT NULL,
  unit_key TEXT NOT NULL,
  cells_from INTEGER NOT NULL,
  cells_to INTEGER NOT NULL,
  min_user TEXT NOT NULL,
  max_user TEXT NOT NULL,
  min_ms INTEGER NOT NULL,
  max_ms INTEGER NOT NULL,
  rows INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  run_id TEXT NOT NULL,
  commit_id INTEGER NOT NULL);
INSERT INTO files VALUES('old', 'messages', 'k', 0, 1, 'u1', 'u1', 0, 10, 1, 3, 'r0', 1);
";

#[test]
fn a_store_without_the_checksum_column_reads_null_and_gains_the_column_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (out, state) = (dir.path(), dir.path().join("_state"));
    std::fs::create_dir_all(&state).unwrap();
    let db = Connection::open(state.join("state.sqlite3")).unwrap();
    db.execute_batch(FILES_WITHOUT_CHECKSUM).unwrap();
    drop(db);
    let old = |st: &StateStore| {
        let l = st.ledger_files().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].record.path.as_str(), l[0].run_id.as_str()),
            ("old", "r0")
        );
        assert_eq!(l[0].record.checksum, None);
        assert_eq!(st.files("messages").unwrap(), [l[0].record.clone()]);
        let over = st.overlapping_files("messages", 0, 10, "u0", "u2").unwrap();
        assert_eq!(over, [l[0].record.clone()]);
    };
    // Read-only (`verify`, `state show`): nothing is migrated, the checksum reads as NULL.
    let ro = StateStore::open_read_only(&state).unwrap();
    old(&ro);
    drop(ro);
    let has = |st: &mut StateStore| has_column(st.connection(), "files", "checksum").unwrap();
    // Opened for a run: the column is added, the old row keeps NULL, new rows get theirs.
    let mut st = StateStore::open(&state).unwrap();
    assert!(has(&mut st));
    old(&st);
    assert_eq!(st.meta("schema_version").unwrap().as_deref(), Some("1"));
    std::fs::write(out.join(".a.tmp"), "new").unwrap();
    let plan = CommitPlan {
        adds: vec![(".a.tmp".into(), "a".into())],
        records: vec![rec("a", "u1")],
        ..Default::default()
    };
    st.commit("r1", &plan, out, 0).unwrap();
    drop(st);
    // Opening again migrates nothing twice; read-only now sees the column.
    let mut st = StateStore::open(&state).unwrap();
    assert!(has(&mut st));
    drop(st);
    let ro = StateStore::open_read_only(&state).unwrap();
    let sums: Vec<(String, Option<String>)> = ro
        .ledger_files()
        .unwrap()
        .into_iter()
        .map(|f| (f.record.path, f.record.checksum))
        .collect();
    assert_eq!(
        sums,
        [
            ("a".to_owned(), Some(checksum::of_bytes(b"a"))),
            ("old".to_owned(), None)
        ]
    );
}

#[test]
fn a_path_removed_in_any_namespace_stays_dead_whatever_the_replay_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = StateStore::open(dir.path()).unwrap();
    // Namespace B's remove is replayed before namespace A's add of the same path.
    st.apply_manifest("b", &manifest(1, ManifestKind::Commit, &["c"], &["a"]))
        .unwrap();
    st.apply_manifest("a", &manifest(1, ManifestKind::Commit, &["a"], &[]))
        .unwrap();
    let live = st.ledger_paths().unwrap();
    assert!(live.contains("c") && !live.contains("a"), "{live:?}");
    assert!(st.removed_paths().unwrap().contains("a"));
    // A finished run is not resumed.
    st.apply_manifest("a", &manifest(2, ManifestKind::Finish, &[], &[]))
        .unwrap();
    let start = st
        .begin_run("export", "h", "{}", Some(10), "r3", 9)
        .unwrap();
    assert!(!start.resumed);
}
