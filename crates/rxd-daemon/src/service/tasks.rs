//! Task operations run in the background: registered, `work` spawned, ended with its result.

use crate::operations::{Op, Resources};
use crate::state::Daemon;
use serde_json::Value;
use std::sync::Arc;

/// Register a task operation in `project` and run `work` as it: the operation ends with
/// `work`'s result (its error's text on failure).
pub fn spawn<F, E>(
    d: &Arc<Daemon>,
    description: &str,
    project: &str,
    resources: Resources,
    work: F,
) -> Arc<Op>
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let op = d
        .operations
        .start(&d.events, description, project, resources, false);
    let (d2, op2) = (d.clone(), op.clone());
    tokio::spawn(async move {
        let result = work.await;
        op2.finish(
            &d2.events,
            result.map(|()| Value::Null).map_err(|e| e.to_string()),
        );
    });
    op
}
