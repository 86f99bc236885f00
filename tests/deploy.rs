//! The deployment examples under `deploy/` run as written: the Kubernetes YAML parses, its Jobs
//! map our exit codes, its pipeline file validates and its command lines parse with the
//! binary's own flags (compared with `--help`); the Airflow DAG's command lines do too (read
//! with Python's `ast`; imported with Airflow where installed); the systemd units pass
//! `systemd-analyze verify`.
//!
//! Flags that another piece of work is adding (issue 11: sharding, object-storage state) are
//! declared in each file's header under "RELIES ON FLAGS NOT YET IN THIS BINARY"; while the
//! binary lacks them they are printed as pending and left out of the check, once it has them
//! they are checked like the rest. Any other unknown flag fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use engati_etl::cli::Cli;
use yaml_rust2::{Yaml, YamlLoader};

use crate::util::*;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// The `--flags` that `engati-etl <sub> --help` shows.
async fn help_flags(sub: &str) -> BTreeSet<String> {
    let o = run(&args(&[sub, "--help"]), None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    let re = regex::Regex::new(r"--[a-z][a-z0-9-]*").unwrap();
    re.find_iter(&help).map(|m| m.as_str().to_owned()).collect()
}

/// Flags a file declares as pending (its header's "RELIES ON FLAGS NOT YET IN THIS BINARY").
fn declared_pending(text: &str) -> BTreeSet<String> {
    let Some(at) = text.find("RELIES ON FLAGS NOT YET IN THIS BINARY") else {
        return BTreeSet::new();
    };
    let block: String = text[at..].lines().take(6).collect::<Vec<_>>().join("\n");
    let re = regex::Regex::new(r"--[a-z][a-z0-9-]*").unwrap();
    re.find_iter(&block)
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// Checks one command line (`args` after the program name) against the binary: every flag is
/// in `--help` or declared pending; without the pending ones (and their values) the line
/// parses with the binary's own CLI definition. Returns the pending flags it met.
async fn check_command(file: &str, args: &[String], pending: &BTreeSet<String>) -> Vec<String> {
    let sub = args[0].as_str();
    let known = help_flags(sub).await;
    let mut missing = Vec::new();
    let mut kept = vec!["engati-etl".to_owned()];
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if a.starts_with("--") {
            let flag = a.split('=').next().unwrap().to_owned();
            if !known.contains(&flag) {
                assert!(
                    pending.contains(&flag),
                    "{file}: `engati-etl {sub}` has no flag {flag} (not in --help, not declared pending)"
                );
                missing.push(flag);
                skip_value = !a.contains('=');
                continue;
            }
        }
        kept.push(a.replace("{...}", "x"));
    }
    if let Err(e) = Cli::try_parse_from(&kept) {
        panic!("{file}: {kept:?} does not parse: {e}");
    }
    missing
}

fn note_pending(file: &str, missing: &[String]) {
    if !missing.is_empty() {
        let set: BTreeSet<&String> = missing.iter().collect();
        let list: Vec<&str> = set.into_iter().map(String::as_str).collect();
        // Straight to the process's stderr (not the test's captured output): CI logs show it.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "NOTE {file}: flags not in this binary yet, skipped (issue 11): {}",
            list.join(" ")
        );
    }
}

