use super::*;
use crate::model::{ExportedUser, User};
use crate::schema::{MessageBatchBuilder, MessageRow, RowContext, UsersBatchBuilder};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;

fn policy(ids: &[IdColumn], redact: &[Redaction], drop: &[&str]) -> PrivacyPolicy {
    PrivacyPolicy {
        pseudonymize: ids.to_vec(),
        key_env: "K".into(),
        redact: redact.to_vec(),
        drop_columns: drop.iter().map(|s| s.to_string()).collect(),
    }
}

const ALL_IDS: &[IdColumn] = &[
    IdColumn::ChannelUserId,
    IdColumn::UserId,
    IdColumn::UserName,
];

fn cx() -> RowContext {
    RowContext {
        provider: "engati".into(),
        customer_id: "61179".into(),
        bot_key: "bb67e0773bed4c7e".into(),
        run_id: "r1".into(),
        extracted_at_ms: 5,
        raw_json: crate::schema::RawJson::Full,
    }
}

fn batch() -> RecordBatch {
    let mut b = MessageBatchBuilder::with_capacity(2, 100);
    let raw = r#"{"response":"I am 919565428256, mail me at asha.1@example.com","user_id":"3f6c0a11","timestamp":"2026-08-12 14:03:27.512+0530"}"#;
    let row = MessageRow {
        message_id: "0123456789abcdef0123456789abcdef",
        user_id: Some("3f6c0a11"),
        sent_at_ms: 1,
        position: 0,
        sender: Some("user"),
        direction: "inbound",
        message_type: Some("TEXT"),
        content: Some("I am 919565428256, mail me at asha.1@example.com"),
        text: Some("I am 919565428256, mail me at asha.1@example.com"),
        options: None,
        file_url: None,
        file_mime_type: None,
        raw_json: raw,
    };
    b.append(&cx(), "919565428256", Some("whatsapp"), &row);
    b.append(&cx(), "919565428256", Some("whatsapp"), &row);
    b.finish()
}

fn text_of(batch: &RecordBatch) -> String {
    let mut buf = Vec::new();
    let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
    w.write(&crate::sink::part::json_ready(batch).unwrap())
        .unwrap();
    w.finish().unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn pseudonyms_are_stable_keyed_and_hex() {
    let a = Privacy::with_key(policy(ALL_IDS, &[], &[]), b"0123456789abcdef");
    let b = Privacy::with_key(policy(ALL_IDS, &[], &[]), b"0123456789abcdef");
    let c = Privacy::with_key(policy(ALL_IDS, &[], &[]), b"fedcba9876543210");
    assert_eq!(a.pseudonym("919565428256"), b.pseudonym("919565428256"));
    assert_ne!(a.pseudonym("919565428256"), c.pseudonym("919565428256"));
    let p = a.pseudonym("919565428256");
    assert_eq!(p.len(), 32);
    assert!(p.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a.report().key_id, b.report().key_id);
    assert_ne!(a.report().key_id, c.report().key_id);
    assert!(!format!("{a:?}").contains("0123456789abcdef"));
}

#[test]
fn no_raw_id_or_contact_survives_in_a_messages_batch() {
    let p = Privacy::with_key(
        policy(ALL_IDS, &[Redaction::Email, Redaction::Phone], &[]),
        b"0123456789abcdef",
    );
    let out = p.messages(&batch()).unwrap();
    let text = text_of(&out);
    for raw in [
        "919565428256",
        "3f6c0a11",
        "asha.1@example.com",
        "0123456789abcdef",
    ] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    assert!(text.contains(&p.pseudonym("919565428256")));
    assert!(text.contains("2026-08-12 14:03:27.512+0530"), "{text}");
    let raw = out
        .column_by_name("raw_json")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_owned();
    serde_json::from_str::<serde_json::Value>(&raw).unwrap();
}

#[test]
fn pseudonymizing_replaces_ids_in_text_without_redaction() {
    let p = Privacy::with_key(policy(ALL_IDS, &[], &[]), b"0123456789abcdef");
    let text = text_of(&p.messages(&batch()).unwrap());
    assert!(!text.contains("919565428256") && !text.contains("3f6c0a11"));
    assert!(text.contains("asha.1@example.com"), "no redaction asked");
}

#[test]
fn dropped_columns_leave_the_schema() {
    let p = Privacy::with_key(policy(&[], &[], &["raw_json", "text"]), b"");
    let out = p.messages(&batch()).unwrap();
    assert!(out.column_by_name("raw_json").is_none());
    assert!(out.column_by_name("text").is_none());
    assert_eq!(out.num_columns(), batch().num_columns() - 2);
    assert_eq!(out.schema(), p.schema(&crate::schema::messages_schema()));
}

#[test]
fn users_are_pseudonymized_and_attributes_redacted() {
    let p = Privacy::with_key(
        policy(ALL_IDS, &[Redaction::Email], &[]),
        b"0123456789abcdef",
    );
    let mut b = UsersBatchBuilder::new();
    b.append(
        &cx(),
        &ExportedUser {
            user: User {
                channel_user_id: "919565428256".into(),
                channel: Some("whatsapp".into()),
                user_name: Some("Asha".into()),
                attributes: vec![("email".into(), "asha.1@example.com".into())],
                matched_filters: vec!["opt1=yes".into()],
            },
            run_id: "r1".into(),
            extracted_at_ms: 5,
        },
    );
    let text = text_of(&p.users(&b.finish()).unwrap());
    for raw in ["919565428256", "Asha", "asha.1@example.com"] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    assert!(text.contains(&p.pseudonym("Asha")));
}

#[test]
fn file_keys_hide_the_plan_hash_only_when_ids_are_pseudonymized() {
    let p = Privacy::with_key(policy(ALL_IDS, &[], &[]), b"0123456789abcdef");
    let k = p.file_key("20260812T0000-0123456789ab");
    assert!(k.starts_with("20260812T0000-") && !k.ends_with("0123456789ab"));
    assert_eq!(k.len(), "20260812T0000-0123456789ab".len());
    let q = Privacy::with_key(policy(&[], &[Redaction::Email], &[]), b"");
    assert_eq!(
        q.file_key("20260812T0000-0123456789ab"),
        "20260812T0000-0123456789ab"
    );
}
