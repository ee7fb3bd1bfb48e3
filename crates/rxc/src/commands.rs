//! `rxc info`, `rxc config ...` (server keys and the trust store) and `rxc query`.

use crate::cli::{ConfigCmd, TrustCmd};
use crate::connect::{open, remote_arg, remote_name, split_target};
use crate::output::{column, print_list, str_of, yes_no};
use anyhow::{anyhow, bail, Context};
use base64::Engine;
use rxd_api::certificate::CertificateAddToken;
use rxd_api::certificate::CertificatePut;
use rxd_api::operation::{Operation, TokenMetadata, CLASS_TOKEN};
use rxd_api::server::ServerPut;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub async fn info(conf: &ConfigDir, remote: Option<&str>) -> anyhow::Result<()> {
    let name = remote_name(conf, remote);
    let conn = open(conf, &name)?;
    let info = conn.call(Method::GET, "/1.0", None).await?;
    out!("{}", serde_norway::to_string(&info)?)?;
    outln!(
        "# remote {name} ({}): server trusted by {}",
        conn.remote.addr,
        conn.trust_mode()
    )?;
    outln!("# current project: {}", conn.project)?;
    if let Some(user) = info["auth_user_name"].as_str().filter(|u| !u.is_empty()) {
        let method = info["auth_user_method"].as_str().unwrap_or("unknown");
        outln!("# authenticated as {user} ({method})")?;
    }
    if info["auth"] == "untrusted" {
        eprintln!(
            "Note: remote {name} does not trust this client; only the public information is shown."
        );
    }
    Ok(())
}

