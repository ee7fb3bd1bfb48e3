//! Fail points: named places before and after a durable step where a test can make the daemon
//! die as a kill would (SIGKILL to itself: no unwinding, no clean-up, no core file), to check
//! that a restart finds nothing half-made. Compiled in only with the `failpoints` feature, which
//! the test suite builds with; `RXD_FAILPOINTS=name[,name...]` in the daemon's environment arms
//! them. Without the feature, [`hit`] is empty and costs nothing.
//!
//! Pause points ([`pause`]) are the same for races: `RXD_PAUSEPOINTS=name[,name...]` makes the
//! task that reaches one wait there (half a second), so that concurrent requests a test sends
//! all reach it before any goes on.

/// Whether `name` is among the points the environment variable `var` names (read once, into
/// `cell`).
#[cfg(feature = "failpoints")]
fn armed(cell: &'static std::sync::OnceLock<Vec<String>>, var: &str, name: &str) -> bool {
    cell.get_or_init(|| {
        std::env::var(var)
            .map(|v| v.split(',').map(|p| p.trim().to_owned()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|a| a == name)
}

/// Die here if this point is armed.
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    static ARMED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    if armed(&ARMED, "RXD_FAILPOINTS", name) {
        tracing::error!(failpoint = name, "fail point reached: killing the daemon");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; should it somehow return, stop anyway.
        std::process::abort();
    }
}

/// Die here if this point is armed (compiled out: never).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Wait here (half a second) if this point is armed in `RXD_PAUSEPOINTS`.
#[cfg(feature = "failpoints")]
pub async fn pause(name: &'static str) {
    static ARMED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    if armed(&ARMED, "RXD_PAUSEPOINTS", name) {
        tracing::warn!(pausepoint = name, "pause point reached: waiting");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Wait here if this point is armed (compiled out: never).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn pause(_name: &'static str) {}
