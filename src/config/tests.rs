use super::*;
use crate::engati::UsersSource;
use crate::sink::OutputSpec;

fn base() -> PipelineFile {
    toml::from_str(
        r#"
        [source]
        provider = "engati"
        customer_id = 61179
        bot_key = "bb67e0773bed4c7e"
        attributes = ["feedback=1"]
        [range]
        since = "2026-01-01"
        until = "2026-02-01"
        [sink]
        format = "parquet"
        out = "out/x"
    "#,
    )
    .unwrap()
}

#[test]
fn a_complete_file_validates_with_defaults() {
    let s = validate(&base(), Command::Run, 0).unwrap();
    let c = &s.source.client;
    assert_eq!(c.base_url, "https://api.engati.ai/");
    assert_eq!(c.customer_id, "61179");
    assert_eq!(
        (s.source.page_size, c.concurrency, c.max_rps),
        (500, 16, 50)
    );
    assert_eq!(s.range.window_ms, crate::time::DAY_MS);
    assert_eq!(s.namespace, "range");
    let OutputSpec::Files(f) = &s.output else {
        panic!("files")
    };
    assert_eq!(f.out_dir, Path::new("out/x"));
    assert_eq!(f.state_dir, Path::new("out/x/_state"));
}

#[test]
fn flags_override_the_file() {
    let flags = SourceSection {
        concurrency: Some(crate::engati::adaptive::Concurrency::Fixed(4)),
        attributes: Some(vec!["segment=vip".into()]),
        ..Default::default()
    };
    let s = validate(
        &base().merge_flags(Some(&flags), None, None),
        Command::Run,
        0,
    )
    .unwrap();
    assert_eq!(s.source.client.concurrency, 4);
    assert_eq!(
        s.source.users,
        UsersSource::Filters(vec!["segment=vip".parse().unwrap()])
    );
}

