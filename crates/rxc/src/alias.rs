//! Command aliases: `rxc alias add|remove|list|rename`, kept in `config.yml` under `aliases:` as
//! `lxc` keeps them, and their expansion before the command line is parsed, with `lxc` 5.0's
//! rules: the alias's words replace the words that name it; `@ARGS@` stands for the arguments
//! that follow (added at the end when absent), `@ARG1@`, `@ARG2@`... for one each; a target
//! starting with `/` is a program run instead of `rxc`. Leading flags stay in front.

use crate::cli::{Format, UserAliasCmd};
use crate::output::print_rows;
use anyhow::bail;
use rxd_client::remotes::ConfigDir;
use std::collections::BTreeMap;

/// Aliases every `rxc` has; the user's own are looked at first.
const BUILT_IN: [(&str, &str); 1] = [("shell", "exec @ARGS@ -- su -l")];

/// The alias whose words begin `args` (after `args[0]`, the program). Of several, the one with
/// the most words wins (lxc takes whichever its map yields first).
fn find<'a>(
    aliases: impl Iterator<Item = (&'a str, &'a str)>,
    args: &[String],
) -> Option<(Vec<&'a str>, Vec<&'a str>)> {
    aliases
        .map(|(k, v)| (k.split(' ').collect::<Vec<_>>(), v))
        .filter(|(key, _)| {
            key.iter()
                .enumerate()
                .all(|(i, word)| args.get(i + 1).is_some_and(|a| a == word))
        })
        .max_by_key(|(key, _)| key.len())
        .map(|(key, v)| (key, v.split(' ').collect()))
}

/// `@ARGn@` references in one word of an alias's target.
fn numbered(word: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut rest = word;
    while let Some(start) = rest.find("@ARG") {
        let after = &rest[start + 4..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && after[digits.len()..].starts_with('@') {
            if let Ok(n) = digits.parse() {
                found.push((format!("@ARG{digits}@"), n));
            }
            rest = &after[digits.len() + 1..];
        } else {
            rest = after;
        }
    }
    found
}

/// The command line with an alias expanded, or `None` when no alias names it.
pub fn expand(
    aliases: &BTreeMap<String, String>,
    args: &[String],
) -> anyhow::Result<Option<Vec<String>>> {
    let Some(program) = args.first() else {
        return Ok(None);
    };
    let flags: Vec<String> = args[1..]
        .iter()
        .take_while(|a| a.starts_with('-'))
        .cloned()
        .collect();
    let mut orig = vec![program.clone()];
    orig.extend(args[flags.len() + 1..].iter().cloned());
    let found = find(aliases.iter().map(|(k, v)| (k.as_str(), v.as_str())), &orig)
        .or_else(|| find(BUILT_IN.into_iter(), &orig));
    let Some((key, value)) = found else {
        return Ok(None);
    };
    let mut out = Vec::new();
    if !value.first().is_some_and(|v| v.starts_with('/')) {
        out.push(program.clone());
    }
    out.extend(flags);
    let mut at_args: Vec<String> = orig.get(key.len() + 1..).unwrap_or_default().to_vec();
    let mut by_number = BTreeMap::new();
    for word in &value {
        for (_, n) in numbered(word) {
            if n == 0 || n > at_args.len() {
                bail!(
                    "Found alias {:?} references an argument outside the given number",
                    key.join(" ")
                );
            }
            by_number.insert(n, at_args[n - 1].clone());
        }
    }
    // What @ARGn@ took is no longer part of @ARGS@.
    at_args = at_args
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !by_number.contains_key(&(i + 1)))
        .map(|(_, a)| a)
        .collect();
    let mut used_args = false;
    for word in &value {
        if *word == "@ARGS@" {
            out.extend(at_args.iter().cloned());
            used_args = true;
            continue;
        }
        let mut word = (*word).to_owned();
        for (pattern, n) in numbered(&word) {
            word = word.replace(&pattern, &by_number[&n]);
        }
        out.push(word);
    }
    if !used_args {
        out.extend(at_args);
    }
    Ok(Some(out))
}

pub fn run(conf: &mut ConfigDir, cmd: UserAliasCmd) -> anyhow::Result<()> {
    match cmd {
        UserAliasCmd::Add { alias, target } => {
            if conf.file.aliases.contains_key(&alias) {
                bail!("Alias {alias} already exists");
            }
            conf.file.aliases.insert(alias, target);
            conf.save()?;
        }
        UserAliasCmd::Remove { alias } => {
            if conf.file.aliases.remove(&alias).is_none() {
                bail!("Alias {alias} doesn't exist");
            }
            conf.save()?;
        }
        UserAliasCmd::Rename { old, new } => {
            let Some(target) = conf.file.aliases.get(&old).cloned() else {
                bail!("Alias {old} doesn't exist");
            };
            if conf.file.aliases.contains_key(&new) {
                bail!("Alias {new} already exists");
            }
            conf.file.aliases.remove(&old);
            conf.file.aliases.insert(new, target);
            conf.save()?;
        }
        UserAliasCmd::List { format } => list(conf, format.format)?,
    }
    Ok(())
}

fn list(conf: &ConfigDir, format: Format) -> anyhow::Result<()> {
    let mut rows: Vec<Vec<String>> = conf
        .file
        .aliases
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    rows.sort_by(|a, b| crate::list::row_cmp(a, b));
    print_rows(format, &["ALIAS", "TARGET"], &rows, &conf.file.aliases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(aliases: &[(&str, &str)], args: &str, want: Option<&str>) {
        let aliases: BTreeMap<String, String> = aliases
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.split(' ').map(str::to_owned).collect();
        let got = expand(&aliases, &args).unwrap().map(|a| a.join(" "));
        assert_eq!(got.as_deref(), want, "{args:?}");
    }

    #[test]
    fn aliases_expand_as_lxc_expands_them() {
        let a = [
            ("ls", "list -c ns"),
            ("snaps", "query /1.0/instances/@ARG1@/snapshots"),
            ("cp2", "file pull @ARG2@ @ARG1@"),
            ("ex", "exec @ARGS@ --"),
            ("image ls", "image list -f csv"),
            ("host", "/bin/echo @ARGS@ done"),
        ];
        check(&a, "rxc ls", Some("rxc list -c ns"));
        check(&a, "rxc ls web", Some("rxc list -c ns web"));
        check(
            &a,
            "rxc --project=p ls web",
            Some("rxc --project=p list -c ns web"),
        );
        check(
            &a,
            "rxc snaps c1",
            Some("rxc query /1.0/instances/c1/snapshots"),
        );
        check(
            &a,
            "rxc snaps c1 extra",
            Some("rxc query /1.0/instances/c1/snapshots extra"),
        );
        check(
            &a,
            "rxc cp2 here c1/etc/x",
            Some("rxc file pull c1/etc/x here"),
        );
        check(&a, "rxc ex c1 ls /", Some("rxc exec c1 ls / --"));
        check(&a, "rxc image ls", Some("rxc image list -f csv"));
        check(&a, "rxc image list", None);
        check(&a, "rxc host a b", Some("/bin/echo a b done"));
        check(&a, "rxc shell c1", Some("rxc exec c1 -- su -l"));
        check(&a, "rxc list", None);
        check(
            &[("shell", "exec @ARGS@ -- bash")],
            "rxc shell c1",
            Some("rxc exec c1 -- bash"),
        );
        let aliases = BTreeMap::from([("snaps".to_owned(), "query @ARG2@".to_owned())]);
        let args: Vec<String> = ["rxc", "snaps", "c1"].map(String::from).to_vec();
        assert!(expand(&aliases, &args).is_err());
    }
}
