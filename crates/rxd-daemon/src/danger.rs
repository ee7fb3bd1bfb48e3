//! Test-only escape hatches, compiled in only with the `failpoints` feature the test suite
//! builds with (never in a release build): each is read once from the daemon's environment.
//!
//! - `RXD_DANGER_SCHEDULER_MINUTE_MS=N`: the snapshot scheduler's clock advances one minute
//!   every N ms of real time, from the minute the daemon started in (see
//!   `service::schedule::Clock`), so a test sees `* * * * *` fire and `snapshots.expiry` prune
//!   without waiting real minutes. Only the scheduler's decisions (what is due, what has
//!   expired, the `expires_at` it gives a scheduled snapshot) use that clock.
//! - `RXD_DANGER_NO_IDMAPPED_MOUNTS=1`: act as on a filesystem that cannot be mounted
//!   idmapped, so the fallback (files shifted on disk) stays tested on kernels that can.

use std::time::Duration;

/// The scheduler's minute, when a test shortened it.
#[cfg(feature = "failpoints")]
pub fn scheduler_minute() -> Option<Duration> {
    let ms: u64 = std::env::var("RXD_DANGER_SCHEDULER_MINUTE_MS")
        .ok()?
        .parse()
        .ok()?;
    tracing::warn!(
        ms,
        "test-only: the snapshot scheduler's minute is shortened"
    );
    Some(Duration::from_millis(ms.max(10)))
}

/// The scheduler's minute, when a test shortened it (compiled out: never).
#[cfg(not(feature = "failpoints"))]
pub fn scheduler_minute() -> Option<Duration> {
    None
}

/// Whether a test asked the daemon to act as if no filesystem took idmapped mounts.
#[cfg(feature = "failpoints")]
pub fn no_idmapped_mounts() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| {
        let asked = std::env::var("RXD_DANGER_NO_IDMAPPED_MOUNTS").is_ok_and(|v| v == "1");
        if asked {
            tracing::warn!("test-only: idmapped mounts are not used");
        }
        asked
    })
}

/// Whether a test asked the daemon to act as if no filesystem took idmapped mounts (compiled
/// out: never).
#[cfg(not(feature = "failpoints"))]
pub fn no_idmapped_mounts() -> bool {
    false
}