#[test]
fn every_problem_is_named_at_once() {
    let source = SourceSection {
        attributes: Some(vec!["nonsense".into()]),
        page_size: Some(900),
        provider: Some(crate::engati::provider::Provider::Custom),
        ..Default::default()
    };
    let range = RangeSection {
        since: Some("2026-03-01".into()),
        ..Default::default()
    };
    let err = validate(
        &base().merge_flags(Some(&source), Some(&range), None),
        Command::Run,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("since 2026-03-01 must be before until 2026-02-01"),
        "{err}"
    );
    assert!(
        err.contains("`nonsense` must look like NAME=VALUE"),
        "{err}"
    );
    assert!(err.contains("page_size (--page-size) 900"), "{err}");
    assert!(
        err.contains("base_url (--base-url) is required for provider `custom`"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    std::fs::write(&f, "[source]\nprovider = \"engati\"\nconcurency = 4\n").unwrap();
    let err = PipelineFile::load(&f).unwrap_err().to_string();
    assert!(err.contains("concurency"), "{err}");
}

#[test]
fn stdout_needs_jsonl_and_the_key_never_comes_from_flags() {
    let sink = SinkSection {
        out: Some("-".into()),
        ..Default::default()
    };
    let err = validate(
        &base().merge_flags(None, None, Some(&sink)),
        Command::Export,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs --format jsonl"), "{err}");
    let err = read_key(None, None).unwrap_err().to_string();
    assert!(err.contains("ENGATI_API_KEY"), "{err}");
    assert_eq!(read_key(None, Some("abc".into())).unwrap().expose(), "abc");
}

#[test]
fn a_toml_date_is_read_as_a_date() {
    let f: PipelineFile = toml::from_str(
        "[source]\nprovider = \"engati\"\ncustomer_id = 1\nbot_key = \"ab\"\nattributes = [\"a=b\"]\n[range]\nsince = 2026-08-01\nuntil = 2026-08-03T00:00:00Z\n[sink]\nout = \"o\"\n",
    )
    .unwrap();
    let s = validate(&f, Command::Run, 0).unwrap();
    assert_eq!(
        s.range.mode,
        crate::plan::Mode::Range {
            since_ms: 1_785_542_400_000,
            until_ms: 1_785_542_400_000 + 2 * crate::time::DAY_MS
        }
    );
}

#[test]
fn enums_are_typed_in_files_and_flags() {
    let err = toml::from_str::<PipelineFile>("[sink]\nformat = \"csv\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("csv") && err.contains("parquet"), "{err}");
    use clap::Parser;
    let e = crate::cli::Cli::try_parse_from(["engati-etl", "export", "--format", "csv"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("format (--format) `csv` must be parquet, jsonl, crm or delta"),
        "{e}"
    );
}

#[test]
fn an_object_store_out_writes_files_through_a_mirror_under_the_state_dir() {
    let mut f = base();
    f.sink.out = Some("s3://bucket/exports/engati".into());
    f.sink.state_dir = Some("st".into());
    let s = validate(&f, Command::Run, 0).unwrap();
    let OutputSpec::Files(x) = &s.output else {
        panic!("files")
    };
    assert_eq!(x.remote.as_deref(), Some("s3://bucket/exports/engati"));
    assert_eq!(
        (x.out_dir.as_path(), x.state_dir.as_path()),
        (Path::new("st/mirror"), Path::new("st"))
    );
    assert_eq!(s.output.location(), "s3://bucket/exports/engati");
    assert_eq!(s.output.out_dir(), Some(Path::new("st")));
    // A shard stages in a mirror of its own, under its own state directory.
    f.source.shard = Some("1/3".into());
    let s = validate(&f, Command::Run, 0).unwrap();
    let OutputSpec::Files(x) = &s.output else {
        panic!("files")
    };
    assert_eq!(
        (x.out_dir.as_path(), x.state_dir.as_path()),
        (Path::new("st/s1of3/mirror"), Path::new("st/s1of3"))
    );
}

#[test]
fn concurrency_auto_takes_max_concurrency_as_its_ceiling() {
    let mut f = base();
    let s = validate(&f, Command::Run, 0).unwrap();
    assert!(!s.source.client.adaptive, "fixed 16 by default");
    f.source.concurrency = Some(crate::engati::adaptive::Concurrency::Auto);
    let s = validate(&f, Command::Run, 0).unwrap();
    assert!(s.source.client.adaptive);
    assert_eq!(s.source.client.concurrency, DEFAULT_MAX_CONCURRENCY);
    f.source.max_concurrency = Some(8);
    let s = validate(&f, Command::Run, 0).unwrap();
    assert_eq!(s.source.client.concurrency, 8);
    // From a pipeline file: `concurrency = "auto"`; a number out of range is named.
    let text = r#"
        [source]
        provider = "engati"
        customer_id = 61179
        bot_key = "bb67e0773bed4c7e"
        attributes = ["feedback=1"]
        concurrency = "auto"
        max_concurrency = 12
        [range]
        since = "2026-01-01"
        until = "2026-02-01"
        [sink]
        format = "parquet"
        out = "out/x"
    "#;
    let f: PipelineFile = toml::from_str(text).unwrap();
    let s = validate(&f, Command::Run, 0).unwrap();
    assert_eq!(
        (s.source.client.adaptive, s.source.client.concurrency),
        (true, 12)
    );
    let f: PipelineFile = toml::from_str(&text.replace("\"auto\"", "0")).unwrap();
    let e = validate(&f, Command::Run, 0).unwrap_err().to_string();
    assert!(
        e.contains("concurrency (--concurrency) 0 must be auto or between 1 and 1024"),
        "{e}"
    );
    assert!(toml::from_str::<PipelineFile>(&text.replace("\"auto\"", "\"many\"")).is_err());
}

#[test]
fn adaptive_windows_take_max_window_and_refuse_it_with_a_fixed_window() {
    let auto = RangeSection {
        window: Some("auto".into()),
        ..Default::default()
    };
    let s = validate(
        &base().merge_flags(None, Some(&auto), None),
        Command::Run,
        0,
    )
    .unwrap();
    assert_eq!(s.range.windowing, crate::plan::Windowing::Auto);
    assert_eq!(s.range.window_ms, 31 * crate::time::DAY_MS);
    // The grid starts a window at `since`, so a range within max_window is one cell.
    let since = crate::time::parse_user_instant("2026-01-01", 0).unwrap();
    assert_eq!(s.range.grid().window_of(since).start_ms, since);
    assert_eq!(s.range.window_text(), "auto up to 31d");

    let fixed_with_max = RangeSection {
        max_window: Some("90d".into()),
        ..Default::default()
    };
    let err = validate(
        &base().merge_flags(None, Some(&fixed_with_max), None),
        Command::Run,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_window (--max-window) 90d applies only to window = \"auto\""),
        "{err}"
    );
    let too_short = RangeSection {
        window: Some("auto".into()),
        max_window: Some("10s".into()),
        ..Default::default()
    };
    let err = validate(
        &base().merge_flags(None, Some(&too_short), None),
        Command::Run,
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("max_window (--max-window) 10s is too short"),
        "{err}"
    );
}
