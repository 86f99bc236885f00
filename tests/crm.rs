//! The CRM sink against the HubSpot emulator (and a real BottleCRM when CI provides one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::util::*;
use engati_etl::sandbox::hubspot::{self, HubSpotConfig, HubSpotFault, HubSpotHandle, Object};
use engati_etl::sandbox::{SandboxHandle, StoredMessage};

const GAP: i64 = 30 * 60_000;

/// Sessions per user, computed independently from the sandbox's data: split at gaps > 30 min.
fn sessions(
    sb: &SandboxHandle,
    users: &[String],
    since: i64,
    until: i64,
) -> BTreeMap<String, Vec<Vec<StoredMessage>>> {
    let mut out = BTreeMap::new();
    for u in users {
        let i = sb.data().user_index(u).unwrap();
        let mut list: Vec<Vec<StoredMessage>> = Vec::new();
        for m in sb.data().messages_between(i, since, until) {
            match list.last_mut() {
                Some(s) if m.ts_ms - s.last().unwrap().ts_ms <= GAP => s.push(m),
                _ => list.push(vec![m]),
            }
        }
        if !list.is_empty() {
            out.insert(u.clone(), list);
        }
    }
    out
}

/// The contact a user should have: `+<id>` for WhatsApp users, else the email attribute.
fn contact_key(sb: &SandboxHandle, user: &str) -> Option<(String, String)> {
    let u = sb
        .data()
        .users()
        .into_iter()
        .find(|x| x.channel_user_id == user)?;
    if u.channel == "whatsapp" {
        return Some(("phone".into(), format!("+{user}")));
    }
    u.attributes
        .iter()
        .find(|(k, _)| k == "email")
        .map(|(_, v)| ("email".into(), v.to_ascii_lowercase()))
}

