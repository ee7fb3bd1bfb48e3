//! Scheduled snapshots and the expiry of old ones, as LXD runs them: once a minute, every
//! instance whose `snapshots.schedule` falls in that minute is snapshotted (running ones, and
//! stopped ones too with `snapshots.schedule.stopped=true`), named by `snapshots.pattern` and
//! expiring after `snapshots.expiry`; then every snapshot whose `expires_at` has passed is
//! deleted. `@startup` schedules snapshot at each start ([`at_start`]). Custom volumes are
//! snapshotted and pruned the same way, by their own `snapshots.schedule`, `snapshots.pattern`
//! and `snapshots.expiry` (through `service::volumes`, as a client's snapshot is taken).
//!
//! Snapshots are taken and deleted by `service::snapshots::take` and `remove`, the same
//! crash-consistent steps (intent, copy, row) as a client's, under the instance's action lock.
//! A tick's work runs in this one task, one snapshot after another: a slow copy delays the
//! next tick, and the minutes it missed are checked then (a schedule that fell in any of them
//! fires once).

use crate::service::instances::{config_of, Keyed};

/// The config an instance's schedule is read from: its profiles' and its own (its own alone
/// if a profile cannot be read, which is logged where it fails).
async fn expanded(d: &Daemon, row: &InstanceRow) -> std::collections::BTreeMap<String, String> {
    match crate::service::expand::expanded(d, row).await {
        Ok(e) => e.config,
        Err(_) => config_of(row),
    }
}
use crate::service::snapshots::{default_expiry, next_name, remove, take, url};
use crate::state::Daemon;
use rxd_core::instance_config::flag;
use rxd_core::name::InstanceKey;
use rxd_core::schedule::Schedule;
use rxd_store::InstanceRow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most missed minutes a late tick looks back over.
const CATCH_UP_MINUTES: i64 = 60;

/// The scheduler's time: the wall clock in minutes, or, for tests (`danger`), a clock that
/// advances one minute per shortened tick from the minute the daemon started in.
pub struct Clock {
    fast: Option<(Duration, Instant, i64)>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            fast: crate::danger::scheduler_minute().map(|minute| {
                let now = crate::sync::now_unix();
                (minute, Instant::now(), now - now.rem_euclid(60))
            }),
        }
    }

    /// Now, in Unix seconds.
    fn now(&self) -> i64 {
        match self.fast {
            None => crate::sync::now_unix(),
            Some((minute, origin, start)) => {
                let ticks = origin.elapsed().as_nanos() / minute.as_nanos().max(1);
                start + 60 * i64::try_from(ticks).unwrap_or(i64::MAX / 120)
            }
        }
    }

    /// How long until the next minute begins (a little after, on the wall clock).
    fn until_next_minute(&self) -> Duration {
        match self.fast {
            None => {
                let into = crate::sync::now_unix().rem_euclid(60);
                Duration::from_secs(u64::try_from(60 - into).unwrap_or(60) + 1)
            }
            Some((minute, origin, _)) => {
                let into = origin.elapsed().as_nanos() % minute.as_nanos().max(1);
                minute.saturating_sub(Duration::from_nanos(u64::try_from(into).unwrap_or(0)))
            }
        }
    }
}

/// Run the scheduler until the daemon stops.
pub async fn run(d: Arc<Daemon>, mut shutdown: watch::Receiver<bool>) {
    let clock = Clock::new();
    // The minute the daemon started in was the previous daemon's to check.
    let mut checked = clock.now() - clock.now().rem_euclid(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(clock.until_next_minute()) => {}
            // Stopping (or no daemon left to say so).
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = clock.now();
        let minute = now - now.rem_euclid(60);
        if minute <= checked {
            continue;
        }
        let from = checked.max(minute - 60 * CATCH_UP_MINUTES) + 60;
        checked = minute;
        snapshot_due(&d, from, minute, now).await;
        prune_expired(&d, now).await;
        volume_snapshots_due(&d, from, minute, now).await;
        prune_expired_volume_snapshots(&d, now).await;
        crate::service::backups::prune_expired(&d, now).await;
    }
}

