//! Opening a remote: the unix socket for `unix://` remotes, otherwise HTTPS that accepts exactly
//! the pinned certificate (or, in PKI mode, one issued by `client.ca`), authenticated by this
//! client's certificate or, for a Candid remote, by the login cookies in its jar. Errors are
//! turned into sentences that say what happened and what to do.

use anyhow::{anyhow, bail, Context};
use rxd_client::remotes::{ConfigDir, Remote};
use rxd_client::{Client, ClientError, Method};
use rxd_tls::client::ServerTrust;
use serde_json::Value;
use std::path::PathBuf;

pub struct Conn {
    pub name: String,
    pub remote: Remote,
    /// The project requests are made in: `--project`, else the remote's current one.
    pub project: String,
    pub client: Client,
    /// The pinned server certificate, for reporting a changed one.
    pinned: Option<Vec<u8>>,
}

/// `[REMOTE:]REST` split into the remote (default if absent) and the rest.
pub fn split_target(conf: &ConfigDir, target: &str) -> (String, String) {
    match target.split_once(':') {
        Some((r, rest)) if !r.is_empty() && !r.contains('/') => (r.to_owned(), rest.to_owned()),
        _ => (conf.file.default_remote.clone(), target.to_owned()),
    }
}

/// A leading `REMOTE:` argument, if the first of `args` is one.
pub fn remote_arg(conf: &ConfigDir, args: &[String]) -> (String, Vec<String>) {
    match args.first() {
        Some(a) if a.ends_with(':') => (a.trim_end_matches(':').to_owned(), args[1..].to_vec()),
        _ => (conf.file.default_remote.clone(), args.to_vec()),
    }
}

pub fn remote_name(conf: &ConfigDir, arg: Option<&str>) -> String {
    arg.map(|a| a.trim_end_matches(':').to_owned())
        .unwrap_or_else(|| conf.file.default_remote.clone())
}

fn socket_path(addr: &str) -> PathBuf {
    match addr.strip_prefix("unix://") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let dir = std::env::var_os("RXD_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/rxd"));
            dir.join("unix.socket")
        }
    }
}

/// `https://host:port` (or `host:port`, `[v6]:port`, `host`) as host and port.
pub fn parse_https(addr: &str) -> anyhow::Result<(String, u16)> {
    let rest = match addr.split_once("://") {
        Some(("https", rest)) => rest,
        Some((scheme, _)) => bail!("Invalid URL scheme \"{scheme}\" in \"{addr}\""),
        None => addr,
    };
    let rest = rest.trim_end_matches('/');
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("Invalid address {addr:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse()
                .with_context(|| format!("Invalid port in {addr:?}"))?,
            None => 8443,
        };
        return Ok((host.to_owned(), port));
    }
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((
            h.to_owned(),
            p.parse()
                .with_context(|| format!("Invalid port in {addr:?}"))?,
        )),
        _ if rest.parse::<std::net::Ipv6Addr>().is_ok() => Ok((rest.to_owned(), 8443)),
        _ if !rest.is_empty() => Ok((rest.to_owned(), 8443)),
        _ => bail!("Invalid address {addr:?}"),
    }
}

pub fn https_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The CA roots of `client.ca`, for PKI mode.
pub fn ca_roots(conf: &ConfigDir) -> anyhow::Result<Option<ServerTrust>> {
    let Some(path) = conf.client_ca() else {
        return Ok(None);
    };
    let pem =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let der = rxd_tls::cert::from_pem(&pem)
        .ok_or_else(|| anyhow!("{}: no PEM certificate", path.display()))?;
    Ok(Some(
        rxd_tls::client::ca_trust(&[der]).map_err(|e| anyhow!("{}: {e}", path.display()))?,
    ))
}

/// Connect to remote `name`, scoped to the project `--project` names or else the remote's.
pub fn open(conf: &ConfigDir, name: &str) -> anyhow::Result<Conn> {
    let remote = conf.remote(name)?;
    let project = conf.project_for(&remote);
    if remote.addr.starts_with("unix:") {
        let mut client = Client::unix(socket_path(&remote.addr));
        client.set_project(Some(project.clone()));
        return Ok(Conn {
            name: name.into(),
            remote,
            project,
            client,
            pinned: None,
        });
    }
    let (host, port) = parse_https(&remote.addr)?;
    let pinned = conf.pin(name)?;
    let trust = match &pinned {
        Some(der) => ServerTrust::Pinned(rxd_tls::cert::fingerprint_bytes(der)),
        None => match ca_roots(conf)? {
            Some(ca) => ca,
            None => bail!(
                "remote {name} has no pinned certificate ({} is missing); re-add it: rxc remote remove {name} && rxc remote add {name} {}",
                conf.pin_path(name).display(),
                remote.addr
            ),
        },
    };
    let mut client = if remote.auth_type == "candid" {
        let login = crate::login::session(conf, name, &remote, &host)?;
        let mut c = Client::https(&host, port, trust, None)?;
        c.set_candid(std::sync::Arc::new(login));
        c
    } else {
        let identity = conf.client_keypair()?;
        Client::https(&host, port, trust, Some(&identity))?
    };
    client.set_project(Some(project.clone()));
    Ok(Conn {
        name: name.into(),
        remote,
        project,
        client,
        pinned,
    })
}

