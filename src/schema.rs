//! The output schemas, in one place: column names, Arrow types and the row builders.
//!
//! Parquet and JSONL sinks both write exactly these columns, in this order; the README's
//! "Output schema" section documents each one. Column names are a contract with downstream
//! users: change them only with a major version.
//!
//! Two tables: `messages` (one row per message; [`messages_schema`], built with
//! [`MessageBatchBuilder`]) and `users` (one row per exported user; [`users_schema`], built with
//! [`UsersBatchBuilder`]). Timestamps are `Timestamp(Millisecond, "UTC")`.

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    ListBuilder, MapBuilder, MapFieldNames, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::model::ExportedUser;

/// `message_id`: 32 hex chars, xxh3-128 of (bot, channel user, sent_at, sender, type, content,
/// occurrence index). Stable across runs; distinct messages never share one.
pub const MESSAGE_ID: &str = "message_id";
/// `provider`: the brand the data came from (`engati`, `alertspanel`, ...).
pub const PROVIDER: &str = "provider";
/// `customer_id`: Engati customer id (digits).
pub const CUSTOMER_ID: &str = "customer_id";
/// `bot_key`: 16 hex chars.
pub const BOT_KEY: &str = "bot_key";
/// `channel_user_id`: the user's id on the channel (WhatsApp: phone digits).
pub const CHANNEL_USER_ID: &str = "channel_user_id";
/// `channel`: the user's channel from the Users API; null when unknown (users file).
pub const CHANNEL: &str = "channel";
/// `user_id`: the message's own `user_id` field; null when absent.
pub const USER_ID: &str = "user_id";
/// `sent_at`: message time, ms since epoch, UTC.
pub const SENT_AT: &str = "sent_at";
/// `position`: the message's 0-based position in the API's answer for its (user, window) cell,
/// across pages (UInt32). The API orders a cell's messages; `sent_at` has millisecond
/// precision, so a user's message and the bot's answer often share one: order by
/// (`channel_user_id`, `sent_at`, `position`) to read a conversation as it happened. The same
/// window asked again gives the same positions.
pub const POSITION: &str = "position";
/// `sender`: `user`, `bot`, `agent` or any other value the API sends.
pub const SENDER: &str = "sender";
/// `direction`: `inbound` | `outbound` | `event`.
pub const DIRECTION: &str = "direction";
/// `message_type`: `TEXT`, `OPTIONS`, ... verbatim.
pub const MESSAGE_TYPE: &str = "message_type";
/// `content`: the API's `response`, byte for byte.
pub const CONTENT: &str = "content";
/// `text`: human-readable text derived from the content.
pub const TEXT: &str = "text";
/// `options`: the list parsed from an OPTIONS message.
pub const OPTIONS: &str = "options";
/// `file_url`: URL of a received file or media.
pub const FILE_URL: &str = "file_url";
/// `file_mime_type`: its MIME type.
pub const FILE_MIME_TYPE: &str = "file_mime_type";
/// `raw_json`: by default ([`RawJson::Residual`]) the message's fields that no other column holds
/// verbatim (`timestamp` as sent, `file`, unknown fields, ...), as a JSON object; with
/// [`RawJson::Full`] the original message object byte for byte.
pub const RAW_JSON: &str = "raw_json";

/// How the `raw_json` column is filled (`sink.raw_json` / `--raw-json`; README "Output").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RawJson {
    /// The JSON object of the fields no other column holds verbatim, in their original order
    /// (`crate::engati::wire_message`): the original object is this plus `sender`,
    /// `message_type`, `user_id` and `content` (as `response`) where they are strings. About
    /// a third of the text of a message, so a third less to compress and store.
    #[default]
    Residual,
    /// The message object exactly as the API sent it (the text of `content` is then stored
    /// twice).
    Full,
}

impl RawJson {
    /// The config value (`residual` | `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            RawJson::Residual => "residual",
            RawJson::Full => "full",
        }
    }
}
/// `run_id`: the run that wrote the row.
pub const RUN_ID: &str = "run_id";
/// `extracted_at`: when that run started, ms since epoch UTC.
pub const EXTRACTED_AT: &str = "extracted_at";
/// `user_name` (users table).
pub const USER_NAME: &str = "user_name";
/// `attributes` (users table): map of attribute name to value (text).
pub const ATTRIBUTES: &str = "attributes";
/// `matched_filters` (users table): the `NAME=VALUE` filters that selected the user.
pub const MATCHED_FILTERS: &str = "matched_filters";

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn list_of_text() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn attributes_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

