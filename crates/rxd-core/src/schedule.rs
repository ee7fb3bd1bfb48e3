//! Scheduled snapshots' rules, as LXD 5.0 has them: when `snapshots.schedule` is due, what
//! `snapshots.pattern` names a snapshot. No IO and no clock: the daemon's scheduler hands in the
//! minute it is checking, so every rule here is a table test.
//!
//! A schedule is one or more specs joined by `", "`: five-field cron (`M H DoM Mon DoW`, names
//! and ranges as Vixie cron; parsed by `croner`), or an alias. As in LXD, `@hourly`, `@daily`,
//! `@midnight`, `@weekly`, `@monthly`, `@annually` and `@yearly` run at a minute (and hour)
//! picked once per instance from its name, so instances with the same alias do not all snapshot
//! at once; `@startup` snapshots when the instance starts; `@never` never. Times are UTC (LXD
//! uses the server's local time zone; rxd's hosts run in UTC).

use chrono::{DateTime, Datelike, Timelike, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed `snapshots.schedule`.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    crons: Vec<Cron>,
    startup: bool,
}

impl Schedule {
    /// Parse `spec` for the instance `seed` (its key: the aliases' minute and hour come from it).
    pub fn parse(spec: &str, seed: &str) -> Result<Schedule, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let (minute, hour) = stable_minute_hour(seed);
        let mut schedule = Schedule::default();
        for part in spec.split(", ") {
            let part = part.trim();
            let cron = match part.to_ascii_lowercase().as_str() {
                "" => return Err(format!("empty schedule in {spec:?}")),
                "@startup" => {
                    schedule.startup = true;
                    continue;
                }
                "@never" => continue,
                "@hourly" => format!("{minute} * * * *"),
                "@daily" => format!("{minute} {hour} * * *"),
                "@midnight" => format!("{minute} 0 * * *"),
                "@weekly" => format!("{minute} {hour} * * 0"),
                "@monthly" => format!("{minute} {hour} 1 * *"),
                "@annually" | "@yearly" => format!("{minute} {hour} 1 1 *"),
                alias if alias.starts_with('@') => {
                    return Err(format!(
                        "unknown schedule alias {part:?}: expected cron syntax (\"0 6 * * *\") or @hourly, @daily, @midnight, @weekly, @monthly, @annually, @yearly, @startup, @never"
                    ))
                }
                _ if part.split_whitespace().count() != 5 => {
                    return Err(format!(
                        "{part:?} is not a cron schedule: expected five fields, minute hour day-of-month month day-of-week"
                    ))
                }
                _ => part.to_owned(),
            };
            let parsed = parser
                .parse(&cron)
                .map_err(|e| format!("invalid cron schedule {part:?}: {e}"))?;
            schedule.crons.push(parsed);
        }
        Ok(schedule)
    }

    /// Whether the schedule falls in the minute starting at `minute` (Unix seconds; only the
    /// minute counts).
    pub fn due(&self, minute: i64) -> bool {
        let Some(at) = DateTime::<Utc>::from_timestamp(minute - minute.rem_euclid(60), 0) else {
            return false;
        };
        self.crons
            .iter()
            .any(|c| c.is_time_matching(&at).unwrap_or(false))
    }

    /// Whether the instance is snapshotted each time it starts (`@startup`).
    pub fn at_startup(&self) -> bool {
        self.startup
    }
}

/// A minute and an hour chosen by the seed, the same at every start of the daemon (FNV-1a: a
/// spread, not a secret).
fn stable_minute_hour(seed: &str) -> (u64, u64) {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % 60, (hash / 60) % 24)
}

/// LXD's default `snapshots.pattern`.
pub const DEFAULT_PATTERN: &str = "snap%d";

/// Longest pattern accepted (names are at most 63 bytes anyway).
const MAX_PATTERN: usize = 256;