fn crm_args(
    sb: &SandboxHandle,
    hs: &HubSpotHandle,
    state: &Path,
    since: &str,
    until: &str,
    attr: &str,
) -> Vec<String> {
    with(
        export_args(sb, since, until),
        &[
            "--attribute",
            attr,
            "--max-rps",
            "2000",
            "--format",
            "crm",
            "--crm",
            "hubspot",
            "--crm-base-url",
            &hs.base_url,
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )
}

async fn run_crm(sb: &SandboxHandle, hs: &HubSpotHandle, args: &[String]) -> std::process::Output {
    run_env(
        args,
        &[
            ("ENGATI_API_KEY", &sb.ids.api_key),
            ("HUBSPOT_ACCESS_TOKEN", &hs.token),
        ],
    )
    .await
}

/// Checks every user's timeline: one communication per session, with the right header,
/// channel type and association, and no contact twice.
fn check_timelines(
    sb: &SandboxHandle,
    hs: &HubSpotHandle,
    want: &BTreeMap<String, Vec<Vec<StoredMessage>>>,
) -> usize {
    let contacts = hs.contacts();
    let mut seen = HashSet::new();
    for c in &contacts {
        let key = c
            .properties
            .get("phone")
            .or(c.properties.get("email"))
            .cloned()
            .unwrap_or_default();
        assert!(seen.insert(key.clone()), "two contacts for {key}");
    }
    let mut total = 0;
    for (user, sessions) in want {
        let Some((prop, value)) = contact_key(sb, user) else {
            continue;
        };
        let c: &Object = contacts
            .iter()
            .find(|c| c.properties.get(&prop) == Some(&value))
            .unwrap_or_else(|| panic!("no contact with {prop} {value}"));
        let timeline = hs.timeline(&c.id);
        assert_eq!(
            timeline.len(),
            sessions.len(),
            "user {user}: one communication per session"
        );
        let whatsapp = prop == "phone";
        for (comm, s) in timeline.iter().zip(sessions) {
            let body = &comm.properties["hs_communication_body"];
            assert!(
                body.contains(&format!("· {} messages ·", s.len())),
                "{user}: {body}"
            );
            assert_eq!(
                comm.properties["hs_communication_channel_type"],
                if whatsapp { "WHATS_APP" } else { "SMS" }
            );
            assert_eq!(comm.properties["hs_communication_logged_from"], "CRM");
            let start = engati_etl::time::rfc3339_ms(s[0].ts_ms);
            assert_eq!(
                comm.properties["hs_timestamp"], start,
                "timestamped at the session start"
            );
            for m in s.iter().filter(|m| {
                m.message_type == "TEXT"
                    && m.sender == "user"
                    && m.response.chars().all(|c| c.is_alphanumeric() || c == ' ')
            }) {
                assert!(
                    body.contains(m.response.as_ref()),
                    "{user}: the transcript has `{}`",
                    m.response
                );
            }
            total += 1;
        }
    }
    total
}

/// Validates every request the sink sent with HubSpot's own client models, when `validate`
/// (the ignored variants, which `bash .ci/run` runs with HUBSPOT_VALIDATE_PY set).
async fn validate_requests(hs: &HubSpotHandle, dir: &Path, validate: bool) {
    if !validate {
        return;
    }
    let py = std::env::var("HUBSPOT_VALIDATE_PY").unwrap_or_else(|_| {
        panic!(
            "HUBSPOT_VALIDATE_PY is not set: run tools/hubspot_validate/setup.sh (or bash .ci/run)"
        )
    });
    let file = dir.join("hubspot-requests.jsonl");
    std::fs::write(&file, hs.calls_jsonl()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/hubspot_validate/validate.py"
    );
    let o = tokio::process::Command::new(py)
        .args([script, "--quiet", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "hubspot-api-client models refused requests:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{}", out.lines().last().unwrap_or(""));
}

fn crm_report(state: &Path) -> serde_json::Value {
    report(state)["sink"]["crm"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_timelines_get_one_transcript_per_session_and_a_rerun_changes_nothing() {
    hubspot_timelines_get_one_transcript_per_session_and_a_rerun_changes_nothing_scenario(false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HubSpot's client models: HUBSPOT_VALIDATE_PY (bash .ci/run sets it up)"]
async fn hubspot_timelines_get_one_transcript_per_session_and_a_rerun_changes_nothing_validated_by_hubspots_models()
 {
    hubspot_timelines_get_one_transcript_per_session_and_a_rerun_changes_nothing_scenario(true)
        .await;
}

async fn hubspot_timelines_get_one_transcript_per_session_and_a_rerun_changes_nothing_scenario(
    validate: bool,
) {
    let sb = start(small()).await;
    let hs = hubspot::start(HubSpotConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = crm_args(&sb, &hs, &state, "2026-08-01", "2026-08-11", "opt1=yes");
    let o = run_crm(&sb, &hs, &args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = sessions(&sb, &users, day("2026-08-01"), day("2026-08-11"));
    let total = check_timelines(&sb, &hs, &want);
    assert!(total > 20, "{total} sessions checked");
    let r = crm_report(&state);
    assert_eq!(
        r["activities_created"].as_u64().unwrap() as usize,
        total,
        "{r}"
    );
    // Contacts are looked up for users who wrote in the range.
    let mapped = want
        .keys()
        .filter(|u| contact_key(&sb, u).is_some())
        .count() as u64;
    assert_eq!(
        r["contacts_created"].as_u64().unwrap() + r["contacts_matched"].as_u64().unwrap(),
        mapped,
        "{r}"
    );
    assert_eq!(
        r["contacts_skipped"].as_u64().unwrap(),
        want.len() as u64 - mapped,
        "{r}"
    );
    let comms = hs.communications().len();
    let contacts = hs.contacts().len();

    // The same export again: nothing created, nothing updated.
    let o = run_crm(&sb, &hs, &args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = crm_report(&state);
    assert_eq!(
        (
            r["activities_created"].as_u64(),
            r["activities_updated"].as_u64()
        ),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["activities_unchanged"].as_u64().unwrap() as usize, total);
    assert_eq!(
        (hs.communications().len(), hs.contacts().len()),
        (comms, contacts)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).is_empty()
            || !String::from_utf8_lossy(&o.stderr).contains(&hs.token)
    );
    validate_requests(&hs, dir.path(), validate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_grows_updates_its_activity_instead_of_adding_one() {
    a_session_that_grows_updates_its_activity_instead_of_adding_one_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HubSpot's client models: HUBSPOT_VALIDATE_PY (bash .ci/run sets it up)"]
async fn a_session_that_grows_updates_its_activity_instead_of_adding_one_validated_by_hubspots_models()
 {
    a_session_that_grows_updates_its_activity_instead_of_adding_one_scenario(true).await;
}

async fn a_session_that_grows_updates_its_activity_instead_of_adding_one_scenario(validate: bool) {
    let sb = start(small()).await;
    let hs = hubspot::start(HubSpotConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let users = matching(&sb, &[("opt1", "no")]);
    let want = sessions(&sb, &users, day("2026-08-01"), day("2026-08-09"));
    // Cut the first export in the middle of a mapped user's session.
    let (_, cut_session) = want
        .iter()
        .filter(|(u, _)| contact_key(&sb, u).is_some())
        .flat_map(|(u, s)| s.iter().map(move |x| (u, x)))
        .find(|(_, s)| s.len() >= 3 && s[1].ts_ms > s[0].ts_ms)
        .expect("a session of three messages");
    let cut = engati_etl::time::rfc3339_ms(cut_session[1].ts_ms);
    let o = run_crm(
        &sb,
        &hs,
        &crm_args(&sb, &hs, &state, "2026-08-01", &cut, "opt1=no"),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run_crm(
        &sb,
        &hs,
        &crm_args(&sb, &hs, &state, "2026-08-01", "2026-08-09", "opt1=no"),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = crm_report(&state);
    assert!(r["activities_updated"].as_u64().unwrap() >= 1, "{r}");
    check_timelines(&sb, &hs, &want);
    assert!(hs.communications().iter().any(|c| c.updates > 0));
    validate_requests(&hs, dir.path(), validate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_errors_are_dead_lettered_and_retried_next_run_while_the_rest_proceeds() {
    per_item_errors_are_dead_lettered_and_retried_next_run_while_the_rest_proceeds_scenario(false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HubSpot's client models: HUBSPOT_VALIDATE_PY (bash .ci/run sets it up)"]
async fn per_item_errors_are_dead_lettered_and_retried_next_run_while_the_rest_proceeds_validated_by_hubspots_models()
 {
    per_item_errors_are_dead_lettered_and_retried_next_run_while_the_rest_proceeds_scenario(true)
        .await;
}

async fn per_item_errors_are_dead_lettered_and_retried_next_run_while_the_rest_proceeds_scenario(
    validate: bool,
) {
    let sb = start(small()).await;
    let hs = hubspot::start(HubSpotConfig::default()).await.unwrap();
    hs.script([
        HubSpotFault::Throttle,
        HubSpotFault::BadGateway,
        HubSpotFault::RejectInput(0),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = crm_args(
        &sb,
        &hs,
        &state,
        "2026-08-01",
        "2026-08-06",
        "segment=regular",
    );
    let o = run_crm(&sb, &hs, &args).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "completed with rejects: {}",
        text(&o)
    );
    let users = matching(&sb, &[("segment", "regular")]);
    let want = sessions(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    let expected_total: usize = want
        .iter()
        .filter(|(u, _)| contact_key(&sb, u).is_some())
        .map(|(_, s)| s.len())
        .sum();
    assert_eq!(
        hs.communications().len(),
        expected_total - 1,
        "all but the rejected one"
    );
    let dead: Vec<serde_json::Value> = files_under(&state.join("_dead_letter"))
        .iter()
        .flat_map(|f| json_lines(f))
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("VALIDATION_ERROR"),
        "{}",
        dead[0]
    );
    assert_eq!(crm_report(&state)["rejects"], 1);
    let statuses: Vec<u16> = hs.calls().iter().map(|c| c.status).collect();
    assert!(
        statuses.contains(&429) && statuses.contains(&502) && statuses.contains(&207),
        "{statuses:?}"
    );
    // Next run: the refused session goes in; nothing else changes.
    let o = run_crm(&sb, &hs, &args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(crm_report(&state)["activities_created"], 1);
    check_timelines(&sb, &hs, &want);
    validate_requests(&hs, dir.path(), validate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_budget_keeps_under_hubspots_rolling_limit() {
    let mut cfg = small();
    cfg.data.users = 40;
    let sb = start(cfg).await;
    let hs = hubspot::start(HubSpotConfig {
        rate_per_10s: 20,
        ..HubSpotConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "[source]\nprovider = \"custom\"\nbase_url = \"{}\"\ncustomer_id = \"{}\"\nbot_key = \"{}\"\nattributes = [\"opt1=yes\", \"opt1=no\"]\nmax_rps = 2000\n[range]\nsince = \"2026-08-01\"\nuntil = \"2026-08-04\"\n[sink]\nformat = \"crm\"\ncrm = \"hubspot\"\ncrm_base_url = \"{}\"\nstate_dir = \"{}\"\ncrm_requests_per_10s = 20\ncheckpoint_users = 5\n",
            sb.base_url, sb.ids.customer_id, sb.ids.bot_key, hs.base_url, state.display()
        ),
    )
    .unwrap();
    let o = run_env(
        &args(&["run", p.to_str().unwrap(), "--quiet"]),
        &[
            ("ENGATI_API_KEY", &sb.ids.api_key),
            ("HUBSPOT_ACCESS_TOKEN", &hs.token),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let calls = hs.calls();
    assert!(
        calls.len() > 20,
        "enough requests to need the budget: {}",
        calls.len()
    );
    assert!(
        calls.iter().all(|c| c.status != 429),
        "the proactive budget avoided every 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_crm_writes_and_the_ledger_creates_nothing_twice() {
    a_crash_between_crm_writes_and_the_ledger_creates_nothing_twice_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HubSpot's client models: HUBSPOT_VALIDATE_PY (bash .ci/run sets it up)"]
async fn a_crash_between_crm_writes_and_the_ledger_creates_nothing_twice_validated_by_hubspots_models()
 {
    a_crash_between_crm_writes_and_the_ledger_creates_nothing_twice_scenario(true).await;
}

async fn a_crash_between_crm_writes_and_the_ledger_creates_nothing_twice_scenario(validate: bool) {
    let sb = start(small()).await;
    let hs = hubspot::start(HubSpotConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = crm_args(&sb, &hs, &state, "2026-08-01", "2026-08-08", "opt1=yes");
    let o = run_crm(
        &sb,
        &hs,
        &with(args.clone(), &["--crash-after-crm-writes", "2"]),
    )
    .await;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("crash injected"),
        "{}",
        text(&o)
    );
    let before = hs.communications().len();
    assert!(before > 0);
    let o = run_crm(&sb, &hs, &args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = crm_report(&state);
    assert!(
        r["activities_recovered"].as_u64().unwrap() > 0,
        "pending creates were found in HubSpot: {r}"
    );
    let users = matching(&sb, &[("opt1", "yes")]);
    check_timelines(
        &sb,
        &hs,
        &sessions(&sb, &users, day("2026-08-01"), day("2026-08-08")),
    );

    // And SIGKILL at seeded random points, then run to the end.
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let args2 = crm_args(&sb, &hs, &state, "2026-08-01", "2026-08-11", "opt1=yes");
    for _ in 0..3 {
        let mut child = command(
            &args2,
            &[
                ("ENGATI_API_KEY", &sb.ids.api_key),
                ("HUBSPOT_ACCESS_TOKEN", &hs.token),
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        tokio::select! {
            _ = child.wait() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(rng.random_range(80..600))) => {
                child.start_kill().unwrap();
                let _ = child.wait().await;
            }
        }
    }
    let o = run_crm(&sb, &hs, &args2).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    check_timelines(
        &sb,
        &hs,
        &sessions(&sb, &users, day("2026-08-01"), day("2026-08-11")),
    );
    validate_requests(&hs, dir.path(), validate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_sends_nothing() {
    let sb = start(small()).await;
    let hs = hubspot::start(HubSpotConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = with(
        crm_args(&sb, &hs, &state, "2026-08-01", "2026-08-04", "opt1=yes"),
        &["--dry-run"],
    );
    // No HubSpot token is needed to plan.
    let o = run_env(&args, &[("ENGATI_API_KEY", &sb.ids.api_key)]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(hs.calls().is_empty(), "nothing was sent");
    let ops: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let creates = ops.iter().filter(|o| o["op"] == "activity.create").count();
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = sessions(&sb, &users, day("2026-08-01"), day("2026-08-04"));
    let expected: usize = want
        .iter()
        .filter(|(u, _)| contact_key(&sb, u).is_some())
        .map(|(_, s)| s.len())
        .sum();
    assert_eq!(creates, expected, "one planned create per session");
    assert!(ops.iter().any(|o| o["op"] == "contact.find_or_create"));
    // Nothing was recorded: a real run afterwards creates everything.
    let o = run_crm(
        &sb,
        &hs,
        &with(
            crm_args(&sb, &hs, &state, "2026-08-01", "2026-08-04", "opt1=yes"),
            &[],
        ),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(hs.communications().len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_errors_have_their_exit_codes() {
    let sb = start(small()).await;
    let hs = hubspot::start(HubSpotConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = crm_args(&sb, &hs, &state, "2026-08-01", "2026-08-03", "opt1=yes");
    let o = run_env(&args, &[("ENGATI_API_KEY", &sb.ids.api_key)]).await;
    assert_eq!(o.status.code(), Some(2), "no token: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HUBSPOT_ACCESS_TOKEN"));
    let o = run_env(
        &args,
        &[
            ("ENGATI_API_KEY", &sb.ids.api_key),
            ("HUBSPOT_ACCESS_TOKEN", "pat-wrong"),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "a refused token: {}", text(&o));
    assert!(!text(&o).contains("pat-wrong"), "the token never shows");
    let bad = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "crm",
            "--crm",
            "salesforce",
        ],
    );
    let o = run_env(&bad, &[("ENGATI_API_KEY", &sb.ids.api_key)]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("hubspot or bottlecrm"));
    let _ = HashMap::<u8, u8>::new();
}

/// A real BottleCRM server started by `.ci/bottlecrm/start.sh` (CI sets BOTTLECRM_DIR after
/// `setup.sh`; without Python 3.12 the setup exits 3 and CI leaves it unset).
mod bottlecrm {
    use super::*;

    struct Server {
        url: String,
        token: String,
        state: std::path::PathBuf,
        dir: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = std::process::Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/.ci/bottlecrm/stop.sh"
                ))
                .arg(&self.state)
                .env("BOTTLECRM_STATE_DIR", &self.state)
                .status();
            let _ = &self.dir;
        }
    }

    async fn server(state: &Path) -> Server {
        let dir = std::env::var("BOTTLECRM_DIR").unwrap_or_else(|_| {
            panic!("BOTTLECRM_DIR is not set: run .ci/bottlecrm/setup.sh DIR (needs Python 3.12), or bash .ci/run")
        });
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let o = tokio::process::Command::new("bash")
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/bottlecrm/start.sh"),
                &dir,
                &port.to_string(),
                "--fresh",
            ])
            .env("BOTTLECRM_STATE_DIR", state)
            .output()
            .await
            .unwrap();
        assert!(
            o.status.success(),
            "start.sh: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let token = std::fs::read_to_string(Path::new(&dir).join("pat.txt"))
            .unwrap()
            .trim()
            .to_owned();
        Server {
            url: format!("http://127.0.0.1:{port}"),
            token,
            state: state.to_owned(),
            dir,
        }
    }

    async fn get(s: &Server, path: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// Interactions per contact key (phone or email), read back through BottleCRM's API.
    async fn interactions(
        s: &Server,
        sb: &SandboxHandle,
        users: &[String],
    ) -> HashMap<String, Vec<serde_json::Value>> {
        let mut out = HashMap::new();
        for u in users {
            let Some((prop, value)) = contact_key(sb, u) else {
                continue;
            };
            let client = reqwest::Client::new();
            let body = serde_json::json!({ prop.as_str(): value }).to_string();
            let r = client
                .post(format!("{}/api/contacts/duplicates/", s.url))
                .bearer_auth(&s.token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let dup: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            let hits: Vec<&serde_json::Value> = dup["duplicates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d[prop.as_str()]
                        .as_str()
                        .is_some_and(|v| v.eq_ignore_ascii_case(&value))
                })
                .collect();
            if hits.is_empty() {
                continue;
            }
            assert_eq!(hits.len(), 1, "one contact for {value}");
            let id = hits[0]["id"].as_str().unwrap();
            let list = get(s, &format!("/api/interactions/?contact={id}&limit=200")).await;
            out.insert(value, list["interactions"].as_array().unwrap().clone());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a BottleCRM server: BOTTLECRM_DIR (bash .ci/run sets it up; needs Python 3.12)"]
    async fn bottlecrm_gets_one_interaction_per_session_reruns_and_crashes_double_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(&dir.path().join("bottlecrm")).await;
        let sb = start(small()).await;
        let state = dir.path().join("state");
        let users = matching(&sb, &[("feedback", "5")]);
        let run = |until: &'static str, extra: &'static [&'static str]| {
            let a = with(
                export_args(&sb, "2026-08-01", until),
                &[
                    &[
                        "--attribute",
                        "feedback=5",
                        "--max-rps",
                        "2000",
                        "--format",
                        "crm",
                        "--crm",
                        "bottlecrm",
                        "--crm-base-url",
                        &s.url,
                        "--state-dir",
                        state.to_str().unwrap(),
                    ][..],
                    extra,
                ]
                .concat(),
            );
            let env = [
                ("ENGATI_API_KEY", sb.ids.api_key.clone()),
                ("BOTTLECRM_TOKEN", s.token.clone()),
            ];
            async move {
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                run_env(&a, &env).await
            }
        };
        // Killed right after its first interactions, before the ledger knew: resumed cleanly.
        let o = run("2026-08-06", &["--crash-after-crm-writes", "1"]).await;
        assert_ne!(o.status.code(), Some(0), "{}", text(&o));
        let o = run("2026-08-06", &[]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let first = crm_report(&state);
        let o = run("2026-08-06", &[]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let again = crm_report(&state);
        assert_eq!(
            (
                again["activities_created"].as_u64(),
                again["contacts_created"].as_u64()
            ),
            (Some(0), Some(0)),
            "re-run: {again}"
        );
        let want = sessions(&sb, &users, day("2026-08-01"), day("2026-08-06"));
        let got = interactions(&s, &sb, &users).await;
        let mut total = 0;
        for (u, sess) in &want {
            let Some((_, value)) = contact_key(&sb, u) else {
                continue;
            };
            let list = &got[&value];
            assert_eq!(list.len(), sess.len(), "{u}: one interaction per session");
            for i in list {
                assert_eq!(
                    i["kind"],
                    if value.starts_with('+') {
                        "whatsapp"
                    } else {
                        "sms"
                    }
                );
                assert!(
                    i["subject"].as_str().unwrap().contains('['),
                    "the session key is in the subject"
                );
            }
            total += list.len();
        }
        eprintln!(
            "BottleCRM: {} contacts, {total} interactions; first run {first}; re-run created 0 (activities_unchanged {})",
            got.len(),
            again["activities_unchanged"]
        );
        assert!(total > 0);
    }
}
