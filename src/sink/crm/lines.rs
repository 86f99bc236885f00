//! A unit's rows as transcript lines, per user, in arrival order (the CRM sink's `write`).

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMillisecondType, UInt32Type};
use arrow_array::{Array, RecordBatch, StringArray};

use super::session::{self, Line, MessageView};
use crate::schema;

/// Appends a batch's rows as transcript lines, per user, in order.
pub(super) fn collect(b: &RecordBatch, out: &mut BTreeMap<String, Vec<Line>>) {
    let s = |name: &str| b.column_by_name(name).map(|c| c.as_string::<i32>().clone());
    let (
        Some(id),
        Some(user),
        Some(sender),
        Some(dir),
        Some(kind),
        Some(text),
        Some(url),
        Some(mime),
    ) = (
        s(schema::MESSAGE_ID),
        s(schema::CHANNEL_USER_ID),
        s(schema::SENDER),
        s(schema::DIRECTION),
        s(schema::MESSAGE_TYPE),
        s(schema::TEXT),
        s(schema::FILE_URL),
        s(schema::FILE_MIME_TYPE),
    )
    else {
        return;
    };
    let (Some(sent), Some(position)) = (
        b.column_by_name(schema::SENT_AT)
            .map(|c| c.as_primitive::<TimestampMillisecondType>().clone()),
        b.column_by_name(schema::POSITION)
            .map(|c| c.as_primitive::<UInt32Type>().clone()),
    ) else {
        return;
    };
    fn opt(a: &StringArray, i: usize) -> Option<&str> {
        (!a.is_null(i)).then(|| a.value(i))
    }
    for i in 0..b.num_rows() {
        let view = MessageView {
            message_id: id.value(i),
            sent_at_ms: sent.value(i),
            position: position.value(i),
            sender: opt(&sender, i),
            direction: dir.value(i),
            message_type: opt(&kind, i),
            text: opt(&text, i),
            file_url: opt(&url, i),
            file_mime_type: opt(&mime, i),
        };
        out.entry(user.value(i).to_owned())
            .or_default()
            .push(session::line_of(&view));
    }
}
