//! `rxc project ...` (LXD's projects) and `rxc auth ...` (rxd's role grants).
//!
//! Requests about one project are scoped to that project itself (`?project=NAME`), not to the
//! current one: someone granted a role on `p1` only must be able to show or switch to `p1`, and
//! a current project that was deleted meanwhile must not keep anyone from switching away.

use crate::cli::{AuthCmd, IdentityType, ProjectCmd, RoleArg, ScopeArgs};
use crate::connect::{open, remote_arg, remote_name, split_target, Conn};
use crate::image::wait;
use crate::output::{column, print_list};
use anyhow::{anyhow, bail};
use clap::ValueEnum;
use rxd_api::certificate::Certificate;
use rxd_api::grant::{Grant, GrantsPost};
use rxd_api::project::{Project, ProjectPost, ProjectPut, ProjectState, ProjectsPost};
use rxd_api::ResponseType;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use serde_json::Value;
use std::collections::BTreeMap;

pub async fn run(conf: &mut ConfigDir, cmd: ProjectCmd) -> anyhow::Result<()> {
    match cmd {
        ProjectCmd::Create {
            name,
            config,
            description,
        } => {
            let (remote, name) = split_target(conf, &name);
            let mut map = BTreeMap::new();
            for kv in &config {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("bad config {kv:?}: expected KEY=VALUE"))?;
                map.insert(k.to_owned(), v.to_owned());
            }
            let body = ProjectsPost {
                config: map,
                description,
                name: name.clone(),
            };
            open(conf, &remote)?
                .send_as::<Value>(Method::POST, "/1.0/projects", &body)
                .await?;
            outln!("Project {name} created")?;
            Ok(())
        }
        ProjectCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let items: Vec<Project> = conn.get_as("/1.0/projects?recursion=1").await?;
            let current = conn.project.clone();
            let columns = [
                column("NAME", move |v: &Project| {
                    if v.name == current {
                        format!("{} (current)", v.name)
                    } else {
                        v.name.clone()
                    }
                }),
                column("DESCRIPTION", |v: &Project| v.description.clone()),
                column("USED BY", |v: &Project| v.used_by.len().to_string()),
            ];
            print_list(format.format, &items, &columns)
        }
        ProjectCmd::Show { name } => {
            let (conn, name) = target(conf, &name)?;
            let (v, _) = fetch(&conn, &name).await?;
            out!("{}", serde_norway::to_string(&v)?)?;
            Ok(())
        }
        ProjectCmd::Info { name, format } => {
            let (conn, name) = target(conf, &name)?;
            let escaped = escape(&name);
            let state: ProjectState = conn
                .get_as(&format!("/1.0/projects/{escaped}/state?project={escaped}"))
                .await?;
            let shown = |k: &str, n: i64| match k {
                "disk" | "memory" => crate::list::iec(n),
                _ => n.to_string(),
            };
            let mut rows: Vec<Vec<String>> = state
                .resources
                .iter()
                .map(|(k, r)| {
                    let limit = match r.limit {
                        l if l < 0 => "UNLIMITED".to_owned(),
                        l => shown(k, l),
                    };
                    vec![k.to_uppercase(), limit, shown(k, r.usage)]
                })
                .collect();
            rows.sort_by(|a, b| crate::list::row_cmp(a, b));
            crate::output::print_rows(
                format.format,
                &["RESOURCE", "LIMIT", "USAGE"],
                &rows,
                &state,
            )
        }
        ProjectCmd::Edit { name } => {
            let (conn, name) = target(conf, &name)?;
            let (v, etag) = fetch(&conn, &name).await?;
            let current = ProjectPut {
                config: Some(v.config),
                description: Some(v.description),
            };
            let path = project_path(&name);
            let (conn, path, etag) = (&conn, &path, etag.as_deref());
            crate::edit::edit(
                PROJECT_EDIT_HELP,
                &serde_norway::to_string(&current)?,
                |new: ProjectPut, interactive| async move {
                    crate::edit::put(conn, path, &new, etag.filter(|_| interactive)).await
                },
            )
            .await
        }
        ProjectCmd::Get { name, key } => {
            let (conn, name) = target(conf, &name)?;
            let (v, _) = fetch(&conn, &name).await?;
            outln!("{}", v.config.get(&key).map_or("", String::as_str))?;
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
            let body = ProjectPost { name: new.clone() };
            let op = conn
                .send_as(Method::POST, &project_path(&old), &body)
                .await?;
            wait(&conn, &op).await?;
            // The remote's current project keeps pointing at the same project.
            if conn.remote.project == old {
                conf.set_project(&remote, &new)?;
            }
            outln!("Project {old} renamed to {new}")?;
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
            outln!("Project {name} deleted")?;
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
/// What `lxc project edit` shows above a project's YAML.
const PROJECT_EDIT_HELP: &str = "### This is a YAML representation of the project.
### Any line starting with a '# will be ignored.
###
### A project consists of a set of features and a description.
###
### An example would look like:
### config:
###   features.images: \"true\"
###   restricted: \"true\"
### description: My own project";

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
pub(crate) fn escape(s: &str) -> String {
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
async fn fetch(conn: &Conn, name: &str) -> anyhow::Result<(Project, Option<String>)> {
    let reply = conn
        .client
        .request(Method::GET, &project_path(name), None)
        .await
        .map_err(|e| conn.explain(e))?;
    let etag = reply.header("etag").map(str::to_owned);
    let v = reply.metadata_as().map_err(|e| anyhow!(e))?;
    Ok((v, etag))
}

/// Set (or with `None`, unset) one config key: read the project, change the key, write it back
/// guarded by its ETag, as `lxc project set` does.
async fn set(conf: &ConfigDir, spec: &str, key: &str, value: Option<&str>) -> anyhow::Result<()> {
    let (conn, name) = target(conf, spec)?;
    let (v, etag) = fetch(&conn, &name).await?;
    let mut config = v.config;
    match value {
        Some(value) => config.insert(key.to_owned(), value.to_owned()),
        None => {
            if config.remove(key).is_none() {
                bail!("Project {name} has no config key {key:?}");
            }
            None
        }
    };
    let body = ProjectPut {
        config: Some(config),
        description: Some(v.description),
    };
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
    if reply.envelope()?.kind == ResponseType::Async {
        let op = reply.metadata_as().map_err(|e| anyhow!(e))?;
        wait(&conn, &op).await?;
    } else {
        reply.metadata().map_err(|e| anyhow!(e))?;
    }
    Ok(())
}

pub async fn auth(conf: &ConfigDir, cmd: AuthCmd) -> anyhow::Result<()> {
    match cmd {
        AuthCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let items: Vec<Grant> = conn.get_as("/1.0/auth/grants?recursion=1").await?;
            let columns = [
                column("ID", |v: &Grant| v.id.to_string()),
                column("IDENTITY TYPE", |v: &Grant| v.identity_type.clone()),
                column("IDENTITY", |v: &Grant| {
                    if v.identity_type == "certificate" && format.format != crate::cli::Format::Csv
                    {
                        v.identity.chars().take(12).collect()
                    } else {
                        v.identity.clone()
                    }
                }),
                column("ROLE", |v: &Grant| v.role.clone()),
                column("SCOPE", |v: &Grant| v.scope.clone()),
                column("PROJECT", |v: &Grant| v.project.clone()),
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
            let body = GrantsPost {
                identity_type: identity_type.wire().into(),
                identity: identity.clone(),
                role: role.into(),
                scope: scope.into(),
                project: project.clone(),
            };
            let grant: Option<Grant> = conn
                .send_as(Method::POST, "/1.0/auth/grants", &body)
                .await?;
            let id = match grant {
                None => String::new(),
                Some(g) => format!(" (grant {})", g.id),
            };
            outln!(
                "Granted {role} on {} to {} {identity}{id}",
                scope_text(scope, &project),
                identity_type.wire()
            )?;
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
            outln!("Revoked grant {id}")?;
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
    let cert: Certificate = conn
        .get_as(&format!("/1.0/certificates/{prefix}"))
        .await
        .map_err(|e| anyhow!("certificate {prefix}: {e}"))?;
    match cert.fingerprint {
        fp if fp.len() == 64 => Ok(fp),
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
    let grants: Vec<Grant> = conn.get_as("/1.0/auth/grants?recursion=1").await?;
    let wanted = match identity_type {
        IdentityType::Certificate => identity.to_ascii_lowercase(),
        _ => identity.to_owned(),
    };
    let found: Vec<&Grant> = grants
        .iter()
        .filter(|g| {
            let who = g.identity.as_str();
            let same_identity = match identity_type {
                IdentityType::Certificate => !wanted.is_empty() && who.starts_with(&wanted),
                _ => who == wanted,
            };
            same_identity
                && g.identity_type == identity_type.wire()
                && g.role == role
                && g.scope == scope
                && g.project == project
        })
        .collect();
    match found.as_slice() {
        [] => bail!(
            "no grant of {role} on {} to {} {identity} (see rxc auth list)",
            scope_text(scope, project),
            identity_type.wire()
        ),
        [g] => {
            u64::try_from(g.id).map_err(|_| anyhow!("the server returned a grant without an id"))
        }
        _ => {
            bail!("{identity:?} matches several certificates' grants; give more of the fingerprint")
        }
    }
}
