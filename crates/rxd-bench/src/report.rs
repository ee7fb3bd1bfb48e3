//! Reports (one JSON object of named figures per run) and their comparison.

use anyhow::Context;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    s[s.len() / 2]
}

pub struct Report {
    label: String,
    metrics: Map<String, Value>,
}

impl Report {
    pub fn new(label: &str, metrics: Map<String, Value>) -> Report {
        Report {
            label: label.to_owned(),
            metrics,
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let v = json!({
            "label": self.label,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "metrics": self.metrics,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        for (k, v) in &self.metrics {
            eprintln!("  {k:<36} {v}");
        }
        Ok(())
    }
}

/// Each metric's values across the reports.
fn gather(paths: &[std::path::PathBuf]) -> anyhow::Result<BTreeMap<String, Vec<f64>>> {
    let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in paths {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?,
        )?;
        if let Some(m) = v["metrics"].as_object() {
            for (k, x) in m {
                if let Some(x) = x.as_f64() {
                    all.entry(k.clone()).or_default().push(x);
                }
            }
        }
    }
    Ok(all)
}

/// The targets of the benchmark issue: (metric, how the ratio rxd/LXD is judged, bound).
/// `Min` means the ratio must be at least the bound, `Max` at most.
enum Bound {
    Min(f64),
    Max(f64),
}

fn target(metric: &str) -> Option<Bound> {
    Some(match metric {
        "keepalive_8_rps" | "keepalive_64_rps" => Bound::Min(10.0),
        "newconn_8_rps" => Bound::Min(4.0),
        "unix_p50_us" => Bound::Max(0.25),
        "startup_empty_ms" => Bound::Max(0.05),
        "rss_idle_kib" | "rss_idle_empty_kib" => Bound::Max(1.0 / 6.0),
        "container_start_ms" => Bound::Max(0.2),
        "exec_true_ms" => Bound::Max(1.0 / 3.0),
        "bridged_start_ms" | "bridged_lease_ms" => Bound::Max(0.2),
        _ => return None,
    })
}

pub fn compare(
    a: &[std::path::PathBuf],
    b: &[std::path::PathBuf],
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let (a, b) = (gather(a)?, gather(b)?);
    let mut rows = Vec::new();
    println!(
        "{:<34} {:>14} {:>14} {:>9}  target",
        "metric (median of rounds)", "rxd", "LXD", "rxd/LXD"
    );
    for (k, av) in &a {
        let am = median(av);
        let bm = b.get(k).map(|v| median(v));
        let ratio = bm.filter(|x| *x != 0.0).map(|x| am / x);
        let verdict = match (target(k), ratio) {
            (Some(Bound::Min(t)), Some(r)) => {
                format!("≥ {t:.2}: {}", if r >= t { "met" } else { "MISSED" })
            }
            (Some(Bound::Max(t)), Some(r)) => {
                format!("≤ {t:.3}: {}", if r <= t { "met" } else { "MISSED" })
            }
            _ => String::new(),
        };
        println!(
            "{k:<34} {am:>14.1} {:>14} {:>9}  {verdict}",
            bm.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into()),
            ratio
                .map(|r| format!("{r:.3}"))
                .unwrap_or_else(|| "-".into()),
        );
        rows.push(json!({"metric": k, "rxd": am, "lxd": bm, "ratio": ratio, "target": verdict}));
    }
    // rxd holding 100,000 trusted certificates against LXD holding one.
    if let (Some(r), Some(l)) = (a.get("rss_idle_certs100k_kib"), b.get("rss_idle_empty_kib")) {
        let (r, l) = (median(r), median(l));
        let ok = r <= l;
        println!(
            "{:<34} {r:>14.1} {l:>14.1} {:>9.3}  ≤ 1.000: {}",
            "rss 100k certs (rxd) vs 1 (LXD)",
            r / l,
            if ok { "met" } else { "MISSED" }
        );
        rows.push(
            json!({"metric": "rss_100k_certs_vs_lxd_one", "rxd": r, "lxd": l, "ratio": r / l}),
        );
    }
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
