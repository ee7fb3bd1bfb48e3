//! The one printer: every line a command prints goes through here ([`outln!`], [`out!`], and
//! lists as a table, CSV, JSON or YAML). JSON and YAML print the API objects themselves; table
//! and CSV print the chosen columns. A write to a closed pipe (`rxc list | head -1`) is an error
//! `main` ends quietly on, never a panic.

use crate::cli::Format;
use serde_json::Value;
use std::io::Write;

/// `println!` through the printer: returns the write's error instead of panicking on it.
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// `print!` through the printer (flushed, for prompts and text that ends its own lines).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::text(format_args!($($arg)*))
    };
}

pub fn line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")
}

pub fn text(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()
}

/// Whether standard output is a terminal: colours are for people, never for pipes and files.
pub fn stdout_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
}

/// A progress bar for a transfer of `size` bytes, as `lxc` shows one (`Pushing X: 40MB/100MB
/// (12MB/s)`). It draws on standard error, and only on a terminal: output piped or
/// redirected stays clean.
pub fn transfer_bar(label: &str, size: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(size);
    let template = format!(
        "{}: {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}) {{wide_bar}}",
        label.replace('{', "{{").replace('}', "}}")
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Text another party chose (an interface name a container picked, a server's progress
/// message), its control characters (a terminal's escape sequences among them) shown as `?`
/// (lxc prints them as they are).
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Progress for a download, as `transfer_bar` draws it, shown once the reply says it is at
/// least 4 MiB: the callback `Client::download` takes, and the bar's slot to clear when done.
pub type DownloadBar = std::sync::Arc<std::sync::OnceLock<indicatif::ProgressBar>>;

pub fn download_bar(label: String) -> (rxd_client::Received, DownloadBar) {
    let slot: DownloadBar = Default::default();
    let shown = slot.clone();
    let report = move |received: u64, length: Option<u64>| {
        let Some(length) = length.filter(|&l| l >= 4 << 20) else {
            return;
        };
        shown
            .get_or_init(|| transfer_bar(&label, length))
            .set_position(received);
    };
    (std::sync::Arc::new(report), slot)
}

/// Clear a download's bar, if it was shown.
pub fn download_done(slot: &DownloadBar) {
    if let Some(bar) = slot.get() {
        bar.finish_and_clear();
    }
}

/// A table or CSV column over objects of type `T` (an `rxd_api` type, or a `Value`).
pub struct Column<'a, T = Value> {
    pub header: &'a str,
    pub value: Box<dyn Fn(&T) -> String + 'a>,
}

pub fn column<'a, T>(header: &'a str, value: impl Fn(&T) -> String + 'a) -> Column<'a, T> {
    Column {
        header,
        value: Box::new(value),
    }
}

pub fn print_list<T: serde::Serialize>(
    format: Format,
    objects: &[T],
    columns: &[Column<'_, T>],
) -> anyhow::Result<()> {
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|obj| columns.iter().map(|c| (c.value)(obj)).collect())
        .collect();
    print_rows(format, &headers, &rows, objects)
}

/// Print `rows` under `headers` as `lxc` 5.0 renders a list (its `RenderTable`): a bordered
/// table, a compact one, or CSV without a header; JSON and YAML print `raw`, the API objects.
pub fn print_rows(
    format: Format,
    headers: &[&str],
    rows: &[Vec<String>],
    raw: &(impl serde::Serialize + ?Sized),
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(raw)?)?,
        Format::Yaml => write!(out, "{}", serde_norway::to_string(raw)?)?,
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            for row in rows {
                w.write_record(row)?;
            }
            w.flush()?;
        }
        Format::Table => out.write_all(table(headers, rows, false).as_bytes())?,
        Format::Compact => out.write_all(table(headers, rows, true).as_bytes())?,
    }
    Ok(())
}

