//! `rxc list`: instances with `lxc` 5.0's columns (`-c`), filters and formats. What a column
//! shows, how filters select and how rows are ordered follow `lxc list`, so scripts written for
//! one read the other.

use crate::cli::{Format, ListArgs};
use crate::connect::{open, split_target};
use crate::output::print_rows;
use crate::output::printable;
use anyhow::bail;
use rxd_api::instance::Instance;
use rxd_client::remotes::ConfigDir;
use serde_json::Value;
use std::cmp::Ordering;

pub use crate::cli::DEFAULT_COLUMNS;
const DEFAULT_COLUMNS_ALL_PROJECTS: &str = "ens46tSL";

/// What a column needs beyond the instance itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    State,
    Snapshots,
}

/// A column: its header and how it reads an instance.
pub struct Column {
    pub header: String,
    data: Data,
    needs: Needs,
}

enum Data {
    Short(char),
    Config { key: String, max: Option<usize> },
    Device { key: String, max: Option<usize> },
}

fn shorthand(c: char) -> Option<(&'static str, Needs)> {
    use Needs::*;
    Some(match c {
        '4' => ("IPV4", State),
        '6' => ("IPV6", State),
        'a' => ("ARCHITECTURE", Nothing),
        'b' => ("STORAGE POOL", Nothing),
        'c' => ("CREATED AT", Nothing),
        'd' => ("DESCRIPTION", Nothing),
        'D' => ("DISK USAGE", State),
        'e' => ("PROJECT", Nothing),
        'f' | 'F' => ("BASE IMAGE", Nothing),
        'l' => ("LAST USED AT", Nothing),
        'm' => ("MEMORY USAGE", State),
        'M' => ("MEMORY USAGE%", State),
        'n' => ("NAME", Nothing),
        'N' => ("PROCESSES", State),
        'p' => ("PID", State),
        'P' => ("PROFILES", Nothing),
        'S' => ("SNAPSHOTS", Snapshots),
        's' => ("STATE", Nothing),
        't' => ("TYPE", Nothing),
        'u' => ("CPU USAGE", State),
        _ => return None,
    })
}

/// The `-c` value (after `--fast` and `--all-projects` chose their defaults) as columns, as
/// `lxc` 5.0 parses it on a server that is not a cluster (so `L` is dropped from the default
/// and refused when asked for).
pub fn parse_columns(spec: &str, fast: bool, all_projects: bool) -> anyhow::Result<Vec<Column>> {
    let mut spec = spec.to_owned();
    let default = spec == DEFAULT_COLUMNS || spec == DEFAULT_COLUMNS_ALL_PROJECTS;
    if all_projects && spec == DEFAULT_COLUMNS {
        spec = DEFAULT_COLUMNS_ALL_PROJECTS.into();
    }
    if fast {
        if !default {
            bail!("Can't specify --fast with --columns");
        }
        spec = if all_projects { "ensacPt" } else { "nsacPt" }.into();
    }
    let mut columns = Vec::new();
    for entry in spec.split(',') {
        if entry.is_empty() {
            bail!("Empty column entry (redundant, leading or trailing command) in '{spec}'");
        }
        // Config keys always contain a period; anything else is a run of shorthand chars.
        // `L` (location) means something only in a cluster. (lxc looks for an `L` in the whole
        // spec, custom column names included; rxc only among the shorthand chars.)
        if !entry.contains('.') {
            if !default && entry.contains('L') {
                bail!("Can't specify column L when not clustered");
            }
            for c in entry.chars().filter(|&c| c != 'L') {
                let Some((header, needs)) = shorthand(c) else {
                    bail!("Unknown column shorthand char '{c}' in '{entry}'");
                };
                columns.push(Column {
                    header: header.into(),
                    data: Data::Short(c),
                    needs,
                });
            }
            continue;
        }
        let mut parts: Vec<&str> = entry.split(':').collect();
        let devices = match parts[0] {
            "config" | "devices" if parts.len() > 1 => parts.remove(0) == "devices",
            _ => false,
        };
        if parts.len() > 3 {
            bail!("Invalid config key column format (too many fields): '{entry}'");
        }
        let key = parts[0].to_owned();
        let mut header = key.clone();
        if let Some(name) = parts.get(1) {
            if name.is_empty() && parts.len() != 3 {
                bail!(
                    "Invalid name in '{entry}', empty string is only allowed when defining maxWidth"
                );
            }
            header = (*name).to_owned();
        }
        let max = match parts.get(2) {
            None => None,
            Some(w) => match w.parse::<i64>() {
                Err(_) => bail!("Invalid max width (must be an integer) '{w}' in '{entry}'"),
                Ok(w) if w < -1 => {
                    bail!("Invalid max width (must -1, 0 or a positive integer) '{w}' in '{entry}'")
                }
                Ok(0) => Some(header.len()),
                Ok(-1) => None,
                Ok(w) => Some(w as usize),
            },
        };
        let data = if devices {
            Data::Device { key, max }
        } else {
            Data::Config { key, max }
        };
        columns.push(Column {
            header,
            data,
            needs: Needs::Nothing,
        });
    }
    Ok(columns)
}

