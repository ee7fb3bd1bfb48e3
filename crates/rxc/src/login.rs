//! Candid logins from the terminal: the prompts of a form login (secrets without echo), the
//! browser hand-off, and the login state of a Candid remote (its jar, agent file and domain).

use anyhow::Context;
use rxd_client::candid::agent::Agent;
use rxd_client::candid::{FormField, Interactor, Login};
use rxd_client::remotes::{ConfigDir, Remote};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Asks on the terminal, and opens web pages with `xdg-open`.
pub struct Terminal;

impl Interactor for Terminal {
    fn can_prompt(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn prompt(&self, field: &FormField) -> std::io::Result<String> {
        let answer = if field.secret {
            dialoguer::Password::new()
                .with_prompt(&field.label)
                .allow_empty_password(true)
                .interact()
        } else {
            dialoguer::Input::<String>::new()
                .with_prompt(&field.label)
                .allow_empty(true)
                .interact_text()
        };
        answer.map_err(|e| std::io::Error::other(e.to_string()))
    }

    fn visit(&self, url: &str) {
        eprintln!(
            "Opening an authorization web page in your browser. If it does not open, please open this URL: {url}"
        );
        if let Some(opener) = on_path("xdg-open") {
            // Whether a browser opened is only known to the user; the URL is printed above.
            if let Ok(mut child) = Command::new(opener)
                .arg(url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                std::thread::spawn(move || child.wait());
            }
        }
    }
}

fn on_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Reads an agent file given on the command line, remembering its absolute path.
pub fn load_agent(path: &Path) -> anyhow::Result<Agent> {
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("agent file {}", path.display()))?;
    Ok(Agent::load(&abs)?)
}

/// The login state of Candid remote `name` on `host`: its jar, and how to log in again.
pub fn session(conf: &ConfigDir, name: &str, remote: &Remote, host: &str) -> anyhow::Result<Login> {
    let mut login = Login::new(host, Arc::new(Terminal))
        .with_domain(&remote.domain)
        .with_jar_file(&conf.jar_path(name))?;
    if !remote.candid_agent.is_empty() {
        // A missing agent file only matters once a new login is needed: say so, and go on.
        match Agent::load(Path::new(&remote.candid_agent)) {
            Ok(agent) => login = login.with_agent(agent),
            Err(e) => eprintln!("Warning: remote {name}: {e}; logging in again will need a person"),
        }
    }
    Ok(login)
}