/// Snapshot every instance whose schedule falls in a minute from `first` to `last` (Unix
/// seconds of each minute's start); `now` is the scheduler's time.
async fn snapshot_due(d: &Arc<Daemon>, first: i64, last: i64, now: i64) {
    let rows = match d.db(|s| s.all_instances()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot list instances for scheduled snapshots");
            return;
        }
    };
    for row in rows {
        let config = expanded(d, &row).await;
        let Some(spec) = config.get("snapshots.schedule") else {
            continue;
        };
        if falls_due(spec, &row.key(), first, last) {
            scheduled_snapshot(d, &row, now).await;
        }
    }
}

/// Whether the schedule `spec` (its aliases' minute chosen by `seed`) falls in a minute from
/// `first` to `last`; one that does not parse never does, and is logged.
fn falls_due(spec: &str, seed: &str, first: i64, last: i64) -> bool {
    match Schedule::parse(spec, seed) {
        Ok(schedule) => (first..=last).step_by(60).any(|m| schedule.due(m)),
        Err(e) => {
            tracing::warn!(subject = %seed, error = %e, "snapshots.schedule not understood");
            false
        }
    }
}

/// Take a scheduled snapshot of `row` if its state and project allow one now.
async fn scheduled_snapshot(d: &Arc<Daemon>, row: &InstanceRow, now: i64) {
    let key = row.key();
    let lock = d.runtime.action_lock(&key);
    let _guard = lock.lock().await;
    // Re-read under the lock: it may have been changed, renamed or deleted meanwhile.
    let Ok(row) = crate::service::instances::by_key(d, &key).await else {
        return;
    };
    let config = expanded(d, &row).await;
    if d.runtime.init(&key).is_none() && !flag(&config, "snapshots.schedule.stopped") {
        return;
    }
    if let Some(p) = d.project(&row.project) {
        if let Err(e) = rxd_auth::confinement::check_snapshot(&row.project, &p.config) {
            tracing::warn!(instance = %key, refused = %e, "scheduled snapshot skipped");
            return;
        }
    }
    match take_named(d, &row, &key, now).await {
        Ok(name) => {
            tracing::info!(instance = %key, snapshot = %name, "scheduled snapshot taken");
            d.events.lifecycle_by_daemon(
                "instance-snapshot-created",
                &url(&row.name, &name),
                &row.project,
            );
        }
        Err(e) => tracing::error!(instance = %key, error = %e, "scheduled snapshot failed"),
    }
}

async fn take_named(
    d: &Arc<Daemon>,
    row: &InstanceRow,
    key: &InstanceKey,
    now: i64,
) -> crate::error::ApiResult<String> {
    let config = expanded(d, row).await;
    let (p, n) = (row.project.clone(), row.name.clone());
    let taken = d.db(move |s| s.snapshots(&p, &n)).await?;
    let name = next_name(&config, &taken, now)?;
    crate::service::snapshots::valid_name(&name)?;
    // Recorded at the wall clock's time; the expiry follows the scheduler's (a test's
    // shortened minutes), which is what prunes it.
    take(
        d,
        key,
        &name,
        crate::sync::now_unix(),
        default_expiry(&config, now),
    )
    .await?;
    Ok(name)
}

/// Delete every snapshot whose expiry is `now` or earlier.
async fn prune_expired(d: &Arc<Daemon>, now: i64) {
    let expired = match d.db(move |s| s.expired_snapshots(now)).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot list expired snapshots");
            return;
        }
    };
    for snap in expired {
        let key = InstanceKey::new(&snap.project, &snap.instance);
        let lock = d.runtime.action_lock(&key);
        let _guard = lock.lock().await;
        let Ok(row) = crate::service::instances::by_key(d, &key).await else {
            continue;
        };
        // Renamed, deleted or given a new expiry meanwhile: left for the next tick.
        let (p, i, n) = (row.project.clone(), row.name.clone(), snap.name.clone());
        match d.db(move |s| s.snapshot(&p, &i, &n)).await {
            Ok(now_row) if now_row.expires_at > 0 && now_row.expires_at <= now => {}
            _ => continue,
        }
        match remove(d, &row, &snap.name).await {
            Ok(()) => {
                tracing::info!(instance = %key, snapshot = %snap.name, "expired snapshot deleted");
                d.events.lifecycle_by_daemon(
                    "instance-snapshot-deleted",
                    &url(&row.name, &snap.name),
                    &row.project,
                );
            }
            Err(e) => {
                tracing::error!(instance = %key, snapshot = %snap.name, error = %e, "could not delete an expired snapshot")
            }
        }
    }
}

