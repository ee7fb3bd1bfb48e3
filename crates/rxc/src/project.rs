//! `rxc project ...` (LXD's projects) and `rxc auth ...` (rxd's role grants).
//!
//! Requests about one project are scoped to that project itself (`?project=NAME`), not to the
//! current one: someone granted a role on `p1` only must be able to show or switch to `p1`, and
//! a current project that was deleted meanwhile must not keep anyone from switching away.

use crate::cli::{AuthCmd, IdentityType, ProjectCmd, RoleArg, ScopeArgs};
use crate::connect::{open, remote_arg, remote_name, split_target, Conn};
use crate::image::wait;
use crate::output::{column, print_list, str_of};
use anyhow::{anyhow, bail};
use clap::ValueEnum;
use rxd_api::ResponseType;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use serde_json::{json, Map, Value};

pub async fn run(conf: &mut ConfigDir, cmd: ProjectCmd) -> anyhow::Result<()> {
    match cmd {
        ProjectCmd::Create {
            name,
            config,
            description,
        } => {
            let (remote, name) = split_target(conf, &name);
            let mut map = Map::new();
            for kv in &config {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("bad config {kv:?}: expected KEY=VALUE"))?;
                map.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let body = json!({"name": name, "description": description, "config": map});
            open(conf, &remote)?
                .call(Method::POST, "/1.0/projects", Some(&body))
                .await?;
            println!("Project {name} created");
            Ok(())
        }
        ProjectCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let list = conn
                .call(Method::GET, "/1.0/projects?recursion=1", None)
                .await?;
            let items = list.as_array().cloned().unwrap_or_default();
            let current = conn.project.clone();
            let columns = [
                column("NAME", move |v| {
                    let name = str_of(v, "name");
                    if name == current {
                        format!("{name} (current)")
                    } else {
                        name
                    }
                }),
                column("DESCRIPTION", |v| str_of(v, "description")),
                column("USED BY", |v| {
                    v["used_by"].as_array().map_or(0, Vec::len).to_string()
                }),
            ];
            print_list(format.format, &items, &columns)
        }
        ProjectCmd::Show { name } => {
            let (conn, name) = target(conf, &name)?;
            let (v, _) = fetch(&conn, &name).await?;
            print!("{}", serde_norway::to_string(&v)?);
            Ok(())
        }
        ProjectCmd::Get { name, key } => {
            let (conn, name) = target(conf, &name)?;
            let (v, _) = fetch(&conn, &name).await?;
            println!("{}", str_of(&v["config"], &key));
            Ok(())
        }
        ProjectCmd::Set { name, args } => {
            let (key, value) = match args.as_slice() {
                [kv] => kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("usage: rxc project set [REMOTE:]NAME KEY VALUE"))?,
                [k, v] => (k.as_str(), v.as_str()),
                _ => bail!("usage: rxc project set [REMOTE:]NAME KEY VALUE"),
            };
            set(conf, &name, key, Some(value)).await
        }
        ProjectCmd::Unset { name, key } => set(conf, &name, &key, None).await,
        ProjectCmd::Rename { old, new } => {
            let (remote, old) = split_target(conf, &old);
            let new = match new.split_once(':') {
                Some((r, n)) if r == remote => n.to_owned(),
                Some(_) => bail!("a project cannot move between servers"),
                None => new,
            };
            let conn = open(conf, &remote)?;
            let reply = conn
                .call(
                    Method::POST,
                    &project_path(&old),
                    Some(&json!({"name": new})),
                )
                .await?;
            wait(&conn, &reply).await?;
            // The remote's current project keeps pointing at the same project.
            if conn.remote.project == old {
                conf.set_project(&remote, &new)?;
            }
            println!("Project {old} renamed to {new}");
            Ok(())
        }
        ProjectCmd::Delete { name } => {
            let (conn, name) = target(conf, &name)?;
            conn.call(Method::DELETE, &project_path(&name), None)
                .await?;
            // As LXD does: deleting the current project switches back to `default`.
            if conn.remote.project == name {
                conf.set_project(&conn.name, "default")?;
            }
            println!("Project {name} deleted");
            Ok(())
        }
        ProjectCmd::Switch { name } => {
            let (conn, name) = target(conf, &name)?;
            // Only a project the server shows us (a hidden one is "not found", like a missing one).
            fetch(&conn, &name).await?;
            conf.set_project(&conn.name, &name)?;
            Ok(())
        }
    }
}