/// LXD's `IsActive`: anything but stopped (102) or in error (104).
fn active(i: &Instance) -> bool {
    !matches!(i.status_code, 102 | 104)
}

fn truncate(v: String, max: Option<usize>) -> String {
    match max {
        Some(m) if m > 0 && v.len() > m => v.chars().take(m).collect(),
        _ => v,
    }
}

/// `2006/01/02 15:04 UTC`, or nothing for an unset time (LXD's `TimeIsSet`).
pub fn date(rfc3339: &str) -> String {
    match time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) if t.unix_timestamp() > 0 => any_date(rfc3339),
        _ => String::new(),
    }
}

/// `2006/01/02 15:04 UTC`, set or not (`0001/01/01 00:00 UTC`).
pub fn any_date(rfc3339: &str) -> String {
    let Ok(t) =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
    else {
        return String::new();
    };
    t.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]/[month]/[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default()
}

/// LXD's `GetByteSizeStringIEC(n, 2)`.
pub fn iec(n: i64) -> String {
    iec_precision(n, 2)
}

/// LXD's `GetByteSizeStringIEC(n, precision)`.
pub fn iec_precision(n: i64, precision: usize) -> String {
    if n < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"] {
        value /= 1024.0;
        if value < 1024.0 {
            return format!("{value:.precision$}{unit}");
        }
    }
    format!("{value:.precision$}EB")
}

/// LXD's `GetByteSizeString(n, 2)`: decimal units (`kB`, `MB`...), as `lxc network info`
/// prints traffic.
pub fn si(n: i64) -> String {
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64;
    for unit in ["kB", "MB", "GB", "TB", "PB", "EB"] {
        value /= 1000.0;
        if value < 1000.0 {
            return format!("{value:.2}{unit}");
        }
    }
    format!("{value:.2}EB")
}

/// LXD's `ParseByteSizeString`: `512MiB`, `1GB`, `4096`.
fn parse_size(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match suffix.trim() {
        "" | "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "PB" => 1e15,
        "EB" => 1e18,
        "KiB" => 1024f64,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        "PiB" => 1024f64.powi(5),
        "EiB" => 1024f64.powi(6),
        _ => return None,
    };
    Some((num * mult) as i64)
}

/// The addresses of one family, as `ADDR (IFACE)` lines, link-local and loopback left out.
fn addresses(i: &Instance, family: &str) -> String {
    let Some(net) = i.state.as_ref().and_then(|s| s.network.as_ref()) else {
        return String::new();
    };
    if !active(i) {
        return String::new();
    }
    let mut list: Vec<String> = net
        .iter()
        .filter(|(_, n)| n.kind != "loopback")
        .flat_map(|(name, n)| {
            n.addresses
                .iter()
                .filter(|a| a.family == family && a.scope != "link" && a.scope != "local")
                .map(move |a| format!("{} ({})", a.address, printable(name)))
        })
        .collect();
    list.sort();
    list.reverse();
    list.join("\n")
}

