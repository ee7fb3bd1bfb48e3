//! `rxc`: parse, resolve, run; errors are printed as `Error: ...` with exit code 1.
#![forbid(unsafe_code)]

#[macro_use]
mod output;
mod alias;
mod backup;
mod cli;
mod commands;
mod connect;
mod device;
mod edit;
mod file;
mod image;
mod instance;
mod list;
mod login;
mod monitor;
mod network;
mod objects;
mod profile;
mod project;
mod publish;
mod remote;
mod resources;
mod shell;
mod storage;

use clap::Parser;
use cli::{Cli, Command};
use rxd_client::remotes::ConfigDir;

fn main() -> std::process::ExitCode {
    let args = match expand_aliases() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `rxc ... | head` closing the pipe is not an error worth reporting.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return std::process::ExitCode::SUCCESS;
            }
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The command line with the user's (or a built-in) alias expanded, once: an alias's target
/// is not expanded again. A target that is a program (`/...`) replaces this process.
fn expand_aliases() -> anyhow::Result<Vec<std::ffi::OsString>> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if std::env::var_os("RXC_ALIASES").is_some_and(|v| v == "1") {
        return Ok(args);
    }
    let Some(words) = args
        .iter()
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
    else {
        return Ok(args);
    };
    let path = ConfigDir::default_path().join("config.yml");
    let aliases = match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_norway::from_str::<rxd_client::remotes::ConfigFile>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .aliases
        }
        Err(_) => Default::default(),
    };
    let Some(expanded) = alias::expand(&aliases, &words)? else {
        return Ok(args);
    };
    if expanded[0].starts_with('/') {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&expanded[0])
            .args(&expanded[1..])
            .env("RXC_ALIASES", "1")
            .exec();
        anyhow::bail!("Processing aliases failed: {}: {err}", expanded[0]);
    }
    Ok(expanded.into_iter().map(Into::into).collect())
}