/// `[REMOTE:]NAME` to a connection and the project's name.
fn target(conf: &ConfigDir, spec: &str) -> anyhow::Result<(Conn, String)> {
    let (remote, name) = split_target(conf, spec);
    if name.is_empty() {
        bail!("{spec:?}: expected [REMOTE:]NAME");
    }
    Ok((open(conf, &remote)?, name))
}

/// `/1.0/projects/NAME?project=NAME`: about project NAME, in project NAME (see the module doc).
fn project_path(name: &str) -> String {
    let name = escape(name);
    format!("/1.0/projects/{name}?project={name}")
}

/// Percent-encode all but RFC 3986's unreserved characters, for a path segment or a query value.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET` a project with its ETag.
async fn fetch(conn: &Conn, name: &str) -> anyhow::Result<(Value, Option<String>)> {
    let reply = conn
        .client
        .request(Method::GET, &project_path(name), None)
        .await
        .map_err(|e| conn.explain(e))?;
    let etag = reply.header("etag").map(str::to_owned);
    let v = reply.metadata().map_err(|e| anyhow!(e))?;
    Ok((v, etag))
}

/// Set (or with `None`, unset) one config key: read the project, change the key, write it back
/// guarded by its ETag, as `lxc project set` does.
async fn set(conf: &ConfigDir, spec: &str, key: &str, value: Option<&str>) -> anyhow::Result<()> {
    let (conn, name) = target(conf, spec)?;
    let (v, etag) = fetch(&conn, &name).await?;
    let mut config = v["config"].as_object().cloned().unwrap_or_default();
    match value {
        Some(value) => config.insert(key.to_owned(), Value::String(value.to_owned())),
        None => {
            if config.remove(key).is_none() {
                bail!("Project {name} has no config key {key:?}");
            }
            None
        }
    };
    let body = json!({"description": v["description"], "config": config});
    let headers: Vec<(&str, &str)> = etag.iter().map(|e| ("if-match", e.as_str())).collect();
    let reply = conn
        .client
        .send(
            Method::PUT,
            &project_path(&name),
            &headers,
            serde_json::to_vec(&body)?.into(),
        )
        .await
        .map_err(|e| conn.explain(e))?;
    let metadata = reply.metadata().map_err(|e| anyhow!(e))?;
    if reply.envelope()?.kind == ResponseType::Async {
        wait(&conn, &metadata).await?;
    }
    Ok(())
}

pub async fn auth(conf: &ConfigDir, cmd: AuthCmd) -> anyhow::Result<()> {
    match cmd {
        AuthCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let grants = conn
                .call(Method::GET, "/1.0/auth/grants?recursion=1", None)
                .await?;
            let items = grants.as_array().cloned().unwrap_or_default();
            let columns = [
                column("ID", |v| str_of(v, "id")),
                column("IDENTITY TYPE", |v| str_of(v, "identity_type")),
                column("IDENTITY", |v| {
                    let id = str_of(v, "identity");
                    if v["identity_type"] == "certificate"
                        && format.format != crate::cli::Format::Csv
                    {
                        id.chars().take(12).collect()
                    } else {
                        id
                    }
                }),
                column("ROLE", |v| str_of(v, "role")),
                column("SCOPE", |v| str_of(v, "scope")),
                column("PROJECT", |v| str_of(v, "project")),
            ];
            print_list(format.format, &items, &columns)
        }
        AuthCmd::Grant {
            args,
            scope,
            identity_type,
        } => {
            let (remote, rest) = remote_arg(conf, &args);
            let [identity, role] = rest.as_slice() else {
                bail!("usage: rxc auth grant [REMOTE:] IDENTITY ROLE (--project NAME | --all-projects | --server)")
            };
            let role = role_of(role)?;
            let (scope, project) = scope_of(&scope)?.ok_or_else(|| {
                anyhow!("say where the role applies: --project NAME, --all-projects or --server")
            })?;
            let conn = open(conf, &remote)?;
            let identity = match identity_type {
                IdentityType::Certificate => certificate(&conn, identity).await?,
                _ => identity.clone(),
            };
            let body = json!({
                "identity_type": identity_type.wire(), "identity": identity, "role": role,
                "scope": scope, "project": project,
            });
            let grant = conn
                .call(Method::POST, "/1.0/auth/grants", Some(&body))
                .await?;
            let id = match &grant["id"] {
                Value::Null => String::new(),
                id => format!(" (grant {id})"),
            };
            println!(
                "Granted {role} on {} to {} {identity}{id}",
                scope_text(scope, &project),
                identity_type.wire()
            );
            Ok(())
        }
        AuthCmd::Revoke {
            args,
            scope,
            identity_type,
        } => {
            let (remote, rest) = remote_arg(conf, &args);
            let conn = open(conf, &remote)?;
            let id = match (rest.as_slice(), scope_of(&scope)?) {
                ([id], None) => id
                    .parse::<u64>()
                    .map_err(|_| anyhow!("{id:?} is not a grant id (see rxc auth list)"))?,
                ([identity, role], Some((scope, project))) => {
                    let role = role_of(role)?;
                    matching_grant(&conn, identity_type, identity, role, scope, &project).await?
                }
                _ => bail!(
                    "usage: rxc auth revoke [REMOTE:] ID, or rxc auth revoke [REMOTE:] IDENTITY ROLE \
                     (--project NAME | --all-projects | --server)"
                ),
            };
            conn.call(Method::DELETE, &format!("/1.0/auth/grants/{id}"), None)
                .await?;
            println!("Revoked grant {id}");
            Ok(())
        }
    }
}

