//! API triggers (v1, v2, RCS) and broadcasts (direct, template, batches).

use super::*;
use engati_etl::sandbox::write::Endpoint;

fn trigger(
    sb: &SandboxHandle,
    input: &Path,
    campaign: &str,
    out: &Path,
    more: &[&str],
) -> Vec<String> {
    with(
        with(
            send_args(sb, "trigger", input, campaign, out),
            &["--phone-column", "phone", "--flow-key", "welcome_88601"],
        ),
        more,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_v2_sends_exactly_the_mapped_attributes_and_v1_uses_the_query() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = people(dir.path(), 6, |_, _| {});
    let out = dir.path().join("v2");
    let a = trigger(
        &sb,
        &input,
        "v2",
        &out,
        &[
            "--attribute",
            "order_id=order",
            "--attribute",
            "first_name=name",
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let sends = sb.sends();
    assert_eq!(sends.len(), 6);
    for s in &sends {
        assert_eq!(s.endpoint, Endpoint::TriggerV2);
        let keys: Vec<&String> = s.body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            4,
            "user.channel, user.phone_no and the two attributes only: {:?}",
            s.body
        );
        assert_eq!(s.body["user.channel"], "whatsapp");
        assert_eq!(s.body["user.phone_no"], s.recipients[0]);
        assert!(s.body["order_id"].as_str().unwrap().starts_with('5'));
    }
    assert_matches_sandbox(&results(&out, "v2"), &sb, false, "v2");
    assert_eq!(results(&out, "v2")[0]["status"], "sent");

    let out1 = dir.path().join("v1");
    let a = trigger(
        &sb,
        &input,
        "v1",
        &out1,
        &["--api", "v1", "--attribute", "resultCode=order"],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v1: Vec<_> = sb
        .sends()
        .into_iter()
        .filter(|s| s.endpoint == Endpoint::TriggerV1)
        .collect();
    assert_eq!(v1.len(), 6);
    let first = v1.iter().find(|s| s.recipients[0] == phone(0)).unwrap();
    assert_eq!(first.body["user.phone_no"], phone(0));
    assert_eq!(first.body["resultCode"], "5000");
    let logged = sb
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/bot-api/v1.0/") && r.path.contains("/flow/"))
        .filter_map(|r| r.query.get("user.phone_no").cloned())
        .collect::<Vec<_>>();
    assert!(
        logged.contains(&phone(0)),
        "the number is a query parameter: {logged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcs_triggers_need_v2_and_send_the_rcs_channel() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = people(dir.path(), 3, |_, _| {});
    let out = dir.path().join("rcs");
    let o = run(
        &trigger(
            &sb,
            &input,
            "rcs",
            &out,
            &["--channel", "rcs", "--api", "v1"],
        ),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("channel rcs needs the v2 API"),
        "{}",
        text(&o)
    );
    let o = run(
        &trigger(&sb, &input, "rcs", &out, &["--channel", "rcs"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        sb.sends()
            .iter()
            .all(|s| s.body["user.channel"] == "rcs" && s.endpoint == Endpoint::TriggerV2)
    );
    assert_eq!(sb.sends().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_go_out_in_batches_and_reach_each_user_once() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = people(dir.path(), 7, |i, row| {
        if i == 6 {
            row[0] = phone(0); // a duplicate user id
        }
    });
    let out = dir.path().join("b");
    let a = with(
        send_args(&sb, "broadcast", &input, "sale", &out),
        &[
            "--user-id-column",
            "phone",
            "--title",
            "Diwali sale",
            "--message",
            "Sale starts today!",
            "--batch-size",
            "4",
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let sends = sb.sends();
    assert_eq!(sends.len(), 2, "6 users in batches of 4");
    let mut sizes: Vec<usize> = sends.iter().map(|s| s.recipients.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![2, 4]);
    assert_eq!(sends[0].body["payload"]["type"], "direct");
    assert_eq!(sends[0].body["audience"]["rule"]["channels"][0], "whatsapp");
    assert!(
        sends[0].body["publishedOn"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let rows = results(&out, "sale");
    assert_eq!(rows.len(), 7);
    assert_eq!(by_status(&rows).get("sent"), Some(&6));
    assert_matches_sandbox(&rows, &sb, true, "broadcast");

    let out = dir.path().join("t");
    let a = with(
        send_args(&sb, "broadcast", &input, "tpl", &out),
        &[
            "--user-id-column",
            "phone",
            "--title",
            "Offer",
            "--template-name",
            "diwali_offer",
            "--template-namespace",
            "ns",
            "--publish-at",
            "2020-01-01T00:00:00Z",
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let last = sb.sends().pop().unwrap();
    assert_eq!(last.body["payload"]["type"], "whatsapp template");
    assert_eq!(
        last.body["payload"]["content"][0]["template"]["payload"]["name"],
        "diwali_offer"
    );
    assert_eq!(last.body["publishedOn"], "2020-01-01T00:00:00.000Z");
    assert_eq!(last.recipients.len(), 6);
}