impl Conn {
    /// How this remote's server is authenticated: the unix socket, a pinned certificate, or the CA.
    pub fn trust_mode(&self) -> String {
        match &self.pinned {
            _ if self.remote.addr.starts_with("unix:") => "file access (unix socket)".into(),
            Some(der) => format!("pinned certificate {}", rxd_tls::fingerprint(der)),
            None => "CA (client.ca)".into(),
        }
    }

    /// Send a request and return the metadata, explaining a changed certificate or revoked trust.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let reply = self
            .client
            .request(method, path, body)
            .await
            .map_err(|e| self.explain(e))?;
        match reply.metadata() {
            Ok(v) => Ok(v),
            Err(ClientError::Api {
                status: 403,
                message,
            }) if self.client.candid().is_some() => {
                let who = self
                    .client
                    .candid()
                    .and_then(|l| l.user())
                    .map(|u| format!("Candid user {u}"))
                    .unwrap_or_else(|| "this Candid login".into());
                bail!(
                    "{message}: {who} has no role that allows this on remote {name}. An administrator can \
                     grant one: rxc auth grant USER ROLE --type candid-user --project PROJECT",
                    name = self.name
                )
            }
            Err(ClientError::Api {
                status: 403,
                message,
            }) if !self.remote.addr.starts_with("unix:") => {
                if let Ok(info) = self.client.get("/1.0").await {
                    if info["auth"] == "untrusted" {
                        bail!(
                            "this client is no longer trusted by remote {name} (the server answered: {message}).\n\
                             Its certificate is not (or no longer) in the server's trust store. To enrol again, ask an \
                             administrator for a join token (rxc config trust add --name NAME) and run:\n  \
                             rxc remote remove {name} && rxc remote add {name} TOKEN",
                            name = self.name
                        );
                    }
                }
                Err(anyhow!(message))
            }
            Err(e) => Err(anyhow!(e)),
        }
    }

    /// [`call`](Self::call) a GET whose answer is an `rxd_api` type.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call_as(Method::GET, path).await
    }

    /// [`call`](Self::call) without a body, with an answer of type `T`.
    pub async fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<T> {
        decode(self.call(method, path, None).await?)
    }

    /// [`call`](Self::call) with an `rxd_api` request type as the body, and an answer of type `T`.
    pub async fn send_as<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let v = self
            .call(method, path, Some(&serde_json::to_value(body)?))
            .await?;
        decode(v)
    }

    /// Wait for the operation `id` and return its final form, or its error.
    pub async fn wait_operation(&self, id: &str) -> anyhow::Result<rxd_api::operation::Operation> {
        if id.is_empty() {
            bail!("the server returned no operation");
        }
        let done: rxd_api::operation::Operation =
            self.get_as(&format!("/1.0/operations/{id}/wait")).await?;
        match done.status.as_str() {
            "Success" => Ok(done),
            _ if !done.err.is_empty() => bail!("{}", done.err),
            _ => bail!("the operation failed"),
        }
    }

    /// Wait for the operation `id` as [`Conn::wait_operation`] does, showing on a terminal the
    /// download progress the server reports in its metadata as `lxc` does (`Retrieving image:
    /// rootfs: 45% (12.34MB/s)`), on one line cleared at the end.
    pub async fn wait_operation_showing(
        &self,
        id: &str,
        label: &str,
    ) -> anyhow::Result<rxd_api::operation::Operation> {
        if id.is_empty() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return self.wait_operation(id).await;
        }
        let mut shown = false;
        loop {
            let now: rxd_api::operation::Operation = self
                .get_as(&format!("/1.0/operations/{id}/wait?timeout=1"))
                .await?;
            if now.status != "Running" {
                break;
            }
            if let Some(text) = now.metadata["download_progress"].as_str() {
                eprint!("\r\x1b[K{label}: {}", crate::output::printable(text));
                shown = true;
            }
        }
        if shown {
            eprint!("\r\x1b[K");
        }
        self.wait_operation(id).await
    }

    pub fn explain(&self, e: ClientError) -> anyhow::Error {
        match e {
            ClientError::PinMismatch { presented } => {
                let presented = presented
                    .map(|d| rxd_tls::fingerprint(&d))
                    .unwrap_or_else(|| "unknown".into());
                let pinned = self
                    .pinned
                    .as_deref()
                    .map(rxd_tls::fingerprint)
                    .unwrap_or_else(|| "none".into());
                anyhow!(
                    "the certificate of remote {name} ({addr}) has changed; nothing was sent.\n  \
                     pinned:    {pinned}\n  presented: {presented}\n\
                     Either the server was reinstalled or its certificate regenerated, or someone is intercepting \
                     the connection. Ask the server's administrator for its fingerprint (rxc info on the server \
                     shows it). Only if it matches the presented one, re-add the remote:\n  \
                     rxc remote remove {name} && rxc remote add {name} {addr}",
                    name = self.name,
                    addr = self.remote.addr
                )
            }
            ClientError::Connect { target, source } => {
                anyhow!("cannot reach remote {} at {target}: {source}", self.name)
            }
            other => anyhow!(other),
        }
    }
}

/// Read an answer's metadata as LXD's Go client does (`rxd_api::from_value`).
pub fn decode<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    rxd_api::from_value(v).map_err(|e| anyhow!("the server's answer could not be read: {e}"))
}