static MESSAGES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(MESSAGE_ID, DataType::Utf8, false),
        Field::new(PROVIDER, DataType::Utf8, false),
        Field::new(CUSTOMER_ID, DataType::Utf8, false),
        Field::new(BOT_KEY, DataType::Utf8, false),
        Field::new(CHANNEL_USER_ID, DataType::Utf8, false),
        Field::new(CHANNEL, DataType::Utf8, true),
        Field::new(USER_ID, DataType::Utf8, true),
        Field::new(SENT_AT, ts_type(), false),
        Field::new(POSITION, DataType::UInt32, false),
        Field::new(SENDER, DataType::Utf8, true),
        Field::new(DIRECTION, DataType::Utf8, false),
        Field::new(MESSAGE_TYPE, DataType::Utf8, true),
        Field::new(CONTENT, DataType::Utf8, true),
        Field::new(TEXT, DataType::Utf8, true),
        Field::new(OPTIONS, list_of_text(), true),
        Field::new(FILE_URL, DataType::Utf8, true),
        Field::new(FILE_MIME_TYPE, DataType::Utf8, true),
        Field::new(RAW_JSON, DataType::Utf8, false),
        Field::new(RUN_ID, DataType::Utf8, false),
        Field::new(EXTRACTED_AT, ts_type(), false),
    ]))
});

static USERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(CHANNEL_USER_ID, DataType::Utf8, false),
        Field::new(CHANNEL, DataType::Utf8, true),
        Field::new(USER_NAME, DataType::Utf8, true),
        Field::new(ATTRIBUTES, attributes_type(), false),
        Field::new(MATCHED_FILTERS, list_of_text(), false),
        Field::new(PROVIDER, DataType::Utf8, false),
        Field::new(CUSTOMER_ID, DataType::Utf8, false),
        Field::new(BOT_KEY, DataType::Utf8, false),
        Field::new(RUN_ID, DataType::Utf8, false),
        Field::new(EXTRACTED_AT, ts_type(), false),
    ]))
});

/// The `messages` table schema.
pub fn messages_schema() -> SchemaRef {
    MESSAGES.clone()
}

/// The `users` table schema.
pub fn users_schema() -> SchemaRef {
    USERS.clone()
}

/// One message row, borrowed: what [`MessageBatchBuilder::append`] takes.
#[derive(Debug, Clone, Copy)]
pub struct MessageRow<'a> {
    /// See [`MESSAGE_ID`].
    pub message_id: &'a str,
    /// See [`USER_ID`].
    pub user_id: Option<&'a str>,
    /// See [`SENT_AT`]; ms since epoch UTC.
    pub sent_at_ms: i64,
    /// See [`POSITION`].
    pub position: u32,
    /// See [`SENDER`].
    pub sender: Option<&'a str>,
    /// See [`DIRECTION`].
    pub direction: &'a str,
    /// See [`MESSAGE_TYPE`].
    pub message_type: Option<&'a str>,
    /// See [`CONTENT`].
    pub content: Option<&'a str>,
    /// See [`TEXT`].
    pub text: Option<&'a str>,
    /// See [`OPTIONS`]; `None` for non-OPTIONS messages.
    pub options: Option<&'a [&'a str]>,
    /// See [`FILE_URL`].
    pub file_url: Option<&'a str>,
    /// See [`FILE_MIME_TYPE`].
    pub file_mime_type: Option<&'a str>,
    /// See [`RAW_JSON`].
    pub raw_json: &'a str,
}

/// Values shared by every row of one (user, run): written into each row.
#[derive(Debug, Clone)]
pub struct RowContext {
    /// Provider name.
    pub provider: Arc<str>,
    /// Customer id.
    pub customer_id: Arc<str>,
    /// Bot key.
    pub bot_key: Arc<str>,
    /// Run id.
    pub run_id: Arc<str>,
    /// Run start, ms since epoch UTC.
    pub extracted_at_ms: i64,
    /// What the `raw_json` column holds.
    pub raw_json: RawJson,
}

/// Column builders for the `messages` table, reused page after page.
pub struct MessageBatchBuilder {
    message_id: StringBuilder,
    provider: StringBuilder,
    customer_id: StringBuilder,
    bot_key: StringBuilder,
    channel_user_id: StringBuilder,
    channel: StringBuilder,
    user_id: StringBuilder,
    sent_at: TimestampMillisecondBuilder,
    position: UInt32Builder,
    sender: StringBuilder,
    direction: StringBuilder,
    message_type: StringBuilder,
    content: StringBuilder,
    text: StringBuilder,
    options: ListBuilder<StringBuilder>,
    file_url: StringBuilder,
    file_mime_type: StringBuilder,
    raw_json: StringBuilder,
    run_id: StringBuilder,
    extracted_at: TimestampMillisecondBuilder,
    rows: usize,
}