/// A header as `lxc`'s table writer shows it: `_` (and a `.` between letters) become spaces,
/// then upper case.
fn title(header: &str) -> String {
    let chars: Vec<char> = header.chars().collect();
    let num_or_space = |c: char| c.is_ascii_digit() || c == ' ';
    let s: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '_' => ' ',
            '.' if (i != 0 && !num_or_space(chars[i - 1]))
                || (i + 1 != chars.len() && !num_or_space(chars[i + 1])) =>
            {
                ' '
            }
            c => c,
        })
        .collect();
    match s.trim() {
        "" if !header.is_empty() => " ".into(),
        t => t.to_uppercase(),
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// The table `lxc` 5.0 prints (olekukonko/tablewriter, left-aligned, centred headers, a line
/// under every row), or with `compact` the same without borders and lines. A cell with
/// newlines spans several lines.
pub fn table(headers: &[&str], rows: &[Vec<String>], compact: bool) -> String {
    let headers: Vec<String> = headers.iter().map(|h| title(h)).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            let w = cell.split('\n').map(width).max().unwrap_or(0);
            widths[i] = widths[i].max(w);
        }
    }
    let rule: String = widths.iter().fold("+".to_owned(), |mut s, w| {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
        s
    });
    let (edge, sep) = if compact { (" ", "") } else { ("|", "|") };
    let line = |cells: &[String]| {
        let mut s = edge.to_owned();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str(sep);
            }
            s.push(' ');
            s.push_str(cell);
            s.push(' ');
        }
        s.push_str(edge);
        s.push('\n');
        s
    };
    let mut out = String::new();
    if !compact {
        out += &rule;
        out.push('\n');
    }
    let centred: Vec<String> = headers
        .iter()
        .zip(&widths)
        .map(|(h, &w)| {
            let gap = w - width(h);
            format!("{}{h}{}", " ".repeat(gap / 2), " ".repeat(gap - gap / 2))
        })
        .collect();
    out += &line(&centred);
    if !compact {
        out += &rule;
        out.push('\n');
    }
    for row in rows {
        let lines: Vec<Vec<&str>> = row.iter().map(|c| c.split('\n').collect()).collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            let cells: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    let text = lines.get(i).and_then(|l| l.get(k)).copied().unwrap_or("");
                    format!("{text}{}", " ".repeat(w - width(text)))
                })
                .collect();
            out += &line(&cells);
        }
        if !compact {
            out += &rule;
            out.push('\n');
        }
    }
    out
}

pub fn str_of(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn yes_no(b: bool) -> String {
    if b { "YES" } else { "NO" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[&[&str]]) -> Vec<Vec<String>> {
        r.iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    #[test]
    fn tables_as_lxc_renders_them() {
        // Taken from Debian's `lxc remote list` (5.0.2), trimmed to two columns.
        let r = rows(&[&["images", "simplestreams"], &["local (current)", "lxd"]]);
        assert_eq!(
            table(&["NAME", "PROTOCOL"], &r, false),
            "+-----------------+---------------+\n\
             |      NAME       |   PROTOCOL    |\n\
             +-----------------+---------------+\n\
             | images          | simplestreams |\n\
             +-----------------+---------------+\n\
             | local (current) | lxd           |\n\
             +-----------------+---------------+\n"
        );
        assert_eq!(
            table(&["NAME", "PROTOCOL"], &r, true),
            "       NAME          PROTOCOL     \n\
             \x20 images           simplestreams  \n\
             \x20 local (current)  lxd            \n"
        );
        assert_eq!(
            table(&["ALIAS", "TARGET"], &[], false),
            "+-------+--------+\n| ALIAS | TARGET |\n+-------+--------+\n"
        );
        let r = rows(&[&["a", "x\nyy"]]);
        assert_eq!(
            table(&["N", "P"], &r, false),
            "+---+----+\n| N | P  |\n+---+----+\n| a | x  |\n|   | yy |\n+---+----+\n"
        );
    }

    #[test]
    fn headers_as_lxc_titles_them() {
        for (h, want) in [
            ("NAME", "NAME"),
            ("user.comment", "USER COMMENT"),
            ("limits.cpu_x", "LIMITS CPU X"),
            ("v0.1", "V0.1"),
            ("MEMORY USAGE%", "MEMORY USAGE%"),
        ] {
            assert_eq!(title(h), want, "{h}");
        }
    }
}