fn cell(column: &Column, i: &Instance) -> String {
    let state = i.state.as_ref().filter(|_| active(i));
    match &column.data {
        Data::Config { key, max } => {
            let v = i.config.get(key).or_else(|| i.expanded_config.get(key));
            truncate(v.cloned().unwrap_or_default(), *max)
        }
        Data::Device { key, max } => {
            let Some((dev, k)) = key.split_once('.').filter(|(_, k)| !k.contains('.')) else {
                return String::new();
            };
            let v = i
                .devices
                .get(dev)
                .and_then(|d| d.get(k))
                .or_else(|| i.expanded_devices.get(dev).and_then(|d| d.get(k)));
            truncate(v.cloned().unwrap_or_default(), *max)
        }
        Data::Short(c) => match c {
            '4' => addresses(i, "inet"),
            '6' => addresses(i, "inet6"),
            'a' => i.architecture.clone(),
            'b' => i
                .expanded_devices
                .values()
                .find(|d| {
                    d.get("type").map(String::as_str) == Some("disk")
                        && d.get("path").map(String::as_str) == Some("/")
                })
                .and_then(|d| d.get("pool").cloned())
                .unwrap_or_default(),
            'c' => date(&i.created_at),
            'd' => i.description.clone(),
            'D' => {
                let root = i
                    .expanded_devices
                    .iter()
                    .find(|(_, d)| {
                        d.get("type").map(String::as_str) == Some("disk")
                            && d.get("path").map(String::as_str) == Some("/")
                            && d.get("source").is_none_or(String::is_empty)
                    })
                    .map(|(name, _)| name.as_str())
                    .unwrap_or_default();
                match i.state.as_ref().and_then(|s| s.disk.get(root)) {
                    Some(d) if d.usage > 0 => iec(d.usage),
                    _ => String::new(),
                }
            }
            'e' => i.project.clone(),
            'f' => i
                .config
                .get("volatile.base_image")
                .map(|v| v.chars().take(12).collect())
                .unwrap_or_default(),
            'F' => i
                .config
                .get("volatile.base_image")
                .cloned()
                .unwrap_or_default(),
            'l' => date(&i.last_used_at),
            'm' => match state {
                Some(s) if s.memory.usage > 0 => iec(s.memory.usage),
                _ => String::new(),
            },
            'M' => match (state, i.expanded_config.get("limits.memory")) {
                (Some(s), Some(limit)) if s.memory.usage > 0 && !limit.contains('%') => {
                    match parse_size(limit) {
                        Some(l) if l > 0 => {
                            format!("{:.1}%", s.memory.usage as f64 / l as f64 * 100.0)
                        }
                        _ => String::new(),
                    }
                }
                _ => String::new(),
            },
            'n' => i.name.clone(),
            'N' => state.map(|s| s.processes.to_string()).unwrap_or_default(),
            'p' => state.map(|s| s.pid.to_string()).unwrap_or_default(),
            'P' => i.profiles.join("\n"),
            'S' => i.snapshots.as_ref().map_or(0, Vec::len).to_string(),
            's' => i.status.to_uppercase(),
            't' => {
                let kind = match i.kind.as_str() {
                    "" => "CONTAINER".to_owned(),
                    k => k.to_uppercase(),
                };
                if i.ephemeral {
                    format!("{kind} (EPHEMERAL)")
                } else {
                    kind
                }
            }
            'u' => match state {
                Some(s) if s.cpu.usage > 0 => format!("{}s", s.cpu.usage / 1_000_000_000),
                _ => String::new(),
            },
            _ => String::new(),
        },
    }
}

/// Whether `a.b.c` abbreviates `alpha.beta.c` (each part a prefix of the key's part).
fn dot_prefix_match(short: &str, full: &str) -> bool {
    let (s, f): (Vec<&str>, Vec<&str>) = (short.split('.').collect(), full.split('.').collect());
    s.len() == f.len() && s.iter().zip(&f).all(|(s, f)| f.starts_with(s))
}

/// A filter's regular expression, anchored unless it anchors itself. `regex_lite` reads Go's
/// RE2 syntax with Go's ASCII `\d`, `\w` and `\s`; a Unicode class (`\pL`) does not compile, and
/// the filter then compares literally, as LXD does with any pattern Go cannot compile.
fn anchored(re: &str) -> Result<regex_lite::Regex, regex_lite::Error> {
    if re.contains('^') || re.contains('$') {
        regex_lite::Regex::new(re)
    } else {
        regex_lite::Regex::new(&format!("^{re}$"))
    }
}