/// The engati-etl containers' command lines (args after `engati-etl`) in a YAML document.
fn containers(doc: &Yaml, out: &mut Vec<Vec<String>>) {
    match doc {
        Yaml::Hash(h) => {
            if let Some(Yaml::Array(cmd)) = h.get(&Yaml::String("command".into()))
                && cmd.first().and_then(Yaml::as_str) == Some("engati-etl")
            {
                let mut line: Vec<String> = cmd[1..].iter().map(scalar).collect();
                if let Some(Yaml::Array(a)) = h.get(&Yaml::String("args".into())) {
                    line.extend(a.iter().map(scalar));
                }
                out.push(line);
            }
            for v in h.values() {
                containers(v, out);
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| containers(v, out)),
        _ => {}
    }
}

fn scalar(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn find<'a>(doc: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(doc, |d, k| &d[*k])
}

/// The Job's podFailurePolicy maps 2/3/4 to a failure at once, 5/6/7 to a counted retry, 130 and
/// disruptions to an uncounted one.
fn assert_exit_code_policy(file: &str, job: &Yaml) {
    let rules = job["podFailurePolicy"]["rules"]
        .as_vec()
        .unwrap_or_else(|| panic!("{file}: podFailurePolicy"));
    let action_for = |code: i64| {
        rules
            .iter()
            .find(|r| {
                r["onExitCodes"]["values"]
                    .as_vec()
                    .is_some_and(|v| v.contains(&Yaml::Integer(code)))
            })
            .and_then(|r| r["action"].as_str())
            .unwrap_or_else(|| panic!("{file}: no rule for exit code {code}"))
    };
    for code in [2, 3, 4] {
        assert!(
            matches!(action_for(code), "FailJob" | "FailIndex"),
            "{file}: {code}"
        );
    }
    for code in [5, 6, 7] {
        assert_eq!(action_for(code), "Count", "{file}: {code}");
    }
    assert_eq!(action_for(130), "Ignore", "{file}: 130");
    assert!(
        rules.iter().any(|r| r["action"].as_str() == Some("Ignore")
            && r["onPodConditions"][0]["type"].as_str() == Some("DisruptionTarget")),
        "{file}: disruptions ignored"
    );
    assert_eq!(
        job["template"]["spec"]["restartPolicy"].as_str(),
        Some("Never"),
        "{file}"
    );
}

#[tokio::test]
async fn kubernetes_manifests_parse_map_exit_codes_and_use_only_real_flags() {
    for file in [
        "kubernetes/nightly-cronjob.yaml",
        "kubernetes/backfill-indexed-job.yaml",
        "kubernetes/secret.example.yaml",
    ] {
        let text = std::fs::read_to_string(deploy(file)).unwrap();
        let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!docs.is_empty(), "{file}");
        let pending = declared_pending(&text);
        let mut missing = Vec::new();
        for doc in &docs {
            assert!(
                doc["apiVersion"].as_str().is_some() && doc["kind"].as_str().is_some(),
                "{file}"
            );
            match doc["kind"].as_str().unwrap() {
                "CronJob" => {
                    assert_exit_code_policy(file, find(doc, &["spec", "jobTemplate", "spec"]))
                }
                "Job" => assert_exit_code_policy(file, &doc["spec"]),
                "ConfigMap" => {
                    let data = doc["data"].as_hash().unwrap();
                    for (name, toml) in data {
                        let f: engati_etl::config::PipelineFile =
                            toml::from_str(toml.as_str().unwrap())
                                .unwrap_or_else(|e| panic!("{file}: {name:?}: {e}"));
                        engati_etl::config::validate(
                            &f,
                            engati_etl::config::Command::Run,
                            day("2026-08-01"),
                        )
                        .unwrap_or_else(|e| panic!("{file}: {name:?}: {e}"));
                    }
                }
                _ => {}
            }
            let mut lines = Vec::new();
            containers(doc, &mut lines);
            for line in lines {
                missing.extend(check_command(file, &line, &pending).await);
            }
        }
        note_pending(file, &missing);
    }
}

#[tokio::test]
async fn the_airflow_dag_parses_and_its_command_lines_use_only_real_flags() {
    let dag = deploy("airflow/engati_etl_dag.py");
    let o = tokio::process::Command::new("python3")
        .args([deploy("airflow/check_dag.py"), dag.clone()])
        .output()
        .await
        .expect("python3 runs (the DAG is read with its ast module)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let commands = v["commands"].as_array().unwrap();
    let subs: BTreeSet<&str> = commands.iter().map(|c| c[0].as_str().unwrap()).collect();
    assert_eq!(subs, BTreeSet::from(["run", "backfill"]), "{v}");
    let pending = declared_pending(&std::fs::read_to_string(&dag).unwrap());
    let mut missing = Vec::new();
    for c in commands {
        let line: Vec<String> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        missing.extend(check_command("airflow/engati_etl_dag.py", &line, &pending).await);
    }
    note_pending("airflow/engati_etl_dag.py", &missing);
}

#[tokio::test]
#[ignore = "needs apache-airflow: AIRFLOW_PY, a python with it installed (bash .ci/run sets it up)"]
async fn the_airflow_dag_imports_under_airflow() {
    let py = std::env::var("AIRFLOW_PY").expect("AIRFLOW_PY is not set: run bash .ci/run");
    let home = tempfile::tempdir().unwrap();
    let o = tokio::process::Command::new(py)
        .args([
            deploy("airflow/check_dag.py"),
            deploy("airflow/engati_etl_dag.py"),
            "--import".into(),
        ])
        .env("AIRFLOW_HOME", home.path())
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
        .output()
        .await
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // Airflow may log on stdout: the JSON is the last line.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        v["dags"]["engati_etl_nightly"],
        serde_json::json!(["export"]),
        "{v}"
    );
    assert_eq!(
        v["dags"]["engati_etl_backfill"],
        serde_json::json!(["shard"]),
        "{v}"
    );
}

#[tokio::test]
async fn the_systemd_units_verify_and_their_command_line_uses_only_real_flags() {
    let service = std::fs::read_to_string(deploy("systemd/engati-etl-nightly.service")).unwrap();
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[0], "/usr/local/bin/engati-etl");
    let missing = check_command("systemd", &words[1..], &BTreeSet::new()).await;
    assert!(missing.is_empty());
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "NOTE systemd: systemd-analyze is not on this machine; the units were not verified"
        );
        return;
    }
    // verify checks that ExecStart's program exists and that the man page named in
    // Documentation= resolves: use the binary under test and its generated man pages.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("engati-etl-nightly.service"),
        service.replace("/usr/local/bin/engati-etl", bin()),
    )
    .unwrap();
    std::fs::copy(
        deploy("systemd/engati-etl-nightly.timer"),
        dir.path().join("engati-etl-nightly.timer"),
    )
    .unwrap();
    let man = dir.path().join("man");
    let o = run(
        &args(&["manpage", "--out-dir", man.join("man1").to_str().unwrap()]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = tokio::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("engati-etl-nightly.service"))
        .arg(dir.path().join("engati-etl-nightly.timer"))
        .env("MANPATH", &man)
        .output()
        .await
        .unwrap();
    assert!(
        o.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
