//! `rxc monitor`: the server's events (`/1.0/events`) as they come, printed as `lxc monitor`
//! prints them: YAML or JSON documents followed by a blank line, or `--pretty` log lines.

use crate::cli::{MonitorArgs, MonitorFormat};
use crate::connect::{open, remote_name};
use anyhow::{anyhow, bail};
use futures_util::StreamExt;
use rxd_api::event::{Event, EventLifecycle, EventLogging};
use rxd_api::operation::Operation;
use rxd_client::remotes::ConfigDir;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Log levels, most severe first, as logrus orders them.
const LEVELS: [&str; 7] = [
    "panic", "fatal", "error", "warning", "info", "debug", "trace",
];

fn level_rank(level: &str) -> Option<usize> {
    let level = match level.to_lowercase().as_str() {
        "dbug" => "debug".to_owned(),
        "warn" | "warning" => "warning".to_owned(),
        "eror" | "err" => "error".to_owned(),
        "crit" => "fatal".to_owned(),
        l => l.to_owned(),
    };
    LEVELS.iter().position(|l| *l == level)
}

pub async fn run(conf: &ConfigDir, args: MonitorArgs) -> anyhow::Result<()> {
    let format = if args.pretty {
        MonitorFormat::Pretty
    } else {
        args.format
    };
    if format != MonitorFormat::Pretty && args.loglevel.is_some() {
        bail!("Log level filtering can only be used with pretty formatting");
    }
    let min_level = match &args.loglevel {
        Some(l) => level_rank(l).ok_or_else(|| anyhow!("not a valid logrus Level: {l:?}"))?,
        None => level_rank("debug").unwrap_or(5),
    };
    let conn = open(conf, &remote_name(conf, args.remote.as_deref()))?;
    let mut query = Vec::new();
    if !args.types.is_empty() {
        query.push(format!("type={}", args.types.join(",")));
    }
    if args.all_projects {
        query.push("all-projects=true".to_owned());
    }
    let path = match query.is_empty() {
        true => "/1.0/events".to_owned(),
        false => format!("/1.0/events?{}", query.join("&")),
    };
    let mut ws = conn
        .client
        .websocket(&path)
        .await
        .map_err(|e| conn.explain(e))?;
    let colour = crate::output::stdout_is_terminal();
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(raw) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let event: Event = crate::connect::decode(raw.clone())?;
        if !args.types.is_empty() && !args.types.contains(&event.kind) {
            continue;
        }
        match format {
            MonitorFormat::Pretty => {
                let Some(record) = record(&event) else {
                    continue;
                };
                if level_rank(&record.level).is_some_and(|l| l > min_level) {
                    continue;
                }
                outln!("{}", record.line(colour))?;
            }
            MonitorFormat::Json => outln!("{}\n", serde_json::to_string(&go_event(raw))?)?,
            MonitorFormat::Yaml => out!("{}\n", serde_norway::to_string(&go_event(raw))?)?,
        }
    }
    Ok(())
}

