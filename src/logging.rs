//! Logs on stderr through `tracing`: the human format (the default), or `--log-format json`
//! (`ENGATI_ETL_LOG_FORMAT=json`): one JSON object a line with `timestamp`, `level`, `target`,
//! `message`, `run_id` (null until the run has one) and the event's own fields, for log
//! pipelines (Loki, Cloud Logging, Elasticsearch) that a scheduler ships stderr to.
//!
//! In the JSON format *every* line on stderr is a JSON object: the lines the tool otherwise
//! writes for people (the heartbeat, the end-of-run summary, a stop on a signal, the error that
//! ended a command) become events too ([`notice`], [`error`]). The run id is process-wide
//! ([`set_run_id`]): one process runs one export.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people (colours on a terminal).
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);
static RUN_ID: OnceLock<String> = OnceLock::new();

/// True when logs are JSON lines.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Records the run id that every later JSON log line carries (the first call wins).
pub fn set_run_id(run_id: &str) {
    let _ = RUN_ID.set(run_id.to_owned());
}

/// Installs the global subscriber on stderr: level from `-v` (`verbose`: 0 warn, 1 info,
/// 2+ debug), else `RUST_LOG`, else warn.
pub fn init(format: LogFormat, verbose: u8) {
    let default_level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // -v / -vv win over RUST_LOG (flags > environment); RUST_LOG is read without them.
    let from_flags = || {
        EnvFilter::new(format!(
            "{default_level},hyper=warn,reqwest=warn,h2=warn,axum=warn,deltalake_core=off,delta_kernel=off"
        ))
    };
    let filter = if verbose > 0 {
        from_flags()
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| from_flags())
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder.with_ansi(false).event_format(JsonLines).init();
        }
    }
}

/// A line for the person watching (heartbeat, summary, stop): printed as is in the text
/// format, an `info`-less event of its own (always shown) in the JSON format.
pub fn notice(line: &str) {
    if is_json() {
        emit_json("INFO", "engati_etl", line.trim_end(), Map::new());
    } else {
        eprintln!("{}", line.trim_end_matches('\n'));
    }
}

/// The error that ended a command: `engati-etl: error: ...` in the text format, an `ERROR`
/// event with `exit_code` in the JSON format.
pub fn error(message: &str, exit_code: u8) {
    if is_json() {
        let mut fields = Map::new();
        fields.insert("exit_code".into(), exit_code.into());
        emit_json("ERROR", "engati_etl", message, fields);
    } else {
        eprintln!("engati-etl: error: {message}");
    }
}

/// Writes one JSON log line (outside the level filter: [`notice`] and [`error`] are always
/// shown, as their text forms are).
fn emit_json(level: &str, target: &str, message: &str, fields: Map<String, Value>) {
    let line = json_line(level, target, message, fields);
    eprintln!("{line}");
}

fn json_line(level: &str, target: &str, message: &str, fields: Map<String, Value>) -> String {
    /// One line, its keys in this order.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        timestamp: String,
        level: &'a str,
        target: &'a str,
        message: &'a str,
        run_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Map::is_empty")]
        fields: Map<String, Value>,
    }
    let line = Line {
        timestamp: crate::time::rfc3339_ms(crate::time::now_ms()),
        level,
        target,
        message,
        run_id: RUN_ID.get().map(String::as_str),
        fields,
    };
    serde_json::to_string(&line).expect("a log line serializes")
}

/// The JSON event format: see the module docs.
struct JsonLines;

/// Collects an event's fields as JSON values (`message` apart).
#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().into(), text.into());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.fields
            .insert(field.name().into(), value.to_string().into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let line = json_line(meta.level().as_str(), meta.target(), &f.message, f.fields);
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_has_the_documented_keys() {
        let mut fields = Map::new();
        fields.insert("delay_ms".into(), 250.into());
        let v: Value = serde_json::from_str(&json_line("WARN", "t", "m", fields)).unwrap();
        for k in [
            "timestamp",
            "level",
            "target",
            "message",
            "run_id",
            "fields",
        ] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
        assert_eq!(v["fields"]["delay_ms"], 250);
    }
}