pub async fn query(
    conf: &ConfigDir,
    target: &str,
    method: &str,
    data: Option<&str>,
    raw: bool,
) -> anyhow::Result<()> {
    let (name, path) = split_target(conf, target);
    if !path.starts_with('/') {
        bail!("the path must start with '/', e.g. /1.0");
    }
    let method = Method::from_bytes(method.to_uppercase().as_bytes())
        .map_err(|_| anyhow!("invalid method {method:?}"))?;
    let body: Option<Value> = data
        .map(serde_json::from_str)
        .transpose()
        .context("--data is not valid JSON")?;
    let conn = open(conf, &name)?;
    if raw {
        let reply = conn
            .client
            .request(method, &path, body.as_ref())
            .await
            .map_err(|e| conn.explain(e))?;
        outln!("{}", String::from_utf8_lossy(&reply.body).trim_end())?;
        if reply.status >= 400 {
            bail!("HTTP {}", reply.status);
        }
        return Ok(());
    }
    let v = conn.call(method, &path, body.as_ref()).await?;
    outln!("{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

pub async fn config(conf: &ConfigDir, cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Get { args } if args.len() == 2 && !args[0].ends_with(':') => {
            crate::instance::config_get(conf, &args[0], &args[1]).await
        }
        ConfigCmd::Set { args } => {
            let (target, rest) = config_target(&args);
            let changes = config_pairs(rest)?
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
            apply_config(conf, target, changes).await
        }
        ConfigCmd::Unset { args } => {
            let (target, rest) = config_target(&args);
            if rest.is_empty() {
                bail!("usage: rxc config unset [REMOTE:][INSTANCE] KEY [KEY...]");
            }
            let changes = rest.iter().map(|k| (k.clone(), None)).collect();
            apply_config(conf, target, changes).await
        }
        ConfigCmd::Show {
            remote: Some(target),
            expanded,
        } if !target.ends_with(':') => crate::instance::config_show(conf, &target, expanded).await,
        ConfigCmd::Get { args } => {
            let (name, rest) = remote_arg(conf, &args);
            let [key] = rest.as_slice() else {
                bail!("usage: rxc config get [REMOTE:] KEY")
            };
            let info = open(conf, &name)?.call(Method::GET, "/1.0", None).await?;
            match &info["config"][key] {
                Value::Null => outln!()?,
                Value::String(s) => outln!("{s}")?,
                other => outln!("{other}")?,
            }
            Ok(())
        }
        ConfigCmd::Show { remote, .. } => {
            let info = open(conf, &remote_name(conf, remote.as_deref()))?
                .call(Method::GET, "/1.0", None)
                .await?;
            out!(
                "{}",
                serde_norway::to_string(&json!({"config": info["config"]}))?
            )?;
            Ok(())
        }
        ConfigCmd::Edit {
            target: Some(target),
        } if !target.ends_with(':') => crate::instance::config_edit(conf, &target).await,
        ConfigCmd::Edit { target } => {
            let conn = open(conf, &remote_name(conf, target.as_deref()))?;
            let (info, _) = crate::edit::get(&conn, "/1.0").await?;
            let current = ServerPut {
                config: info["config"].as_object().cloned().unwrap_or_default(),
            };
            let conn = &conn;
            crate::edit::edit(
                "",
                &serde_norway::to_string(&current)?,
                |new: ServerPut, _| async move { crate::edit::put(conn, "/1.0", &new, None).await },
            )
            .await
        }
        ConfigCmd::Trust(t) => trust(conf, t).await,
        ConfigCmd::Device(cmd) => crate::device::run_config(conf, cmd).await,
    }
}

/// Whose config `config set`/`unset` change.
#[derive(Debug, PartialEq, Eq)]
enum ConfigTarget {
    /// The server of this remote (the default remote when `None`).
    Server(Option<String>),
    /// An instance, as `[REMOTE:]NAME`.
    Instance(String),
}

/// Split off what the first argument names. `KEY=VALUE` is a key; `REMOTE:` a server and
/// `REMOTE:NAME` an instance; otherwise a word with a dot is a key (every config key has one) and
/// one without an instance (instance names have none).
fn config_target(args: &[String]) -> (ConfigTarget, &[String]) {
    let Some(first) = args.first() else {
        return (ConfigTarget::Server(None), args);
    };
    let target = if first.contains('=') {
        return (ConfigTarget::Server(None), args);
    } else if let Some((remote, name)) = first.split_once(':') {
        if name.is_empty() {
            ConfigTarget::Server(Some(remote.to_owned()))
        } else {
            ConfigTarget::Instance(first.clone())
        }
    } else if first.contains('.') {
        return (ConfigTarget::Server(None), args);
    } else {
        ConfigTarget::Instance(first.clone())
    };
    (target, &args[1..])
}

/// The keys and values of `config set`: `KEY VALUE [KEY VALUE...]`, or `KEY=VALUE...` as later
/// `lxc` writes them (a value may then contain `=`; the forms do not mix).
fn config_pairs(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let usage = "usage: rxc config set [REMOTE:][INSTANCE] KEY VALUE [KEY VALUE...] \
                 (or KEY=VALUE...)";
    match args.first() {
        None => bail!("{usage}"),
        Some(first) if first.contains('=') => args
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("invalid KEY=VALUE: {kv:?} ({usage})"),
            })
            .collect(),
        Some(_) if args.len().is_multiple_of(2) => Ok(args
            .chunks(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect()),
        Some(_) => bail!("a key without a value ({usage})"),
    }
}

/// Apply every change in one request: a PATCH of the server config, or one PUT of the instance.
async fn apply_config(
    conf: &ConfigDir,
    target: ConfigTarget,
    changes: Vec<(String, Option<String>)>,
) -> anyhow::Result<()> {
    match target {
        ConfigTarget::Instance(name) => crate::instance::config_set(conf, &name, &changes).await,
        ConfigTarget::Server(remote) => {
            // The server reads an empty value as "unset".
            let config: Map<String, Value> = changes
                .into_iter()
                .map(|(k, v)| (k, Value::String(v.unwrap_or_default())))
                .collect();
            open(conf, &remote_name(conf, remote.as_deref()))?
                .call(Method::PATCH, "/1.0", Some(&json!({ "config": config })))
                .await?;
            Ok(())
        }
    }
}