/// Snapshot every custom volume whose schedule falls in a minute from `first` to `last`,
/// named by its `snapshots.pattern` and expiring after its `snapshots.expiry` (as a client's
/// snapshot without a name is). `now` is the scheduler's time.
async fn volume_snapshots_due(d: &Arc<Daemon>, first: i64, last: i64, now: i64) {
    let rows = match d.db(|s| s.storage_volumes(None, None)).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot list volumes for scheduled snapshots");
            return;
        }
    };
    for row in rows {
        let config: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&row.config).unwrap_or_default();
        let Some(spec) = config.get("snapshots.schedule").filter(|s| !s.is_empty()) else {
            continue;
        };
        let seed = crate::service::volumes::schedule_seed(&row);
        if !falls_due(spec, &seed, first, last) {
            continue;
        }
        if let Some(p) = d.project(&row.project) {
            if let Err(e) = rxd_auth::confinement::check_snapshot(&row.project, &p.config) {
                tracing::warn!(volume = %seed, refused = %e, "scheduled snapshot skipped");
                continue;
            }
        }
        let request = rxd_api::storage::StorageVolumeSnapshotsPost::default();
        match crate::service::volumes::snapshot_at(d, &row, request, now).await {
            Ok(name) => {
                tracing::info!(volume = %seed, snapshot = %name, "scheduled volume snapshot taken");
                d.events.lifecycle_by_daemon(
                    "storage-volume-snapshot-created",
                    &crate::service::volumes::snapshot_url(&row, &name),
                    &row.project,
                );
            }
            Err(e) => {
                tracing::error!(volume = %seed, error = %e, "scheduled volume snapshot failed")
            }
        }
    }
}

/// Delete every volume snapshot whose expiry is `now` or earlier.
async fn prune_expired_volume_snapshots(d: &Arc<Daemon>, now: i64) {
    let expired = match d.db(move |s| s.expired_storage_volume_snapshots(now)).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot list expired volume snapshots");
            return;
        }
    };
    for snap in expired {
        let (pool, project, volume) =
            (snap.pool.clone(), snap.project.clone(), snap.volume.clone());
        let Ok(row) = d
            .db(move |s| s.storage_volume(&pool, &project, &volume))
            .await
        else {
            continue;
        };
        let seed = crate::service::volumes::schedule_seed(&row);
        match crate::service::volumes::delete_expired_snapshot(d, &row, &snap.name, now).await {
            Ok(true) => {
                tracing::info!(volume = %seed, snapshot = %snap.name, "expired volume snapshot deleted");
                d.events.lifecycle_by_daemon(
                    "storage-volume-snapshot-deleted",
                    &crate::service::volumes::snapshot_url(&row, &snap.name),
                    &row.project,
                );
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(volume = %seed, snapshot = %snap.name, error = %e, "could not delete an expired volume snapshot")
            }
        }
    }
}

/// `@startup`: a snapshot each time the instance starts (its action lock held by the caller).
pub async fn at_start(d: &Arc<Daemon>, row: &InstanceRow) {
    let config = expanded(d, row).await;
    let startup = config
        .get("snapshots.schedule")
        .and_then(|spec| Schedule::parse(spec, &row.key()).ok())
        .is_some_and(|s| s.at_startup());
    if !startup {
        return;
    }
    if let Some(p) = d.project(&row.project) {
        if rxd_auth::confinement::check_snapshot(&row.project, &p.config).is_err() {
            return;
        }
    }
    let key = row.key();
    match take_named(d, row, &key, crate::sync::now_unix()).await {
        Ok(name) => {
            tracing::info!(instance = %key, snapshot = %name, "startup snapshot taken");
            d.events.lifecycle_by_daemon(
                "instance-snapshot-created",
                &url(&row.name, &name),
                &row.project,
            );
        }
        Err(e) => tracing::error!(instance = %key, error = %e, "startup snapshot failed"),
    }
}