fn role_of(role: &str) -> anyhow::Result<&'static str> {
    RoleArg::from_str(role, true)
        .map(RoleArg::wire)
        .map_err(|_| anyhow!("unknown role {role:?}: auditor, user, operator or admin"))
}

/// The wire scope and project of `--project`, `--all-projects` or `--server` (clap lets at
/// most one through), or `None` if none was given.
fn scope_of(args: &ScopeArgs) -> anyhow::Result<Option<(&'static str, String)>> {
    Ok(match (&args.project, args.all_projects, args.server) {
        (Some(p), _, _) if p.is_empty() => bail!("--project needs a project name"),
        (Some(p), _, _) => Some(("project", p.clone())),
        (None, true, _) => Some(("all-projects", String::new())),
        (None, _, true) => Some(("server", String::new())),
        (None, false, false) => None,
    })
}

fn scope_text(scope: &str, project: &str) -> String {
    match scope {
        "project" => format!("project {project}"),
        "all-projects" => "all projects".into(),
        _ => "the server".into(),
    }
}

/// The full fingerprint of the trusted certificate `prefix` names (the server refuses an
/// ambiguous prefix).
async fn certificate(conn: &Conn, prefix: &str) -> anyhow::Result<String> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{prefix:?} is not a certificate fingerprint (hex digits; see rxc config trust list)"
        );
    }
    let cert = conn
        .call(Method::GET, &format!("/1.0/certificates/{prefix}"), None)
        .await
        .map_err(|e| anyhow!("certificate {prefix}: {e}"))?;
    match cert["fingerprint"].as_str() {
        Some(fp) if fp.len() == 64 => Ok(fp.to_owned()),
        _ => bail!("the server returned no fingerprint for certificate {prefix}"),
    }
}

/// The id of the one grant of `role` on the scope to the identity `identity` names (for a
/// certificate, its fingerprint or a prefix of it).
async fn matching_grant(
    conn: &Conn,
    identity_type: IdentityType,
    identity: &str,
    role: &str,
    scope: &str,
    project: &str,
) -> anyhow::Result<u64> {
    let grants = conn
        .call(Method::GET, "/1.0/auth/grants?recursion=1", None)
        .await?;
    let wanted = match identity_type {
        IdentityType::Certificate => identity.to_ascii_lowercase(),
        _ => identity.to_owned(),
    };
    let found: Vec<&Value> = grants
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| {
            let who = g["identity"].as_str().unwrap_or_default();
            let same_identity = match identity_type {
                IdentityType::Certificate => !wanted.is_empty() && who.starts_with(&wanted),
                _ => who == wanted,
            };
            same_identity
                && g["identity_type"] == identity_type.wire()
                && g["role"] == role
                && g["scope"] == scope
                && str_of(g, "project") == project
        })
        .collect();
    match found.as_slice() {
        [] => bail!(
            "no grant of {role} on {} to {} {identity} (see rxc auth list)",
            scope_text(scope, project),
            identity_type.wire()
        ),
        [g] => g["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("the server returned a grant without an id")),
        _ => {
            bail!("{identity:?} matches several certificates' grants; give more of the fingerprint")
        }
    }
}
