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
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(objects)?)?,
        Format::Yaml => write!(out, "{}", serde_norway::to_string(objects)?)?,
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            for obj in objects {
                w.write_record(columns.iter().map(|c| (c.value)(obj)))?;
            }
            w.flush()?;
        }
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table
                .load_preset(comfy_table::presets::ASCII_FULL)
                .set_header(columns.iter().map(|c| c.header));
            for obj in objects {
                table.add_row(columns.iter().map(|c| (c.value)(obj)));
            }
            writeln!(out, "{table}")?;
        }
    }
    Ok(())
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
