//! The registry of task operations: long actions run in the background, report through
//! `/1.0/operations/<id>` (and `/wait`), announce their changes as events, and may be cancelled.
//! Finished operations stay visible for [`RETAIN`] so clients can collect the result.
//! (Certificate add tokens are operations too, but persisted: see `tokens`.)

use crate::events::Events;
use crate::sync::{lock, now_unix};
use rxd_api::operation::Operation;
use rxd_api::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// LXD's map of the kinds of object an operation touches to their URLs (Go sorts a map's keys
/// when it writes one, as this map does).
pub type Resources = BTreeMap<String, Vec<String>>;

/// An operation's [`Resources`], from (kind, URLs) pairs.
pub fn resources<const N: usize>(pairs: [(&str, Vec<String>); N]) -> Resources {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The [`Resources`] of an operation on the instance at `url`, under both of LXD's names.
pub fn instance_resources(url: &str) -> Resources {
    resources([
        ("instances", vec![url.to_owned()]),
        ("containers", vec![url.replace("instances", "containers")]),
    ])
}

/// How long a finished operation stays listed.
pub const RETAIN: Duration = Duration::from_secs(60);

struct OpState {
    status: StatusCode,
    metadata: Value,
    err: String,
    updated_at: i64,
    finished: Option<Instant>,
}

pub struct Op {
    pub id: String,
    pub class: &'static str,
    pub description: String,
    pub project: String,
    resources: Resources,
    created_at: i64,
    may_cancel: bool,
    state: Mutex<OpState>,
    done: watch::Sender<bool>,
    cancel: watch::Sender<bool>,
}

/// Which of the visible ones a request asked for: `?project=` (default `default`) unless
/// `all-projects=true`, as LXD filters; server-level ones go with any project.
pub fn project_selected(requested: &str, all_projects: bool, project: &str) -> bool {
    all_projects || project.is_empty() || project == requested
}

impl Op {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpState> {
        lock(&self.state)
    }

    pub fn url(&self) -> String {
        format!("/1.0/operations/{}", self.id)
    }

    /// The operation as the API shows it.
    pub fn to_api(&self) -> Operation {
        let st = self.lock();
        Operation {
            id: self.id.clone(),
            class: self.class.into(),
            description: self.description.clone(),
            created_at: crate::tokens::rfc3339(self.created_at),
            updated_at: crate::tokens::rfc3339(st.updated_at),
            status: st.status.text().into(),
            status_code: st.status.code(),
            resources: Some(self.resources.clone()),
            metadata: st.metadata.clone(),
            may_cancel: self.may_cancel && st.finished.is_none(),
            err: st.err.clone(),
            location: "none".into(),
        }
    }

    /// [`Op::to_api`] as JSON, for replies and events.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.to_api()).unwrap_or_else(|e| {
            // Strings, numbers and string-keyed maps: cannot fail.
            tracing::error!(error = %e, "operation did not serialize");
            Value::Null
        })
    }

    /// Replace the metadata of a running operation.
    pub fn set_metadata(&self, metadata: Value) {
        let mut st = self.lock();
        st.metadata = metadata;
        st.updated_at = now_unix();
    }

    /// Replace the metadata of a running operation and announce it, as LXD's
    /// `UpdateMetadata` does (clients show a download's progress from these events).
    pub fn update_metadata(&self, events: &Events, metadata: Value) {
        {
            let mut st = self.lock();
            if st.finished.is_some() {
                return;
            }
            st.metadata = metadata;
            st.updated_at = now_unix();
        }
        events.operation(self.to_json(), &self.project);
    }

    /// A download's progress ([`DownloadProgress`]'s text) as LXD's metadata carries it.
    pub fn report_download(&self, events: &Events, text: String) {
        self.update_metadata(events, serde_json::json!({ "download_progress": text }));
    }

    /// Record the outcome, wake waiters and announce it.
    pub fn finish(&self, events: &Events, result: Result<Value, String>) {
        {
            let mut st = self.lock();
            if st.finished.is_some() {
                return;
            }
            match result {
                Ok(md) => {
                    st.status = StatusCode::Success;
                    st.metadata = md;
                }
                Err(e) => {
                    st.status = if *self.cancel.borrow() {
                        StatusCode::Cancelled
                    } else {
                        StatusCode::Failure
                    };
                    st.err = e;
                }
            }
            st.updated_at = now_unix();
            st.finished = Some(Instant::now());
        }
        // send_replace: `send` would drop the value while nobody is waiting yet.
        self.done.send_replace(true);
        events.operation(self.to_json(), &self.project);
    }

    /// Wait until the operation finishes, or `timeout` passes (`None`: no limit).
    pub async fn wait(&self, timeout: Option<Duration>) {
        let mut rx = self.done.subscribe();
        let done = async move {
            let _ = rx.wait_for(|d| *d).await;
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, done).await;
            }
            None => done.await,
        }
    }

    /// Resolves once a cancel is asked for (never, for an operation that cannot be cancelled).
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Ask the work to stop; it decides how (and reports Cancelled through `finish`).
    pub fn request_cancel(&self) -> bool {
        if !self.may_cancel || self.lock().finished.is_some() {
            return false;
        }
        self.cancel.send_replace(true);
        true
    }
}