/// The event as lxc re-encodes it: LXD's `omitempty` on `location` and `project`, and every
/// object's keys in order (Go writes maps sorted).
fn go_event(mut raw: Value) -> Value {
    if let Some(obj) = raw.as_object_mut() {
        for key in ["location", "project"] {
            if obj.get(key).is_some_and(|v| v == "" || v.is_null()) {
                obj.remove(key);
            }
        }
    }
    sorted(raw)
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(list) => Value::Array(list.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// An event as a log record (LXD's `Event.ToLogging`).
struct Record {
    time: String,
    level: String,
    message: String,
    fields: Vec<(String, String)>,
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

fn record(event: &Event) -> Option<Record> {
    let time = time::OffsetDateTime::parse(
        &event.timestamp,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
    .and_then(|t| {
        t.replace_nanosecond(0)
            .ok()?
            .format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| event.timestamp.clone());
    let mut r = match event.kind.as_str() {
        "logging" => {
            let e: EventLogging = crate::connect::decode(event.metadata.clone()).ok()?;
            Record {
                time,
                level: e.level,
                message: e.message,
                fields: e.context.into_iter().collect(),
            }
        }
        "lifecycle" => {
            let e: EventLifecycle = crate::connect::decode(event.metadata.clone()).ok()?;
            let mut message = format!("Action: {}, Source: {}", e.action, e.source);
            if let Some(r) = &e.requestor {
                message += &format!(", Requestor: {}/{} ({})", r.protocol, r.username, r.address);
            }
            Record {
                time,
                level: "info".into(),
                message,
                fields: e
                    .context
                    .iter()
                    .map(|(k, v)| (k.clone(), plain(v)))
                    .collect(),
            }
        }
        "operation" => {
            let e: Operation = crate::connect::decode(event.metadata.clone()).ok()?;
            let resources = serde_json::to_value(&e.resources).unwrap_or_default();
            Record {
                time,
                level: "info".into(),
                message: format!(
                    "ID: {}, Class: {}, Description: {}",
                    e.id, e.class, e.description
                ),
                fields: vec![
                    ("CreatedAt".into(), e.created_at.clone()),
                    ("UpdatedAt".into(), e.updated_at.clone()),
                    ("Status".into(), e.status.clone()),
                    ("StatusCode".into(), e.status_code.to_string()),
                    ("Resources".into(), plain(&resources)),
                    ("Metadata".into(), plain(&e.metadata)),
                    ("MayCancel".into(), e.may_cancel.to_string()),
                    ("Err".into(), e.err.clone()),
                    ("Location".into(), e.location.clone()),
                ],
            }
        }
        _ => return None,
    };
    if r.level == "dbug" {
        r.level = "debug".into();
    }
    r.fields.sort();
    Some(r)
}

/// Whether logrus's text formatter quotes a value.
fn needs_quoting(s: &str) -> bool {
    s.is_empty()
        || !s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+')
        })
}

fn quoted(s: &str) -> String {
    if needs_quoting(s) {
        serde_json::to_string(s).unwrap_or_default()
    } else {
        s.to_owned()
    }
}

impl Record {
    /// The line logrus's text formatter writes (full timestamps; colours on a terminal only).
    fn line(&self, colour: bool) -> String {
        let level = match level_rank(&self.level) {
            Some(i) => LEVELS[i],
            None => self.level.as_str(),
        };
        if colour {
            let code = match level {
                "debug" | "trace" => 37,
                "warning" => 33,
                "error" | "fatal" | "panic" => 31,
                _ => 36,
            };
            let mut s = format!(
                "\x1b[{code}m{:<7}\x1b[0m[{}] {:<44} ",
                level.to_uppercase(),
                self.time,
                self.message
            );
            for (k, v) in &self.fields {
                s += &format!(" \x1b[{code}m{k}\x1b[0m={}", quoted(v));
            }
            return s;
        }
        let mut s = format!(
            "time={} level={level} msg={}",
            quoted(&self.time),
            quoted(&self.message)
        );
        for (k, v) in &self.fields {
            s += &format!(" {k}={}", quoted(v));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_events_read_as_log_lines() {
        let event = Event {
            kind: "lifecycle".into(),
            timestamp: "2026-12-04T17:33:33.123456789Z".into(),
            metadata: serde_json::json!({
                "action": "instance-started",
                "source": "/1.0/instances/c1",
                "context": {"x": "a b"},
                "requestor": {"username": "root", "protocol": "unix", "address": "@"}
            }),
            ..Default::default()
        };
        let r = record(&event).unwrap();
        assert_eq!(
            r.line(false),
            "time=\"2026-12-04T17:33:33Z\" level=info msg=\"Action: instance-started, Source: \
             /1.0/instances/c1, Requestor: unix/root (@)\" x=\"a b\""
        );
        assert!(r
            .line(true)
            .starts_with("\x1b[36mINFO   \x1b[0m[2026-12-04T17:33:33Z] "));
    }

    #[test]
    fn events_are_written_as_go_writes_them() {
        let raw = serde_json::json!({"type": "operation", "project": "", "location": "none",
            "metadata": {"b": 1, "a": 2}, "timestamp": "t"});
        assert_eq!(
            serde_json::to_string(&go_event(raw)).unwrap(),
            r#"{"location":"none","metadata":{"a":2,"b":1},"timestamp":"t","type":"operation"}"#
        );
    }
}