impl MessageBatchBuilder {
    /// Builders sized for about `rows` rows of about `bytes` bytes of raw JSON in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        MessageBatchBuilder {
            message_id: StringBuilder::with_capacity(rows, rows * 32),
            provider: s(),
            customer_id: s(),
            bot_key: s(),
            channel_user_id: s(),
            channel: s(),
            user_id: StringBuilder::with_capacity(rows, rows * 36),
            sent_at: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            position: UInt32Builder::with_capacity(rows),
            sender: s(),
            direction: s(),
            message_type: s(),
            content: StringBuilder::with_capacity(rows, bytes / 2),
            text: StringBuilder::with_capacity(rows, bytes / 2),
            options: ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                "item",
                DataType::Utf8,
                true,
            ))),
            file_url: StringBuilder::with_capacity(rows, 0),
            file_mime_type: StringBuilder::with_capacity(rows, 0),
            raw_json: StringBuilder::with_capacity(rows, bytes),
            run_id: s(),
            extracted_at: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            rows: 0,
        }
    }

    /// Appends one row. `channel_user_id`/`channel` are the user's; the rest comes from `row`
    /// and `cx`.
    pub fn append(
        &mut self,
        cx: &RowContext,
        channel_user_id: &str,
        channel: Option<&str>,
        row: &MessageRow<'_>,
    ) {
        self.message_id.append_value(row.message_id);
        self.provider.append_value(&*cx.provider);
        self.customer_id.append_value(&*cx.customer_id);
        self.bot_key.append_value(&*cx.bot_key);
        self.channel_user_id.append_value(channel_user_id);
        self.channel.append_option(channel);
        self.user_id.append_option(row.user_id);
        self.sent_at.append_value(row.sent_at_ms);
        self.position.append_value(row.position);
        self.sender.append_option(row.sender);
        self.direction.append_value(row.direction);
        self.message_type.append_option(row.message_type);
        self.content.append_option(row.content);
        self.text.append_option(row.text);
        match row.options {
            Some(opts) => {
                for o in opts {
                    self.options.values().append_value(o);
                }
                self.options.append(true);
            }
            None => self.options.append(false),
        }
        self.file_url.append_option(row.file_url);
        self.file_mime_type.append_option(row.file_mime_type);
        self.raw_json.append_value(row.raw_json);
        self.run_id.append_value(&*cx.run_id);
        self.extracted_at.append_value(cx.extracted_at_ms);
        self.rows += 1;
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row was appended since the last finish.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the rows as a `RecordBatch` with [`messages_schema`]; the builders are reset.
    pub fn finish(&mut self) -> RecordBatch {
        // Each column restarts with room for a batch like this one (plus a quarter): without
        // it the builders would start empty and grow by doubling, copying as they go and
        // leaving up to half of each batch's memory unused.
        let rows = self.rows.max(1);
        let columns: Vec<ArrayRef> = vec![
            renew(&mut self.message_id, rows),
            renew(&mut self.provider, rows),
            renew(&mut self.customer_id, rows),
            renew(&mut self.bot_key, rows),
            renew(&mut self.channel_user_id, rows),
            renew(&mut self.channel, rows),
            renew(&mut self.user_id, rows),
            renew_ts(&mut self.sent_at, rows),
            Arc::new(
                std::mem::replace(
                    &mut self.position,
                    UInt32Builder::with_capacity(rows + rows / 4),
                )
                .finish(),
            ),
            renew(&mut self.sender, rows),
            renew(&mut self.direction, rows),
            renew(&mut self.message_type, rows),
            renew(&mut self.content, rows),
            renew(&mut self.text, rows),
            Arc::new(self.options.finish()),
            renew(&mut self.file_url, rows),
            renew(&mut self.file_mime_type, rows),
            renew(&mut self.raw_json, rows),
            renew(&mut self.run_id, rows),
            renew_ts(&mut self.extracted_at, rows),
        ];
        self.rows = 0;
        RecordBatch::try_new(messages_schema(), columns)
            .expect("builders follow messages_schema column for column")
    }
}

