//! `rxc completion SHELL` and `rxc manpages DIR`: shell completions and man pages, generated from
//! the clap definitions in `cli.rs`, so they never disagree with the commands they describe.

use crate::cli::Cli;
use anyhow::Context;
use clap::CommandFactory;
use std::path::Path;

/// The completion script for `shell`, through the printer.
pub fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rxc", &mut script);
    out!("{}", String::from_utf8_lossy(&script))?;
    Ok(())
}

/// `rxc.1` and one page per subcommand (`rxc-list.1`, `rxc-config-edit.1`...) in `dir`.
pub fn manpages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages in {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rxc") && n.ends_with(".1"))
        .collect();
    pages.sort();
    outln!("Wrote {} man pages in {}", pages.len(), dir.display())?;
    Ok(())
}