/// `--project NAME` (or `--project=NAME`) taken out of `args`: `config set` takes values that
/// start with a dash (a PEM key's `-----BEGIN`), so clap leaves the flag among them when it
/// follows them, where `lxc` users put it.
fn take_project_flag(args: &mut Vec<String>) -> Option<String> {
    if let Some(i) = args.iter().position(|a| a.starts_with("--project=")) {
        return Some(args.remove(i)["--project=".len()..].to_owned());
    }
    let i = args.iter().position(|a| a == "--project")?;
    if i + 1 >= args.len() {
        return None;
    }
    let value = args.remove(i + 1);
    args.remove(i);
    Some(value)
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    if let Command::Config(cli::ConfigCmd::Set { args }) = &mut cli.command {
        if let Some(project) = take_project_flag(args) {
            cli.project = Some(project);
        }
    }
    // Generated from the definitions alone: no configuration needed.
    match &cli.command {
        Command::Completion { shell } => return shell::completion(*shell),
        Command::Manpages { dir } => return shell::manpages(dir),
        _ => {}
    }
    let mut conf = ConfigDir::open(&ConfigDir::default_path())?;
    let project_given = cli.project.is_some();
    // Under `rxc auth`, `--project` names a grant's project; elsewhere it replaces the remote's.
    if !matches!(cli.command, Command::Auth(_)) {
        conf.project_override = cli.project;
    }
    match cli.command {
        Command::Remote(cmd) => remote::run(&mut conf, cmd).await,
        Command::Info { target, resources } => match target {
            Some(t) if !t.ends_with(':') => instance::info(&conf, &t).await,
            remote if resources => resources::info(&conf, remote.as_deref()).await,
            remote => commands::info(&conf, remote.as_deref()).await,
        },
        Command::Launch(args) => instance::create(&conf, args, true).await,
        Command::Init(args) => instance::create(&conf, args, false).await,
        Command::Export {
            name,
            file,
            instance_only,
            optimized_storage,
            compression,
        } => {
            let how = backup::Export {
                instance_only,
                optimized_storage,
                compression,
            };
            backup::export(&conf, &name, file.as_deref(), how).await
        }
        Command::Import { args, storage } => {
            let (remote, rest) = match args.first() {
                Some(r) if r.ends_with(':') => (Some(r.as_str()), &args[1..]),
                _ => (None, &args[..]),
            };
            let Some(file) = rest.first() else {
                anyhow::bail!("Missing backup file");
            };
            backup::import(
                &conf,
                remote,
                file,
                rest.get(1).map(String::as_str),
                storage.as_deref(),
            )
            .await
        }
        Command::Publish {
            source,
            properties,
            alias,
            public,
            compression,
            force,
        } => {
            let publish = publish::Publish {
                properties,
                aliases: alias,
                public,
                compression,
                force,
            };
            publish::publish(&conf, &source, publish).await
        }
        Command::Start { names } => instance::each(&conf, &names, "start", false, -1).await,
        Command::Stop(a) => instance::each(&conf, &a.names, "stop", a.force, a.timeout).await,
        Command::Restart(a) => instance::each(&conf, &a.names, "restart", a.force, a.timeout).await,
        Command::Pause { names } => instance::each(&conf, &names, "freeze", false, -1).await,
        Command::Delete { names, force } => instance::delete(&conf, &names, force).await,
        Command::Rename {
            old,
            new,
            storage,
            target_project,
        } => {
            instance::rename(
                &conf,
                &old,
                new.as_deref(),
                storage.as_deref(),
                target_project.as_deref(),
            )
            .await
        }
        Command::Copy(args) => instance::copy(&conf, args).await,
        Command::Exec(args) => {
            let code = instance::exec(&conf, args).await?;
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(code)
        }
        Command::List(args) => list::run(&conf, args, project_given).await,
        Command::Config(cmd) => commands::config(&conf, cmd).await,
        Command::Image(cmd) => image::run(&conf, cmd).await,
        Command::Project(cmd) => project::run(&mut conf, cmd).await,
        Command::Profile(cmd) => profile::run(&mut conf, cmd).await,
        Command::Network(cmd) => network::run(&conf, cmd).await,
        Command::Storage(cmd) => storage::run(&conf, cmd).await,
        Command::Auth(cmd) => project::auth(&conf, cmd).await,
        Command::File(cmd) => file::run(&conf, cmd).await,
        Command::Snapshot { name, snapshot } => {
            instance::snapshot(&conf, &name, snapshot.as_deref()).await
        }
        Command::Restore { name, snapshot } => instance::restore(&conf, &name, &snapshot).await,
        Command::Console { name, show_log } => file::console(&conf, &name, show_log).await,
        Command::Completion { .. } | Command::Manpages { .. } => Ok(()),
        Command::Alias(cmd) => alias::run(&mut conf, cmd),
        Command::Monitor(args) => monitor::run(&conf, args).await,
        Command::Version { remote } => commands::version(&conf, remote.as_deref()).await,
        Command::Operation(cli::OperationCmd::List { remote, format }) => {
            commands::operation_list(&conf, remote.as_deref(), format.format).await
        }
        Command::Warning(cli::WarningCmd::List { remote, format }) => {
            commands::warning_list(&conf, remote.as_deref(), format.format).await
        }
        Command::Query {
            target,
            request,
            data,
            raw,
        } => commands::query(&conf, &target, &request, data.as_deref(), raw).await,
    }
}

#[cfg(test)]
mod tests {
    use super::take_project_flag;

    #[test]
    fn a_trailing_project_flag_is_taken_out_of_config_set() {
        let mut args: Vec<String> = ["c1", "k", "v", "--project", "p1"]
            .map(String::from)
            .to_vec();
        assert_eq!(take_project_flag(&mut args).as_deref(), Some("p1"));
        assert_eq!(args, ["c1", "k", "v"]);
        let mut args: Vec<String> = ["--project=p2", "k=v"].map(String::from).to_vec();
        assert_eq!(take_project_flag(&mut args).as_deref(), Some("p2"));
        assert_eq!(args, ["k=v"]);
        // A PEM value stays a value.
        let mut args: Vec<String> = ["candid.agent.private_key", "-----BEGIN KEY-----"]
            .map(String::from)
            .to_vec();
        assert_eq!(take_project_flag(&mut args), None);
        assert_eq!(args.len(), 2);
    }
}
