//! Changing a running container's CPU, memory and process limits (`rxd-shim limits ID`, the
//! daemon's launch plan for it on stdin), as LXD changes them live. What each key becomes is
//! the table in `spec.rs` (where the same limits enter the OCI spec at start); a key left unset
//! here is reset (all online CPUs, no quota, no memory limit), so that unsetting one lifts it.
//!
//! The files are written directly: libcgroups' v1 manager re-applies the device rules on every
//! apply, and a v1 `devices.deny` propagates to the sub-cgroups a container's systemd made while
//! the allows that follow do not, which would cut them off from their devices. Only limit files
//! are written, which stay host root's (the container's root owns its cgroup directory, not
//! these).

use crate::spec::{soft_of_hard, CgroupHost};
use anyhow::{bail, Context, Result};
use rxd_core::instance_config::CpuAllowance;
use rxd_core::launch::LaunchPlan;
use std::path::Path;

/// One cgroup file to write: the v1 controller's hierarchy (ignored on v2), the file, the value.
#[derive(Debug, PartialEq, Eq)]
pub struct Write {
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
    /// A limit the plan asks for (it must land), rather than one lifted to the default (which
    /// a controller this host does not give the container has nothing to lift).
    pub asked: bool,
}

fn w(controller: &'static str, file: &'static str, value: impl ToString) -> Write {
    Write {
        controller,
        file,
        value: value.to_string(),
        asked: false,
    }
}

impl Write {
    fn asked(mut self, asked: bool) -> Write {
        self.asked = asked;
        self
    }
}

/// The writes, in order, that give a running container `plan`'s limits. `online` is the host's
/// online CPU list (what `limits.cpu` unset means on v1).
pub fn writes(plan: &LaunchPlan, host: CgroupHost, online: &str) -> Vec<Write> {
    let hard = plan.memory_limit.filter(|_| !plan.memory_soft);
    let soft = plan.memory_limit.filter(|_| plan.memory_soft);
    let mut out = Vec::new();
    if host.v2 {
        // Empty: the parent's CPUs.
        out.push(
            w("cpuset", "cpuset.cpus", plan.cpus.as_deref().unwrap_or(""))
                .asked(plan.cpus.is_some()),
        );
        let (weight, max) = match plan.cpu_allowance {
            Some(CpuAllowance::Percent(p)) => (p.max(1), "max 100000".to_owned()),
            Some(CpuAllowance::Quota {
                quota_us,
                period_us,
            }) => (100, format!("{quota_us} {period_us}")),
            None => (100, "max 100000".to_owned()),
        };
        let allowance = plan.cpu_allowance.is_some();
        out.push(w("cpu", "cpu.weight", weight).asked(allowance));
        out.push(w("cpu", "cpu.max", max).asked(allowance));
        // LXD 5.0: with a hard limit, no swap beyond it (`memory.swap.max` 0) whatever
        // `limits.memory.swap` says; `false` without a hard limit also means no swap.
        let no_swap = plan.no_swap || hard.is_some();
        out.push(
            w(
                "memory",
                "memory.swap.max",
                if no_swap { "0" } else { "max" },
            )
            // Best effort for the default: a v2 host without swap accounting has no file.
            .asked(plan.no_swap),
        );
        out.push(
            w(
                "memory",
                "memory.max",
                hard.map_or("max".to_owned(), |b| b.to_string()),
            )
            .asked(hard.is_some()),
        );
        out.push(
            w(
                "memory",
                "memory.high",
                soft.map_or("max".to_owned(), |b| b.to_string()),
            )
            .asked(soft.is_some()),
        );
        out.push(w("memory", "memory.low", hard.map_or(0, soft_of_hard)).asked(hard.is_some()));
    } else {
        out.push(
            w(
                "cpuset",
                "cpuset.cpus",
                plan.cpus.as_deref().unwrap_or(online),
            )
            .asked(plan.cpus.is_some()),
        );
        let (shares, quota, period) = match plan.cpu_allowance {
            Some(CpuAllowance::Percent(p)) => ((1024 * u64::from(p) / 100).max(2), -1, 100_000),
            Some(CpuAllowance::Quota {
                quota_us,
                period_us,
            }) => (1024, i64::try_from(quota_us).unwrap_or(i64::MAX), period_us),
            None => (1024, -1, 100_000),
        };
        let allowance = plan.cpu_allowance.is_some();
        out.push(w("cpu", "cpu.shares", shares).asked(allowance));
        out.push(w("cpu", "cpu.cfs_period_us", period).asked(allowance));
        out.push(w("cpu", "cpu.cfs_quota_us", quota).asked(allowance));
        // Memory and swap together may never be below memory alone: lift it first.
        if host.memsw {
            out.push(w("memory", "memory.memsw.limit_in_bytes", -1));
        }
        out.push(
            w(
                "memory",
                "memory.limit_in_bytes",
                hard.map_or("-1".to_owned(), |b| b.to_string()),
            )
            .asked(hard.is_some()),
        );
        let soft_limit = match (hard, soft) {
            (Some(b), _) => soft_of_hard(b).to_string(),
            (None, Some(b)) => b.to_string(),
            (None, None) => "-1".to_owned(),
        };
        out.push(
            w("memory", "memory.soft_limit_in_bytes", soft_limit)
                .asked(plan.memory_limit.is_some()),
        );
        // LXD 5.0: with a hard limit, memory and swap together no more than the limit,
        // whatever `limits.memory.swap` says (LXD leaves swap unbounded when it is `false`).
        if let (true, Some(b)) = (host.memsw, hard) {
            out.push(w("memory", "memory.memsw.limit_in_bytes", b).asked(true));
        }
        // LXD's value when swap is allowed again (70 - the default swap priority 10).
        out.push(
            w(
                "memory",
                "memory.swappiness",
                if plan.no_swap { 0 } else { 60 },
            )
            .asked(plan.no_swap),
        );
    }
    out.push(
        w(
            "pids",
            "pids.max",
            plan.process_limit
                .map_or("max".to_owned(), |n| n.to_string()),
        )
        .asked(plan.process_limit.is_some()),
    );
    out
}