/// `ADDRESS` or `NET/LEN` against an instance's addresses of one family.
fn match_net(i: &Instance, query: &str, family: &str) -> bool {
    let Some(net) = i.state.as_ref().and_then(|s| s.network.as_ref()) else {
        return false;
    };
    let subnet = query.split_once('/').and_then(|(a, l)| {
        let a: std::net::IpAddr = a.parse().ok()?;
        let l: u32 = l.parse().ok()?;
        Some((a, l))
    });
    let in_subnet = |addr: &str| {
        let (Some((net, len)), Ok(ip)) = (subnet, addr.parse::<std::net::IpAddr>()) else {
            return false;
        };
        match (net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    };
    net.values()
        .flat_map(|n| &n.addresses)
        .any(|a| a.family == family && (a.address == query || in_subnet(&a.address)))
}

/// `type=`, `status=`, `architecture=`, `location=`, `ipv4=`, `ipv6=` (values separated by
/// commas match any); `None` for a key that is no shorthand.
fn shorthand_filter(key: &str, value: &str, i: &Instance) -> Option<bool> {
    let one = |v: &str| -> bool {
        match key.to_lowercase().as_str() {
            "type" => i.kind.eq_ignore_ascii_case(v),
            "status" => i.status.eq_ignore_ascii_case(v),
            "architecture" => i.architecture.eq_ignore_ascii_case(v),
            "location" => i.location.eq_ignore_ascii_case(v),
            "ipv4" => match_net(i, v, "inet"),
            "ipv6" => match_net(i, v, "inet6"),
            _ => false,
        }
    };
    match key.to_lowercase().as_str() {
        "type" | "status" | "architecture" | "location" | "ipv4" | "ipv6" => {
            Some(value.split(',').any(one))
        }
        _ => None,
    }
}

/// Whether an instance passes every filter, as `lxc list` decides (its `shouldShow`).
pub fn should_show(filters: &[String], i: &Instance) -> bool {
    for filter in filters {
        if let Some((key, value)) = filter.split_once('=') {
            if shorthand_filter(key, value, i) == Some(true) {
                continue;
            }
            let mut found = false;
            for (config_key, config_value) in &i.expanded_config {
                if !dot_prefix_match(key, config_key) {
                    continue;
                }
                match anchored(value) {
                    Ok(re) if re.is_match(config_value) => {
                        found = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) if value == config_value => {
                        found = true;
                        break;
                    }
                    Err(_) => return false,
                }
            }
            if i.expanded_config.get(key).map_or("", String::as_str) == value {
                continue;
            }
            if !found {
                return false;
            }
        } else {
            if anchored(filter).is_ok_and(|re| re.is_match(&i.name)) {
                continue;
            }
            if !i.name.starts_with(filter.as_str()) {
                return false;
            }
        }
    }
    true
}

/// `sortorder.NaturalLess`: runs of digits compare as numbers.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let (da, db) = (&a[..na], &b[..nb]);
                let (ta, tb) = (
                    &da[da.iter().take_while(|&&c| c == b'0').count()..],
                    &db[db.iter().take_while(|&&c| c == b'0').count()..],
                );
                let ord = ta.len().cmp(&tb.len()).then(ta.cmp(tb)).then(na.cmp(&nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (&a[na..], &b[nb..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// `lxc`'s `ByName`: by the first differing cell, naturally, empty cells last.
pub fn row_cmp(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        return match (x.is_empty(), y.is_empty()) {
            (true, _) => Ordering::Greater,
            (_, true) => Ordering::Less,
            _ => natural_cmp(x, y),
        };
    }
    Ordering::Equal
}

/// An instance as `lxc list --format json|yaml` prints it: LXD's `InstanceFull`, where state,
/// snapshots and backups are `null` (`[]` for the lists in YAML) unless a column needed them,
/// and empty maps are left out.
fn full_view(i: &Instance, yaml: bool) -> anyhow::Result<Value> {
    fn drop_empty_expanded(obj: &mut serde_json::Map<String, Value>) {
        for key in ["expanded_config", "expanded_devices"] {
            if obj
                .get(key)
                .and_then(Value::as_object)
                .is_some_and(|m| m.is_empty())
            {
                obj.remove(key);
            }
        }
    }
    let Value::Object(mut fields) = serde_json::to_value(i)? else {
        bail!("an instance that is not an object");
    };
    // Go's YAML writes a missing list as `[]`, its JSON as `null`.
    let none = |list: bool| match (list, yaml) {
        (true, true) => Value::Array(Vec::new()),
        _ => Value::Null,
    };
    let mut v = Value::Object(Default::default());
    if let Some(obj) = v.as_object_mut() {
        let full: Vec<(String, Value)> = ["backups", "state", "snapshots"]
            .into_iter()
            .map(|k| {
                let value = fields.remove(k).unwrap_or_else(|| none(k != "state"));
                (k.to_owned(), value)
            })
            .collect();
        obj.extend(fields);
        obj.extend(full);
        drop_empty_expanded(obj);
        for snap in obj["snapshots"].as_array_mut().into_iter().flatten() {
            if let Some(snap) = snap.as_object_mut() {
                drop_empty_expanded(snap);
            }
        }
    }
    Ok(v)
}

pub async fn run(conf: &ConfigDir, args: ListArgs, project_given: bool) -> anyhow::Result<()> {
    if project_given && args.all_projects {
        bail!("Can't specify --project with --all-projects");
    }
    let mut filters = args.args.clone();
    let mut remote = conf.file.default_remote.clone();
    if let Some(first) = args.args.first().filter(|a| !a.contains('=')) {
        if first.contains(':') {
            let (r, name) = split_target(conf, first);
            remote = r;
            filters.remove(0);
            if !name.is_empty() {
                filters.push(name);
            }
        }
    }
    let columns = parse_columns(&args.columns, args.fast, args.all_projects)?;
    // State and snapshots come with `recursion=2` (LXD's `InstanceFull`), asked for only when
    // a column shows them (or an address filter reads them), as lxc does.
    let needs_data = columns.iter().any(|c| c.needs != Needs::Nothing)
        || filters.iter().any(|f| {
            f.split_once('=')
                .is_some_and(|(k, _)| matches!(k.to_lowercase().as_str(), "ipv4" | "ipv6"))
        });
    let conn = open(conf, &remote)?;
    let mut path = format!(
        "/1.0/instances?recursion={}",
        if needs_data { 2 } else { 1 }
    );
    if args.all_projects {
        path.push_str("&all-projects=true");
    }
    let mut instances: Vec<Instance> = conn.get_as(&path).await?;
    instances.retain(|i| should_show(&filters, i));
    let mut rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| columns.iter().map(|c| cell(c, i)).collect())
        .collect();
    rows.sort_by(|a, b| row_cmp(a, b));
    let headers: Vec<&str> = columns.iter().map(|c| c.header.as_str()).collect();
    let raw = match args.format {
        Format::Json | Format::Yaml => instances
            .iter()
            .map(|i| full_view(i, args.format == Format::Yaml))
            .collect::<anyhow::Result<Vec<Value>>>()?,
        _ => Vec::new(),
    };
    print_rows(args.format, &headers, &rows, &raw)
}

#[cfg(test)]
mod tests {

    #[test]
    fn interface_names_cannot_drive_the_terminal() {
        assert_eq!(printable("eth0"), "eth0");
        assert_eq!(printable("e\u{1b}[2Jx"), "e?[2Jx");
        assert_eq!(printable("a\nb\u{7}"), "a?b?");
    }

    use super::*;

    fn instance(name: &str, status: &str, config: &[(&str, &str)]) -> Instance {
        Instance {
            name: name.into(),
            status: status.into(),
            status_code: if status == "Running" { 103 } else { 102 },
            kind: "container".into(),
            expanded_config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn filters_select_as_lxc_does() {
        let web = instance(
            "web1",
            "Running",
            &[("user.role", "front"), ("security.privileged", "true")],
        );
        let db = instance("db01", "Stopped", &[("user.role", "back")]);
        let check = |filters: &[&str], want: &[&str]| {
            let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
            let got: Vec<&str> = [&web, &db]
                .into_iter()
                .filter(|i| should_show(&filters, i))
                .map(|i| i.name.as_str())
                .collect();
            assert_eq!(got, want, "{filters:?}");
        };
        check(&[], &["web1", "db01"]);
        check(&["web"], &["web1"]);
        check(&[".*01$"], &["db01"]);
        check(&["status=running"], &["web1"]);
        check(&["status=STOPPED,frozen"], &["db01"]);
        check(&["type=container", "status=running"], &["web1"]);
        check(&["type=virtual-machine"], &[]);
        check(&["user.role=front"], &["web1"]);
        check(&["u.role=b.*"], &["db01"]);
        check(&["s.privileged=true"], &["web1"]);
        check(&["user.missing="], &["web1", "db01"]);
        check(&["user.role=nothing"], &[]);
        // Go's RE2 classes; a pattern that does not compile compares literally.
        check(&[r"[a-z]+\d\d"], &["db01"]);
        check(&[r"user.role=\w+"], &["web1", "db01"]);
        check(&[r"user.role=\pL+"], &[]);
        check(&["user.role=(front"], &[]);
    }

    #[test]
    fn columns_parse_as_lxc_parses_them() {
        let headers = |spec: &str, fast: bool, all: bool| -> Vec<String> {
            parse_columns(spec, fast, all)
                .unwrap()
                .into_iter()
                .map(|c| c.header)
                .collect()
        };
        assert_eq!(
            headers(DEFAULT_COLUMNS, false, false),
            ["NAME", "STATE", "IPV4", "IPV6", "TYPE", "SNAPSHOTS"]
        );
        assert_eq!(headers(DEFAULT_COLUMNS, false, true)[0], "PROJECT");
        assert_eq!(
            headers(DEFAULT_COLUMNS, true, false),
            [
                "NAME",
                "STATE",
                "ARCHITECTURE",
                "CREATED AT",
                "PROFILES",
                "TYPE"
            ]
        );
        assert_eq!(
            headers("n,user.comment:LABEL,devices:root.pool", false, false),
            ["NAME", "LABEL", "root.pool"]
        );
        for bad in [
            "nL",
            "n,,s",
            "nz",
            "user.a:b:c:d",
            "user.a::",
            "user.a:x:-2",
        ] {
            assert!(parse_columns(bad, false, false).is_err(), "{bad}");
        }
        assert!(parse_columns("ns", true, false).is_err());
    }

    #[test]
    fn address_columns_as_lxc_shows_them() {
        let net: Value = serde_json::json!({
            "lo": {"type": "loopback", "addresses": [
                {"family": "inet", "address": "127.0.0.1", "scope": "local"},
                {"family": "inet6", "address": "::1", "scope": "local"}]},
            "eth0": {"type": "broadcast", "addresses": [
                {"family": "inet", "address": "10.0.0.5", "scope": "global"},
                {"family": "inet6", "address": "fd42::5", "scope": "global"},
                {"family": "inet6", "address": "fe80::1", "scope": "link"}]},
            "eth1": {"type": "broadcast", "addresses": [
                {"family": "inet", "address": "10.0.0.40", "scope": "global"},
                {"family": "inet", "address": "169.254.0.9", "scope": "link"}]},
        });
        let mut i = instance("c1", "Running", &[]);
        i.state = Some(rxd_api::instance::InstanceState {
            network: Some(crate::connect::decode(net).unwrap()),
            ..Default::default()
        });
        let column = |c: char| parse_columns(&c.to_string(), false, false).unwrap();
        let show = |i: &Instance, c: char| cell(&column(c)[0], i);
        // Reverse string order, as lxc sorts them: `10.0.0.5` after `10.0.0.40`.
        assert_eq!(show(&i, '4'), "10.0.0.5 (eth0)\n10.0.0.40 (eth1)");
        assert_eq!(show(&i, '6'), "fd42::5 (eth0)");
        // A stopped instance shows none, whatever its state says.
        i.status_code = 102;
        assert_eq!(show(&i, '4'), "");
    }

    #[test]
    fn rows_sort_naturally_with_empty_cells_last() {
        let mut rows: Vec<Vec<String>> = ["c10", "c2", "", "b"]
            .iter()
            .map(|s| vec![s.to_string()])
            .collect();
        rows.sort_by(|a, b| row_cmp(a, b));
        let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(names, ["b", "c2", "c10", ""]);
    }

    #[test]
    fn sizes_as_lxc_prints_them() {
        assert_eq!(iec(512), "512B");
        assert_eq!(iec(1536), "1.50KiB");
        assert_eq!(iec(5 * 1024 * 1024), "5.00MiB");
        assert_eq!(si(999), "999B");
        assert_eq!(si(1000), "1.00kB");
        assert_eq!(si(123_456_789), "123.46MB");
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("10%"), None);
    }
}
