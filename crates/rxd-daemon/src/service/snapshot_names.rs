//! Snapshot names and expiry, as instances and storage volumes share them: the name rule,
//! the next name a pattern gives, and the default expiry.

use crate::error::{ApiError, ApiResult};
use std::collections::BTreeMap;

pub fn valid_name(name: &str) -> ApiResult<()> {
    if rxd_core::name::valid_snapshot_name(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Invalid snapshot name {name:?}: letters, digits, '-' and '_', starting with a letter or digit, at most 63"
        )))
    }
}

/// `snapshots::next_name` among snapshot names `taken` (a storage volume's as an instance's).
pub fn next_name_among(
    config: &BTreeMap<String, String>,
    taken: &[&str],
    now: i64,
) -> ApiResult<String> {
    let pattern = config
        .get("snapshots.pattern")
        .map_or(rxd_core::schedule::DEFAULT_PATTERN, String::as_str);
    let rendered = rxd_core::schedule::render_pattern(pattern, now)
        .map_err(|e| ApiError::BadRequest(format!("snapshots.pattern {pattern:?}: {e}")))?;
    let with_index = if rendered.contains("%d") {
        rendered
    } else if taken.contains(&rendered.as_str()) {
        format!("{rendered}-%d")
    } else {
        return Ok(rendered);
    };
    let (before, after) = with_index.split_once("%d").unwrap_or((&with_index, ""));
    let next = taken
        .iter()
        .filter_map(|name| {
            let digits = name.strip_prefix(before)?.strip_suffix(after)?;
            // As LXD's `%d` scan into an int: a number too large for one does not count.
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<i64>().ok()?.checked_add(1))
                .flatten()
        })
        .max()
        .unwrap_or(0);
    Ok(format!("{before}{next}{after}"))
}

/// When a snapshot taken at `now` without an explicit expiry expires, by the instance's
/// `snapshots.expiry` (LXD applies it to API and scheduled snapshots alike); 0 for never.
pub fn default_expiry(config: &BTreeMap<String, String>, now: i64) -> i64 {
    config
        .get("snapshots.expiry")
        .and_then(|v| rxd_core::expiry::parse_expiry(v).ok())
        .map_or(0, |d| {
            now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
}