/// `rxd-shim limits ID`: apply the plan on stdin to the running container `id`, whose cgroup
/// comes from its runtime state (not from the plan).
pub fn apply(root: &Path, id: &str, plan: &LaunchPlan) -> Result<()> {
    if plan.name != id {
        bail!("the plan is for {}, not {id}", plan.name);
    }
    let container = crate::load(root, id)?;
    if !matches!(
        container.status(),
        libcontainer::container::ContainerStatus::Running
            | libcontainer::container::ContainerStatus::Paused
    ) {
        bail!("container {id} is not running");
    }
    let cgroup = container
        .spec()
        .context("reading the container's runtime state")?
        .cgroup_path;
    let cgroup = cgroup
        .to_str()
        .context("cgroup path")?
        .trim_start_matches('/');
    let host = CgroupHost::probe();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("reading the online CPUs")?;
    let base = Path::new("/sys/fs/cgroup");
    for write in writes(plan, host, online.trim()) {
        let dir = if host.v2 {
            base.join(cgroup)
        } else {
            base.join(write.controller).join(cgroup)
        };
        let path = dir.join(write.file);
        // A controller this host does not give the container (v2's cpuset may be off, swap
        // accounting may be missing): nothing to lift, but a limit asked for must land.
        if !path.exists() {
            if write.asked || !dir.exists() {
                bail!(
                    "this host cannot limit {} for the container ({} does not exist)",
                    write.file,
                    path.display()
                );
            }
            continue;
        }
        std::fs::write(&path, &write.value)
            .with_context(|| format!("writing {} to {}", write.value, path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LaunchPlan {
        LaunchPlan {
            name: "c1".into(),
            hostname: "c1".into(),
            rootfs: "/r".into(),
            idmap: None,
            idmapped_root: None,
            cgroup: "/rxd/t/c1".into(),
            memory_limit: None,
            process_limit: None,
            memory_soft: false,
            no_swap: false,
            cpus: None,
            cpu_allowance: None,
            sysctl: Default::default(),
            nesting: false,
            environment: Default::default(),
            devices: Default::default(),
            nics: Vec::new(),
        }
    }

    fn text(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .map(|w| format!("{}={}", w.file, w.value))
            .collect()
    }

    const V1: CgroupHost = CgroupHost {
        v2: false,
        memsw: true,
    };
    const V2: CgroupHost = CgroupHost {
        v2: true,
        memsw: false,
    };

    #[test]
    fn unset_keys_lift_their_limits() {
        assert_eq!(
            text(&writes(&plan(), V1, "0-1")),
            [
                "cpuset.cpus=0-1",
                "cpu.shares=1024",
                "cpu.cfs_period_us=100000",
                "cpu.cfs_quota_us=-1",
                "memory.memsw.limit_in_bytes=-1",
                "memory.limit_in_bytes=-1",
                "memory.soft_limit_in_bytes=-1",
                "memory.swappiness=60",
                "pids.max=max",
            ]
        );
        assert_eq!(
            text(&writes(&plan(), V2, "0-1")),
            [
                "cpuset.cpus=",
                "cpu.weight=100",
                "cpu.max=max 100000",
                "memory.swap.max=max",
                "memory.max=max",
                "memory.high=max",
                "memory.low=0",
                "pids.max=max",
            ]
        );
    }

    #[test]
    fn a_hard_limit_bounds_swap_too_whatever_limits_memory_swap_says() {
        let mib = 1 << 20;
        let mut p = plan();
        p.memory_limit = Some(64 * mib);
        let v1 = text(&writes(&p, V1, "0-1"));
        assert!(
            v1.contains(&format!("memory.memsw.limit_in_bytes={}", 64 * mib)),
            "{v1:?}"
        );
        assert!(v1.contains(&"memory.swappiness=60".to_owned()), "{v1:?}");
        let v2 = text(&writes(&p, V2, "0-1"));
        assert!(v2.contains(&"memory.swap.max=0".to_owned()), "{v2:?}");
        // Without swap accounting on v1, nothing names memsw.
        let no_memsw = CgroupHost {
            v2: false,
            memsw: false,
        };
        assert!(!text(&writes(&p, no_memsw, "0-1"))
            .iter()
            .any(|w| w.contains("memsw")));
    }

    #[test]
    fn a_limit_asked_for_must_land_and_a_lifted_one_may_be_missing() {
        let mut p = plan();
        assert!(writes(&p, V2, "0-1").iter().all(|w| !w.asked));
        p.cpus = Some("1".into());
        p.process_limit = Some(10);
        let asked: Vec<_> = writes(&p, V2, "0-1")
            .into_iter()
            .filter(|w| w.asked)
            .map(|w| w.file)
            .collect();
        assert_eq!(asked, ["cpuset.cpus", "pids.max"]);
    }

    #[test]
    fn limits_as_at_start() {
        let mib = 1 << 20;
        let mut p = plan();
        p.cpus = Some("1".into());
        p.cpu_allowance = Some(CpuAllowance::Percent(50));
        p.memory_limit = Some(100 * mib);
        p.no_swap = true;
        p.process_limit = Some(50);
        let soft = soft_of_hard(100 * mib);
        assert_eq!(
            text(&writes(&p, V1, "0-1")),
            [
                "cpuset.cpus=1".to_owned(),
                "cpu.shares=512".into(),
                "cpu.cfs_period_us=100000".into(),
                "cpu.cfs_quota_us=-1".into(),
                "memory.memsw.limit_in_bytes=-1".into(),
                format!("memory.limit_in_bytes={}", 100 * mib),
                format!("memory.soft_limit_in_bytes={soft}"),
                format!("memory.memsw.limit_in_bytes={}", 100 * mib),
                "memory.swappiness=0".into(),
                "pids.max=50".into(),
            ]
        );
        p.memory_soft = true;
        p.no_swap = false;
        p.cpu_allowance = Some(CpuAllowance::Quota {
            quota_us: 25_000,
            period_us: 100_000,
        });
        assert_eq!(
            text(&writes(&p, V2, "0-1")),
            [
                "cpuset.cpus=1".to_owned(),
                "cpu.weight=100".into(),
                "cpu.max=25000 100000".into(),
                "memory.swap.max=max".into(),
                "memory.max=max".into(),
                format!("memory.high={}", 100 * mib),
                "memory.low=0".into(),
                "pids.max=50".into(),
            ]
        );
    }
}
