//! Fail points: named places before and after a durable step where a test can make the daemon
//! die as a kill would (SIGKILL to itself: no unwinding, no clean-up, no core file), to check
//! that a restart finds nothing half-made. Compiled in only with the `failpoints` feature, which
//! the test suite builds with; `RXD_FAILPOINTS=name[,name...]` in the daemon's environment arms
//! them. Without the feature, [`hit`] is empty and costs nothing.

/// Die here if this point is armed.
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("RXD_FAILPOINTS")
            .map(|v| v.split(',').map(|p| p.trim().to_owned()).collect())
            .unwrap_or_default()
    });
    if armed.iter().any(|a| a == name) {
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