/// Render `snapshots.pattern` for a snapshot taken at `created` (Unix seconds). LXD renders it
/// with pongo2; rxd supports what names need: literal text, `%d` (at most one; the caller
/// replaces it with the next free index) and `{{ creation_date|date:"LAYOUT" }}` with a Go
/// layout (`2006` `06` `01` `Jan` `02` `15` `03` `04` `05` `PM` `Mon`), or
/// `{{ creation_date }}` alone (RFC 3339, as pongo2 prints a time; not a valid name).
pub fn render_pattern(pattern: &str, created: i64) -> Result<String, String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!("longer than {MAX_PATTERN} bytes"));
    }
    if pattern.matches("%d").count() > 1 {
        return Err("at most one %d".into());
    }
    let at = DateTime::<Utc>::from_timestamp(created, 0).ok_or("time out of range")?;
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed {{{{ in {pattern:?}"))?;
        out.push_str(&expression(after[..end].trim(), &at)?);
        rest = &after[end + 2..];
    }
    if rest.contains("}}") || rest.contains("{%") {
        return Err(format!(
            "unsupported template syntax in {pattern:?}: only {{{{ creation_date|date:\"...\" }}}} and %d"
        ));
    }
    out.push_str(rest);
    Ok(out)
}

fn expression(expr: &str, at: &DateTime<Utc>) -> Result<String, String> {
    let unsupported = || {
        format!(
            "unsupported expression {{{{ {expr} }}}}: only creation_date, optionally |date:\"2006-01-02_15-04-05\""
        )
    };
    let (var, filter) = match expr.split_once('|') {
        Some((v, f)) => (v.trim(), Some(f.trim())),
        None => (expr, None),
    };
    if var != "creation_date" {
        return Err(unsupported());
    }
    let Some(filter) = filter else {
        return Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    };
    let layout = filter
        .strip_prefix("date:")
        .map(str::trim)
        .and_then(|l| {
            l.strip_prefix('"')
                .and_then(|l| l.strip_suffix('"'))
                .or_else(|| l.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')))
        })
        .ok_or_else(unsupported)?;
    Ok(go_layout(layout, at))
}

/// Format `at` (UTC) with a Go time layout, read chunk by chunk as Go's `time` package reads
/// one (`nextStdChunk`): the reference time is `Mon Jan 2 15:04:05 MST 2006`; anything that is
/// not a layout element is copied.
fn go_layout(layout: &str, at: &DateTime<Utc>) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let month = MONTHS[at.month0() as usize];
    let day = DAYS[at.weekday().num_days_from_monday() as usize];
    let hour12 = match at.hour() % 12 {
        0 => 12,
        h => h,
    };
    let pm = at.hour() >= 12;
    // Go's elements, longest first where one is a prefix of another.
    let elements: [(&str, String); 28] = [
        ("January", month.to_owned()),
        ("Jan", month[..3].to_owned()),
        ("Monday", day.to_owned()),
        ("Mon", day[..3].to_owned()),
        ("MST", "UTC".to_owned()),
        ("2006", format!("{:04}", at.year())),
        ("002", format!("{:03}", at.ordinal())),
        ("01", format!("{:02}", at.month())),
        ("02", format!("{:02}", at.day())),
        ("03", format!("{hour12:02}")),
        ("04", format!("{:02}", at.minute())),
        ("05", format!("{:02}", at.second())),
        ("06", format!("{:02}", at.year().rem_euclid(100))),
        ("__2", format!("{:>3}", at.ordinal())),
        ("_2", format!("{:>2}", at.day())),
        ("15", format!("{:02}", at.hour())),
        ("1", at.month().to_string()),
        ("2", at.day().to_string()),
        ("3", hour12.to_string()),
        ("4", at.minute().to_string()),
        ("5", at.second().to_string()),
        ("PM", if pm { "PM" } else { "AM" }.to_owned()),
        ("pm", if pm { "pm" } else { "am" }.to_owned()),
        ("Z07:00", "Z".to_owned()),
        ("Z0700", "Z".to_owned()),
        ("-07:00", "+00:00".to_owned()),
        ("-0700", "+0000".to_owned()),
        ("-07", "+00".to_owned()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (element, value) in &elements {
            if let Some(after) = rest.strip_prefix(element) {
                // Go reads `Jan`/`Mon` only when no lower-case letter follows (`Janet` is
                // text), and `2006`'s `2` is the day only when `006` does not follow.
                let word = element.starts_with(|c: char| c.is_ascii_uppercase())
                    && element.len() == 3
                    && after.starts_with(|c: char| c.is_ascii_lowercase())
                    && !matches!(*element, "MST");
                if word {
                    continue;
                }
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-04 20:17:00 UTC, a Friday.
    const T: i64 = 1_796_415_420;

    fn check_due(spec: &str, minute: i64, due: bool) {
        let s = Schedule::parse(spec, "c1").unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(s.due(minute), due, "{spec} at {minute}");
    }

    #[test]
    fn schedules() {
        assert_eq!(
            DateTime::<Utc>::from_timestamp(T, 0).unwrap().to_rfc3339(),
            "2026-12-04T20:17:00+00:00"
        );
        check_due("* * * * *", T, true);
        check_due("* * * * *", T + 59, true);
        check_due("17 20 * * *", T, true);
        check_due("18 20 * * *", T, false);
        check_due("18 20 * * *", T + 60, true);
        check_due("*/5 * * * *", T, false);
        check_due("*/5 * * * *", T + 180, true);
        check_due("0 6 * * 1-5", T, false);
        check_due("17 20 * * fri", T, true);
        check_due("17 20 * * sat", T, false);
        check_due("0 6 * * *, 17 20 * * *", T, true);
        check_due("@never", T, false);
        // An alias runs once in its period, at the instance's own minute.
        let hits = (0..60).filter(|m| Schedule::parse("@hourly", "c1").unwrap().due(T + m * 60));
        assert_eq!(hits.count(), 1);
        let daily = Schedule::parse("@daily", "c1").unwrap();
        assert_eq!((0..1440).filter(|m| daily.due(T + m * 60)).count(), 1);
        assert!(Schedule::parse("@startup", "c1").unwrap().at_startup());
        assert!(!Schedule::parse("@startup", "c1").unwrap().due(T));
        assert!(Schedule::parse("@hourly, @startup", "c1")
            .unwrap()
            .at_startup());
    }

    #[test]
    fn refused_schedules() {
        for bad in [
            "",
            "* * * *",
            "0 * * * * *",
            "61 * * * *",
            "* 25 * * *",
            "@sometimes",
            "a b c d e",
            "* * * * *,",
        ] {
            assert!(Schedule::parse(bad, "c1").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patterns() {
        let check = |p: &str, want: Result<&str, ()>| {
            let got = render_pattern(p, T + 5).map_err(drop);
            assert_eq!(got.as_deref().map_err(|&()| ()), want, "{p}");
        };
        check("snap%d", Ok("snap%d"));
        check("daily", Ok("daily"));
        check(
            "{{ creation_date|date:'2006-01-02_15-04-05' }}",
            Ok("2026-12-04_20-17-05"),
        );
        check(
            "auto-{{creation_date|date:\"060102-1504\"}}-%d",
            Ok("auto-261204-2017-%d"),
        );
        check(
            "{{ creation_date|date:'Mon-Jan-03PM' }}",
            Ok("Fri-Dec-08PM"),
        );
        check("{{ creation_date }}", Ok("2026-12-04T20:17:05Z"));
        // Go's single-digit, long-name and zone elements.
        check(
            "{{ creation_date|date:'2006-1-2_3.4.5pm' }}",
            Ok("2026-12-4_8.17.5pm"),
        );
        check(
            "{{ creation_date|date:'Monday-January-_2-002-MST-Z07:00' }}",
            Ok("Friday-December- 4-338-UTC-Z"),
        );
        check("%d-%d", Err(()));
        check("{{ other }}", Err(()));
        check("{{ creation_date|upper }}", Err(()));
        check("{{ creation_date", Err(()));
        check("{% if x %}", Err(()));
    }
}
