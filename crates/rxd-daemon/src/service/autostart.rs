//! Instances that start with the daemon (`boot.autostart`, LXD's `instancesStart`): once
//! start-up recovery has adopted the containers still running, every stopped instance the rule
//! in `rxd_core::boot` picks is started, higher `boot.autostart.priority` first, waiting
//! `boot.autostart.delay` seconds after each. After a plain daemon restart the containers that
//! ran are adopted and none of them starts twice; after the host's reboot the ones its shutdown
//! halted (`volatile.last_state.power=RUNNING`) come back.

use crate::service::instances::{by_key, config_of, start, Keyed};
use crate::state::Daemon;
use rxd_core::name::InstanceKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// LXD's tries and pause between them before it gives up on an instance.
const TRIES: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Start what is to start; returns as soon as `shutdown` turns true (the daemon is stopping),
/// between two starts.
pub async fn run(d: Arc<Daemon>, mut shutdown: watch::Receiver<bool>) {
    let rows = match d.db(|s| s.all_instances()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot list instances to autostart");
            return;
        }
    };
    let mut stopped = Vec::new();
    for r in rows
        .iter()
        .filter(|r| !crate::service::instances::create_unfinished(r))
        .filter(|r| d.runtime.init(&r.key()).is_none())
    {
        // `boot.autostart*` often come from a profile.
        let config = match crate::service::expand::expanded(&d, r).await {
            Ok(e) => e.config,
            Err(_) => config_of(r),
        };
        stopped.push((r.key(), r.name.clone(), config));
    }
    let order = rxd_core::boot::autostart_order(stopped);
    if order.is_empty() {
        return;
    }
    tracing::info!(
        instances = order.len(),
        "starting instances (boot.autostart)"
    );
    for next in order {
        if let Err(e) = start_one(&d, &next.key, &mut shutdown).await {
            let message = format!("Failed to auto start instance {}: {e}", next.key);
            tracing::warn!(instance = %next.key, "{message}");
            crate::sync::lock(&d.warnings)
                .record(rxd_core::warnings::WarningKind::AutostartFailed, message);
            // As LXD: the delay follows a start, not a failure.
            continue;
        }
        if next.delay_secs > 0 && pause(&mut shutdown, Duration::from_secs(next.delay_secs)).await {
            return;
        }
    }
}

/// Start one instance, trying again as LXD does; a stopping daemon ends the tries quietly.
async fn start_one(
    d: &Arc<Daemon>,
    key: &InstanceKey,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=TRIES {
        {
            let lock = d.runtime.action_lock(key);
            let _guard = lock.lock().await;
            if *shutdown.borrow() {
                return Ok(());
            }
            // Someone may have started (or deleted) it since the list was made.
            let Ok(row) = by_key(d, key).await else {
                return Ok(());
            };
            if d.runtime.init(key).is_some() {
                return Ok(());
            }
            match start(d, key).await {
                Ok(()) => {
                    tracing::info!(instance = %key, "started (boot.autostart)");
                    crate::service::schedule::at_start(d, &row).await;
                    d.events.lifecycle_by_daemon(
                        "instance-started",
                        &format!("/1.0/instances/{}", row.name),
                        &row.project,
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(instance = %key, attempt, error = %e, "autostart failed");
                    last = e.to_string();
                }
            }
        }
        if attempt < TRIES && pause(shutdown, RETRY_AFTER).await {
            return Ok(());
        }
    }
    Err(last)
}

/// Wait `how_long`; true if the daemon began stopping meanwhile.
async fn pause(shutdown: &mut watch::Receiver<bool>, how_long: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(how_long) => false,
        // Stopping (or no daemon left to say so).
        _ = shutdown.wait_for(|s| *s) => true,
    }
}