/// Finishes a string column, leaving a builder sized like it (plus a quarter) in its place.
fn renew(b: &mut StringBuilder, rows: usize) -> ArrayRef {
    let bytes = b.values_slice().len();
    let fresh = StringBuilder::with_capacity(rows + rows / 4, bytes + bytes / 4);
    Arc::new(std::mem::replace(b, fresh).finish())
}

/// Finishes a UTC timestamp column, leaving a builder sized like it in its place.
fn renew_ts(b: &mut TimestampMillisecondBuilder, rows: usize) -> ArrayRef {
    let fresh = TimestampMillisecondBuilder::with_capacity(rows + rows / 4).with_timezone("UTC");
    Arc::new(std::mem::replace(b, fresh).finish())
}

/// Builds `users` table batches.
pub struct UsersBatchBuilder {
    channel_user_id: StringBuilder,
    channel: StringBuilder,
    user_name: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    matched: ListBuilder<StringBuilder>,
    provider: StringBuilder,
    customer_id: StringBuilder,
    bot_key: StringBuilder,
    run_id: StringBuilder,
    extracted_at: TimestampMillisecondBuilder,
}

impl Default for UsersBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl UsersBatchBuilder {
    /// Empty builders.
    pub fn new() -> Self {
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        UsersBatchBuilder {
            channel_user_id: StringBuilder::new(),
            channel: StringBuilder::new(),
            user_name: StringBuilder::new(),
            attributes: MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new()),
            matched: ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                "item",
                DataType::Utf8,
                true,
            ))),
            provider: StringBuilder::new(),
            customer_id: StringBuilder::new(),
            bot_key: StringBuilder::new(),
            run_id: StringBuilder::new(),
            extracted_at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
        }
    }

    /// Appends one user.
    pub fn append(&mut self, cx: &RowContext, row: &ExportedUser) {
        let u = &row.user;
        self.channel_user_id.append_value(&u.channel_user_id);
        self.channel.append_option(u.channel.as_deref());
        self.user_name.append_option(u.user_name.as_deref());
        for (k, v) in &u.attributes {
            self.attributes.keys().append_value(k);
            self.attributes.values().append_value(v);
        }
        self.attributes
            .append(true)
            .expect("keys and values are appended in pairs");
        for f in &u.matched_filters {
            self.matched.values().append_value(f);
        }
        self.matched.append(true);
        self.provider.append_value(&*cx.provider);
        self.customer_id.append_value(&*cx.customer_id);
        self.bot_key.append_value(&*cx.bot_key);
        self.run_id.append_value(&row.run_id);
        self.extracted_at.append_value(row.extracted_at_ms);
    }

    /// Takes the rows as a `RecordBatch` with [`users_schema`].
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.channel_user_id.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.user_name.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.matched.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.bot_key.finish()),
            Arc::new(self.run_id.finish()),
            Arc::new(self.extracted_at.finish()),
        ];
        RecordBatch::try_new(users_schema(), columns)
            .expect("builders follow users_schema column for column")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::User;

    fn cx() -> RowContext {
        RowContext {
            provider: "engati".into(),
            customer_id: "61179".into(),
            bot_key: "bb67e0773bed4c7e".into(),
            run_id: "r1".into(),
            extracted_at_ms: 5,
            raw_json: RawJson::Full,
        }
    }

    #[test]
    fn message_builder_produces_the_schema() {
        let mut b = MessageBatchBuilder::with_capacity(2, 100);
        let opts = ["a", "b"];
        let row = MessageRow {
            message_id: "00",
            user_id: None,
            sent_at_ms: 1,
            position: 0,
            sender: Some("bot"),
            direction: "outbound",
            message_type: Some("OPTIONS"),
            content: Some("[a, b]"),
            text: Some("a | b"),
            options: Some(&opts),
            file_url: None,
            file_mime_type: None,
            raw_json: "{}",
        };
        b.append(&cx(), "9195", Some("whatsapp"), &row);
        b.append(
            &cx(),
            "9195",
            None,
            &MessageRow {
                options: None,
                ..row
            },
        );
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), messages_schema());
        assert!(b.is_empty());
    }

    #[test]
    fn users_builder_produces_the_schema() {
        let mut b = UsersBatchBuilder::new();
        b.append(
            &cx(),
            &ExportedUser {
                user: User {
                    channel_user_id: "9195".into(),
                    channel: Some("whatsapp".into()),
                    user_name: None,
                    attributes: vec![("feedback".into(), "1".into())],
                    matched_filters: vec!["feedback=1".into()],
                },
                run_id: "r1".into(),
                extracted_at_ms: 5,
            },
        );
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), users_schema());
    }
}