#[derive(Default)]
pub struct Operations {
    ops: Mutex<HashMap<String, Arc<Op>>>,
}

impl Operations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Op>>> {
        lock(&self.ops)
    }

    /// Register a running task operation. `resources` is LXD's map of kind to URLs.
    pub fn start(
        &self,
        events: &Events,
        description: &str,
        project: &str,
        resources: Resources,
        may_cancel: bool,
    ) -> Arc<Op> {
        self.start_class(events, "task", description, project, resources, may_cancel)
    }

    /// Register a running operation of `class` (`task` or `websocket`).
    pub fn start_class(
        &self,
        events: &Events,
        class: &'static str,
        description: &str,
        project: &str,
        resources: Resources,
        may_cancel: bool,
    ) -> Arc<Op> {
        let op = Arc::new(Op {
            id: uuid::Uuid::new_v4().to_string(),
            class,
            description: description.into(),
            project: project.into(),
            resources,
            created_at: now_unix(),
            may_cancel,
            state: Mutex::new(OpState {
                status: StatusCode::Running,
                metadata: Value::Null,
                err: String::new(),
                updated_at: now_unix(),
                finished: None,
            }),
            done: watch::channel(false).0,
            cancel: watch::channel(false).0,
        });
        self.prune();
        self.lock().insert(op.id.clone(), op.clone());
        events.operation(op.to_json(), project);
        op
    }

    pub fn get(&self, id: &str) -> Option<Arc<Op>> {
        self.lock().get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Op>> {
        self.prune();
        let mut all: Vec<Arc<Op>> = self.lock().values().cloned().collect();
        all.sort_by_key(|o| o.created_at);
        all
    }

    fn prune(&self) {
        self.lock()
            .retain(|_, op| op.lock().finished.is_none_or(|t| t.elapsed() < RETAIN));
    }
}

/// A download's progress as LXD's operations report it (`metadata.download_progress`, such as
/// `rootfs: 45% (12.34MB/s)`): a new text when the percentage moves, at most every 100 ms
/// (and always at 100%), so a fast download does not flood the events stream.
pub struct DownloadProgress {
    /// The file being reported, and when its download began.
    label: String,
    started: Instant,
    last: Option<(Instant, u64)>,
}

impl Default for DownloadProgress {
    fn default() -> DownloadProgress {
        DownloadProgress {
            label: String::new(),
            started: Instant::now(),
            last: None,
        }
    }
}

impl DownloadProgress {
    /// The text to report for `received` of `total` bytes of `label`'s file, if one is due.
    pub fn text(&mut self, label: &str, received: u64, total: u64) -> Option<String> {
        // Each file from its own start (its speed, its first and last report).
        if self.label != label {
            *self = DownloadProgress {
                label: label.to_owned(),
                ..DownloadProgress::default()
            };
        }
        let percent = (received.saturating_mul(100))
            .checked_div(total)
            .unwrap_or(0)
            .min(100);
        let now = Instant::now();
        let due = match self.last {
            None => true,
            Some((at, p)) => {
                p != percent
                    && (percent == 100 || now.duration_since(at) >= Duration::from_millis(100))
            }
        };
        if !due {
            return None;
        }
        self.last = Some((now, percent));
        let secs = now.duration_since(self.started).as_secs_f64().max(0.001);
        let speed = byte_size_string((received as f64 / secs) as u64);
        Some(format!("{label}: {percent}% ({speed}/s)"))
    }
}

/// LXD's `GetByteSizeString(n, 2)`: decimal units.
fn byte_size_string(n: u64) -> String {
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    for unit in ["kB", "MB", "GB", "TB", "PB", "EB"] {
        value /= 1000.0;
        if value < 1000.0 {
            return format!("{value:.2}{unit}");
        }
    }
    format!("{value:.2}EB")
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    #[test]
    fn progress_reads_as_lxd_reports_it() {
        let mut p = DownloadProgress::default();
        let first = p.text("rootfs", 0, 1000).unwrap();
        assert!(first.starts_with("rootfs: 0% ("), "{first}");
        assert!(first.ends_with("/s)"), "{first}");
        // The same percentage again, or a new one within 100 ms: nothing.
        assert_eq!(p.text("rootfs", 1, 1000), None);
        assert_eq!(p.text("rootfs", 500, 1000), None);
        // The end is always reported.
        assert!(p
            .text("rootfs", 1000, 1000)
            .unwrap()
            .starts_with("rootfs: 100% "));
        assert_eq!(byte_size_string(999), "999B");
        assert_eq!(byte_size_string(12_340_000), "12.34MB");
        // An unknown size reads as 0%.
        let mut p = DownloadProgress::default();
        assert!(p
            .text("metadata", 10, 0)
            .unwrap()
            .starts_with("metadata: 0% "));
        // The next file starts over: its first report is due at once.
        assert!(p
            .text("metadata", 10, 10)
            .unwrap()
            .starts_with("metadata: 100% "));
        assert!(p
            .text("rootfs", 10, 10)
            .unwrap()
            .starts_with("rootfs: 100% "));
    }
}