fn cert_columns() -> Vec<crate::output::Column<'static, Value>> {
    let facts = |v: &Value| -> Option<rxd_tls::CertInfo> {
        let der = rxd_tls::cert::from_pem(v["certificate"].as_str()?)?;
        rxd_tls::cert::describe(&der)
    };
    let date = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|d| {
                d.format(time::macros::format_description!(
                    "[month repr:short] [day], [year] at [hour]:[minute] UTC"
                ))
                .ok()
            })
            .unwrap_or_default()
    };
    vec![
        column("TYPE", |v: &Value| str_of(v, "type")),
        column("NAME", |v| str_of(v, "name")),
        column("COMMON NAME", move |v| {
            facts(v).and_then(|f| f.common_name).unwrap_or_default()
        }),
        column("FINGERPRINT", |v| {
            str_of(v, "fingerprint").chars().take(12).collect()
        }),
        column("ISSUE DATE", move |v| {
            facts(v).map(|f| date(f.not_before)).unwrap_or_default()
        }),
        column("EXPIRY DATE", move |v| {
            facts(v).map(|f| date(f.not_after)).unwrap_or_default()
        }),
        column("RESTRICTED", |v: &Value| yes_no(v["restricted"] == true)),
        column("PROJECTS", |v: &Value| {
            v["projects"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        }),
    ]
}

async fn trust(conf: &ConfigDir, cmd: TrustCmd) -> anyhow::Result<()> {
    match cmd {
        TrustCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let list = conn
                .call(Method::GET, "/1.0/certificates?recursion=1", None)
                .await?;
            let items = list.as_array().cloned().unwrap_or_default();
            print_list(format.format, &items, &cert_columns())
        }
        TrustCmd::Add {
            args,
            name,
            restricted,
            projects,
        } => {
            let (remote, rest) = remote_arg(conf, &args);
            let conn = open(conf, &remote)?;
            let projects: Vec<String> = projects
                .map(|p| {
                    p.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            match rest.as_slice() {
                [file] => {
                    let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
                    let der = match std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(rxd_tls::cert::from_pem)
                    {
                        Some(der) => der,
                        None => bytes,
                    };
                    let body = json!({
                        "type": "client",
                        "name": name.unwrap_or_default(),
                        "certificate": base64::engine::general_purpose::STANDARD.encode(&der),
                        "restricted": restricted,
                        "projects": projects,
                    });
                    conn.call(Method::POST, "/1.0/certificates", Some(&body))
                        .await?;
                    Ok(())
                }
                [] => {
                    let Some(client_name) = name else {
                        bail!("give a certificate FILE to trust, or --name NAME to issue a join token")
                    };
                    let body = json!({"type": "client", "name": client_name, "token": true, "restricted": restricted, "projects": projects});
                    let op: Operation = conn
                        .send_as(Method::POST, "/1.0/certificates", &body)
                        .await?;
                    let token = token_from_operation(&op)?;
                    outln!(
                        "Client {client_name} certificate add token:\n{}",
                        token.encode()
                    )?;
                    Ok(())
                }
                _ => bail!("usage: rxc config trust add [REMOTE:] [FILE] [--name NAME]"),
            }
        }
        TrustCmd::ListTokens { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let ops = conn.get_as("/1.0/operations?recursion=1").await?;
            let tokens = token_operations(ops);
            let columns = [
                column("NAME", |op: &Operation| token_metadata(op).request.name),
                column("EXPIRES AT", |op: &Operation| token_metadata(op).expires_at),
                column("OPERATION", |op: &Operation| op.id.clone()),
            ];
            print_list(format.format, &tokens, &columns)
        }
        TrustCmd::RevokeToken { args } => {
            let (remote, rest) = remote_arg(conf, &args);
            let [which] = rest.as_slice() else {
                bail!("usage: rxc config trust revoke-token [REMOTE:] NAME")
            };
            let conn = open(conf, &remote)?;
            let ops = conn.get_as("/1.0/operations?recursion=1").await?;
            let matching: Vec<Operation> = token_operations(ops)
                .into_iter()
                .filter(|op| op.id == *which || token_metadata(op).request.name == *which)
                .collect();
            match matching.as_slice() {
                [] => bail!("No pending token for {which:?}"),
                [op] => {
                    conn.call(Method::DELETE, &format!("/1.0/operations/{}", op.id), None).await?;
                    Ok(())
                }
                _ => bail!("Several pending tokens are named {which:?}; revoke one by its operation id (rxc config trust list-tokens)"),
            }
        }
        TrustCmd::Show { fingerprint } => {
            let (remote, fp) = split_target(conf, &fingerprint);
            let conn = open(conf, &remote)?;
            let cert = conn
                .call(
                    Method::GET,
                    &format!("/1.0/certificates/{}", fp.to_lowercase()),
                    None,
                )
                .await?;
            out!("{}", serde_norway::to_string(&cert)?)?;
            Ok(())
        }
        TrustCmd::Edit { fingerprint } => {
            let (remote, fp) = split_target(conf, &fingerprint);
            let conn = open(conf, &remote)?;
            let path = format!("/1.0/certificates/{}", fp.to_lowercase());
            let (cert, etag) = crate::edit::get(&conn, &path).await?;
            // What lxc shows to edit: the certificate's writable fields.
            let current = CertificatePut {
                name: Some(str_of(&cert, "name")),
                kind: Some(str_of(&cert, "type")),
                restricted: Some(cert["restricted"] == true),
                projects: Some(
                    cert["projects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect(),
                ),
                certificate: Some(str_of(&cert, "certificate")),
            };
            let (conn, path, etag) = (&conn, &path, etag.as_deref());
            crate::edit::edit(
                "",
                &serde_norway::to_string(&current)?,
                |new: CertificatePut, interactive| async move {
                    let etag = etag.filter(|_| interactive);
                    crate::edit::put(conn, path, &new, etag).await
                },
            )
            .await
        }
        TrustCmd::Remove { args } => {
            let (remote, rest) = remote_arg(conf, &args);
            let [fp] = rest.as_slice() else {
                bail!("usage: rxc config trust remove [REMOTE:] FINGERPRINT")
            };
            let conn = open(conf, &remote)?;
            conn.call(
                Method::DELETE,
                &format!("/1.0/certificates/{}", fp.to_lowercase()),
                None,
            )
            .await?;
            Ok(())
        }
    }
}

/// The certificate add tokens among `GET /1.0/operations?recursion=1` (status → operations).
fn token_operations(ops: BTreeMap<String, Vec<Operation>>) -> Vec<Operation> {
    ops.into_values()
        .flatten()
        .filter(|op| op.class == CLASS_TOKEN)
        .collect()
}

/// A token operation's metadata (empty if it has none that reads as one).
fn token_metadata(op: &Operation) -> TokenMetadata {
    rxd_api::from_value(op.metadata.clone()).unwrap_or_default()
}

/// Build the join token from the operation the server returned, as LXD's client does.
fn token_from_operation(op: &Operation) -> anyhow::Result<CertificateAddToken> {
    if !op.metadata.is_object() {
        bail!("the server returned no token metadata");
    }
    let md: TokenMetadata = crate::connect::decode(op.metadata.clone())?;
    let token = CertificateAddToken {
        client_name: md.request.name,
        fingerprint: md.fingerprint,
        addresses: md.addresses,
        secret: md.secret,
        expires_at: match md.expires_at {
            e if e.is_empty() => "0001-01-01T00:00:00Z".into(),
            e => e,
        },
    };
    if token.secret.is_empty() || token.addresses.is_empty() || token.fingerprint.is_empty() {
        bail!("the server's reply lacks what a token needs (secret, addresses, fingerprint)");
    }
    Ok(token)
}

/// `rxc version [REMOTE:]`: as `lxc version` prints it; an unreachable server is said so, not
/// an error.
pub async fn version(conf: &ConfigDir, remote: Option<&str>) -> anyhow::Result<()> {
    outln!("Client version: {}", env!("CARGO_PKG_VERSION"))?;
    let server = match open(conf, &remote_name(conf, remote)) {
        Ok(conn) => conn
            .get_as::<rxd_api::server::Server>("/1.0")
            .await
            .ok()
            .and_then(|s| s.environment)
            .map(|e| e.server_version),
        Err(_) => None,
    };
    outln!(
        "Server version: {}",
        server.as_deref().unwrap_or("unreachable")
    )?;
    Ok(())
}

/// `rxc operation list [REMOTE:]`: LXD's columns.
pub async fn operation_list(
    conf: &ConfigDir,
    remote: Option<&str>,
    format: crate::cli::Format,
) -> anyhow::Result<()> {
    let conn = open(conf, &remote_name(conf, remote))?;
    let by_status: BTreeMap<String, Vec<Operation>> =
        conn.get_as("/1.0/operations?recursion=1").await?;
    let mut ops: Vec<Operation> = by_status.into_values().flatten().collect();
    ops.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let columns = [
        column("ID", |o: &Operation| o.id.clone()),
        column("TYPE", |o: &Operation| o.class.clone()),
        column("DESCRIPTION", |o: &Operation| o.description.clone()),
        column("STATUS", |o: &Operation| o.status.to_uppercase()),
        column("CANCELABLE", |o: &Operation| yes_no(o.may_cancel)),
        column("CREATED", |o: &Operation| o.created_at.clone()),
    ];
    print_list(format, &ops, &columns)
}

/// `rxc warning list [REMOTE:]`: LXD's columns.
pub async fn warning_list(
    conf: &ConfigDir,
    remote: Option<&str>,
    format: crate::cli::Format,
) -> anyhow::Result<()> {
    use rxd_api::warning::Warning;
    let conn = open(conf, &remote_name(conf, remote))?;
    let warnings: Vec<Warning> = conn.get_as("/1.0/warnings?recursion=1").await?;
    let columns = [
        column("UUID", |w: &Warning| w.uuid.clone()),
        column("TYPE", |w: &Warning| w.kind.clone()),
        column("STATUS", |w: &Warning| w.status.to_uppercase()),
        column("SEVERITY", |w: &Warning| w.severity.to_uppercase()),
        column("COUNT", |w: &Warning| w.count.to_string()),
        column("PROJECT", |w: &Warning| w.project.clone()),
        column("LAST SEEN", |w: &Warning| w.last_seen_at.clone()),
    ];
    print_list(format, &warnings, &columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn config_targets() {
        use ConfigTarget::*;
        let check = |args: &[&str], target: ConfigTarget, rest: &[&str]| {
            let args = strings(args);
            let (t, r) = config_target(&args);
            assert_eq!((t, r.to_vec()), (target, strings(rest)), "{args:?}");
        };
        check(&["core.x", "1"], Server(None), &["core.x", "1"]);
        check(
            &["core.x=1", "core.y=2"],
            Server(None),
            &["core.x=1", "core.y=2"],
        );
        // A value with a colon in KEY=VALUE form is no remote.
        check(
            &["core.https_address=127.0.0.1:8443"],
            Server(None),
            &["core.https_address=127.0.0.1:8443"],
        );
        check(
            &["prod:", "core.x", "1"],
            Server(Some("prod".into())),
            &["core.x", "1"],
        );
        check(
            &["my.host:", "core.x=1"],
            Server(Some("my.host".into())),
            &["core.x=1"],
        );
        check(
            &["c1", "limits.memory", "1GiB"],
            Instance("c1".into()),
            &["limits.memory", "1GiB"],
        );
        check(
            &["c1", "limits.memory=1GiB"],
            Instance("c1".into()),
            &["limits.memory=1GiB"],
        );
        check(
            &["my.host:c1", "user.a=b"],
            Instance("my.host:c1".into()),
            &["user.a=b"],
        );
        check(&["c1"], Instance("c1".into()), &[]);
    }

    #[test]
    fn config_pairs_forms() {
        let ok = |args: &[&str], pairs: &[(&str, &str)]| {
            let want: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(config_pairs(&strings(args)).unwrap(), want, "{args:?}");
        };
        ok(&["k.a", "1"], &[("k.a", "1")]);
        ok(&["k.a", "1", "k.b", "x=y"], &[("k.a", "1"), ("k.b", "x=y")]);
        ok(
            &["k.a=1", "k.b=x=y", "k.c="],
            &[("k.a", "1"), ("k.b", "x=y"), ("k.c", "")],
        );
        ok(&["k.a", ""], &[("k.a", "")]);
        for bad in [
            &[][..],
            &["k.a"],
            &["k.a", "1", "k.b"],
            &["k.a=1", "k.b"],
            &["=1"],
        ] {
            assert!(config_pairs(&strings(bad)).is_err(), "{bad:?}");
        }
    }
}
