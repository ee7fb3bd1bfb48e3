//! `rxc remote ...`, and above all `remote add`: the seed's four steps (GET /1.0, confirm the
//! fingerprint, send the password if untrusted, GET /1.0 again), or a join token, which carries
//! the server's fingerprint so nothing needs confirming, or (after the same fingerprint check) a
//! Candid login. Nothing is written unless the whole add succeeds.

use crate::cli::{Format, RemoteAdd, RemoteCmd};
use crate::connect::{ca_roots, https_url, parse_https};
use crate::output::{column, print_list, str_of, yes_no};
use anyhow::{anyhow, bail};
use rxd_api::certificate::CertificateAddToken;
use rxd_client::candid::Login;
use rxd_client::remotes::{ConfigDir, Remote, LOCAL};
use rxd_client::{Client, ClientError, Method};
use rxd_tls::client::ServerTrust;
use rxd_tls::KeyPairFiles;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

pub async fn run(conf: &mut ConfigDir, cmd: RemoteCmd) -> anyhow::Result<()> {
    match cmd {
        RemoteCmd::Add(args) => add(conf, args).await,
        RemoteCmd::List(f) => list(conf, f.format),
        RemoteCmd::Remove { name } => Ok(conf.remove_remote(&name)?),
        RemoteCmd::Rename { old, new } => Ok(conf.rename_remote(&old, &new)?),
        RemoteCmd::Switch { name } => Ok(conf.set_default(&name)?),
        RemoteCmd::GetDefault => {
            outln!("{}", conf.file.default_remote)?;
            Ok(())
        }
    }
}

fn list(conf: &ConfigDir, format: Format) -> anyhow::Result<()> {
    let rows: Vec<Value> = conf
        .remotes()
        .into_iter()
        .map(|(name, r)| {
            let trust = if r.addr.starts_with("unix:") {
                "file access"
            } else if conf.pin_path(&name).exists() {
                "pinned"
            } else if conf.client_ca().is_some() {
                "ca"
            } else {
                "none"
            };
            let default = name == conf.file.default_remote;
            json!({"name": name, "addr": r.addr, "protocol": r.protocol, "auth_type": r.auth_type,
                   "public": r.public, "static": name == LOCAL, "trust": trust, "default": default})
        })
        .collect();
    let columns = [
        column("NAME", |v| {
            let n = str_of(v, "name");
            if v["default"] == true {
                format!("{n} (current)")
            } else {
                n
            }
        }),
        column("URL", |v| str_of(v, "addr")),
        column("PROTOCOL", |v| str_of(v, "protocol")),
        column("AUTH TYPE", |v| str_of(v, "auth_type")),
        column("TRUST", |v| str_of(v, "trust")),
        column("PUBLIC", |v: &Value| yes_no(v["public"] == true)),
        column("STATIC", |v: &Value| yes_no(v["static"] == true)),
    ];
    print_list(format, &rows, &columns)
}

fn ensure_keypair(conf: &ConfigDir) -> anyhow::Result<KeyPairFiles> {
    if !conf.has_client_cert() {
        eprintln!("Generating a client certificate. This may take a minute...");
    }
    Ok(conf.client_keypair()?)
}

/// Connect without trusting anything, to learn the server's certificate; nothing is sent.
/// Only a handshake that reached the certificate counts: network errors are reported as such.
async fn capture(host: &str, port: u16) -> anyhow::Result<Vec<u8>> {
    let probe = Client::https(host, port, ServerTrust::Capture, None)?;
    match probe.get("/1.0").await {
        Err(ClientError::Captured { der }) => Ok(der),
        Err(ClientError::Connect { target, source }) => {
            Err(anyhow!("cannot reach {target}: {source}"))
        }
        Err(e) => Err(anyhow!(
            "cannot get the certificate of {}: {e}",
            https_url(host, port)
        )),
        Ok(_) => Err(anyhow!(
            "the server answered without a TLS certificate check"
        )),
    }
}

fn read_line() -> anyhow::Result<String> {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        bail!("EOF");
    }
    Ok(line.trim().to_owned())
}

/// Ask the user to confirm the fingerprint, as ssh does.
fn confirm_fingerprint(fp: &str) -> anyhow::Result<()> {
    outln!("Certificate fingerprint: {fp}")?;
    if !std::io::stdin().is_terminal() {
        bail!(
            "cannot confirm the server certificate without a terminal; check the fingerprint above with the \
             server's administrator (rxc info on the server), then pass --accept-certificate, or use a join token"
        );
    }
    out!("ok (y/n/[fingerprint])? ")?;
    std::io::stdout().flush()?;
    let answer = read_line()?;
    match answer.as_str() {
        a if a == fp => Ok(()),
        a if a.starts_with(['y', 'Y']) => Ok(()),
        "" | "n" | "N" => bail!("Server certificate NACKed by user"),
        _ => bail!("Please type 'y', 'n' or the fingerprint:"),
    }
}

fn ask_password(name: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("the server does not trust this client yet and there is no terminal to ask for its password: pass --password, or use a join token (rxc remote add {name} TOKEN)");
    }
    Ok(dialoguer::Password::new()
        .with_prompt(format!("Admin password (or token) for {name}"))
        .allow_empty_password(true)
        .interact()?)
}

async fn add(conf: &mut ConfigDir, args: RemoteAdd) -> anyhow::Result<()> {
    conf.check_new_name(&args.name)?;
    if args.protocol == "simplestreams" {
        // An image server: no certificate to capture, nothing to enrol. Its https certificate
        // is checked against the system's roots whenever it is read (by rxc to list it, by the
        // daemon to pull from it).
        if !args.addr.starts_with("https://") {
            bail!(
                "simplestreams remotes must be https:// URLs, not {:?}",
                args.addr
            );
        }
        let mut remote = remote_entry(&args, args.addr.trim_end_matches('/').to_owned(), "none");
        remote.protocol = "simplestreams".into();
        remote.public = true;
        return Ok(conf.save_remote(&args.name, remote, None)?);
    }
    let candid_wanted = args.auth_type.as_deref() == Some("candid") || args.candid_agent.is_some();
    if args.candid_agent.is_some() && args.auth_type.as_deref() == Some("tls") {
        bail!("--candid-agent logs in by Candid; it cannot be used with --auth-type=tls");
    }
    if candid_wanted && args.password.is_some() {
        bail!("--password enrols a TLS client certificate; a Candid remote logs in at its Candid server instead");
    }
    if let Some(token) = CertificateAddToken::decode(&args.addr) {
        if candid_wanted {
            bail!("a join token enrols a TLS client certificate; it cannot be used with --auth-type=candid");
        }
        return add_with_token(conf, &args, &token).await;
    }
    if args.addr.starts_with("unix:") {
        let remote = remote_entry(&args, args.addr.clone(), "file access");
        return Ok(conf.save_remote(&args.name, remote, None)?);
    }
    let (host, port) = parse_https(&args.addr)?;
    // A Candid remote is never sent a client certificate, so none is made for one.
    let identity = if candid_wanted {
        None
    } else {
        Some(ensure_keypair(conf)?)
    };

    // PKI mode: a server certificate issued by client.ca needs no confirmation and no pin. One
    // that is not falls back to the fingerprint flow, as the specification says.
    let mut pin_pem = None;
    let mut trust = None;
    if let Some(ca) = ca_roots(conf)? {
        let c = Client::https(&host, port, ca.clone(), identity.as_ref())?;
        if c.get("/1.0").await.is_ok() {
            trust = Some(ca);
        }
    }
    let trust = match trust {
        Some(t) => t,
        None => {
            let der = capture(&host, port).await?;
            let fp = rxd_tls::fingerprint(&der);
            if args.accept_certificate {
                if args.password.is_some() {
                    eprintln!(
                        "Warning: the fingerprint of {} ({fp}) was accepted without confirmation; the password \
                         goes to whoever answered. Confirm fingerprints out of band, or prefer join tokens.",
                        args.addr
                    );
                }
            } else {
                confirm_fingerprint(&fp)?;
            }
            pin_pem = Some(rxd_tls::cert::to_pem(&der));
            ServerTrust::Pinned(rxd_tls::cert::fingerprint_bytes(&der))
        }
    };
    let client = Client::https(&host, port, trust.clone(), identity.as_ref())?;

    let info = client.get("/1.0").await?;
    let methods = info["auth_methods"].as_array().cloned().unwrap_or_default();
    let offers = |m: &str| methods.iter().any(|x| x == m);
    // As LXD 5.0's client: without --auth-type, a server that offers Candid gets a Candid login.
    let auth_type = match args.auth_type.as_deref() {
        Some(t) => t,
        None if candid_wanted || (args.password.is_none() && offers("candid")) => "candid",
        None => "tls",
    };
    if !offers(auth_type) {
        bail!("Authentication type '{auth_type}' not supported by server");
    }
    if auth_type == "candid" {
        return add_candid(conf, &args, (&host, port), trust, pin_pem).await;
    }
    if info["auth"] != "trusted" {
        let password = match &args.password {
            Some(p) => p.clone(),
            None => ask_password(&args.name)?,
        };
        enrol(&client, &password).await?;
        outln!("Client certificate now trusted by server: {}", args.name)?;
    } else if args.password.is_some() {
        eprintln!(
            "This client is already trusted by {}; the password was not used.",
            args.name
        );
    }
    let remote = remote_entry(&args, https_url(&host, port), "tls");
    Ok(conf.save_remote(&args.name, remote, pin_pem.as_deref())?)
}

/// Log in at the server's Candid (`GET /1.0` as a Candid client answers the challenge), check
/// that the server now trusts us, then save the jar, the pin and the remote; nothing is written
/// if the login fails.
async fn add_candid(
    conf: &mut ConfigDir,
    args: &RemoteAdd,
    (host, port): (&str, u16),
    trust: ServerTrust,
    pin_pem: Option<String>,
) -> anyhow::Result<()> {
    let agent = args
        .candid_agent
        .as_deref()
        .map(crate::login::load_agent)
        .transpose()?;
    let agent_path = agent
        .as_ref()
        .map(|a| a.path.display().to_string())
        .unwrap_or_default();
    let domain = args.domain.clone().unwrap_or_default();
    let mut login = Login::new(host, Arc::new(crate::login::Terminal)).with_domain(&domain);
    if let Some(a) = agent {
        login = login.with_agent(a);
    }
    let login = Arc::new(login);
    let mut client = Client::https(host, port, trust, None)?;
    client.set_candid(login.clone());
    let name = &args.name;
    let info = client
        .get("/1.0")
        .await
        .map_err(|e| anyhow!("Candid login failed: {e}\nRemote {name} was not added."))?;
    if info["auth"] != "trusted" {
        bail!(
            "the server does not trust this Candid login (auth: {}); remote {name} was not added",
            info["auth"]
        );
    }
    let jar = conf.jar_path(name);
    login.save_jar(&jar)?;
    let mut remote = remote_entry(args, https_url(host, port), "candid");
    remote.domain = domain;
    remote.candid_agent = agent_path;
    if let Err(e) = conf.save_remote(name, remote, pin_pem.as_deref()) {
        let _ = std::fs::remove_file(&jar);
        return Err(e.into());
    }
    if let Some(user) = info["auth_user_name"].as_str() {
        outln!("Logged in to {name} as {user} (Candid)")?;
    }
    Ok(())
}

/// POST the secret, then check that the server now trusts us.
async fn enrol(client: &Client, secret: &str) -> anyhow::Result<()> {
    let reply = client
        .request(
            Method::POST,
            "/1.0/certificates",
            Some(&json!({"type": "client", "password": secret})),
        )
        .await?;
    if let Err(e) = reply.metadata() {
        match (reply.status, e) {
            (429, ClientError::Api { message, .. }) => bail!("{message}"),
            (_, ClientError::Api { message, .. }) if message != "not authorized" => {
                bail!("Failed to create certificate: {message}")
            }
            (_, e) => bail!(e),
        }
    }
    if client.get("/1.0").await?["auth"] != "trusted" {
        bail!("Server doesn't trust us after authentication");
    }
    Ok(())
}

async fn add_with_token(
    conf: &mut ConfigDir,
    args: &RemoteAdd,
    token: &CertificateAddToken,
) -> anyhow::Result<()> {
    let identity = ensure_keypair(conf)?;
    let mut failures = Vec::new();
    for addr in &token.addresses {
        let (host, port) = match parse_https(addr) {
            Ok(hp) => hp,
            Err(e) => {
                failures.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let der = match capture(&host, port).await {
            Ok(der) => der,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        // The token names the server's fingerprint: check it before sending the secret.
        if rxd_tls::fingerprint(&der) != token.fingerprint {
            bail!("Certificate fingerprint mismatch between certificate token and server {addr:?}");
        }
        let client = Client::https(
            &host,
            port,
            ServerTrust::Pinned(rxd_tls::cert::fingerprint_bytes(&der)),
            Some(&identity),
        )?;
        if client.get("/1.0").await?["auth"] != "trusted" {
            enrol(&client, &args.addr).await?;
        }
        outln!("Client certificate now trusted by server: {}", args.name)?;
        let remote = remote_entry(args, https_url(&host, port), "tls");
        return Ok(conf.save_remote(&args.name, remote, Some(&rxd_tls::cert::to_pem(&der)))?);
    }
    bail!(
        "none of the token's addresses could be reached:\n  {}",
        failures.join("\n  ")
    )
}

fn remote_entry(args: &RemoteAdd, addr: String, auth_type: &str) -> Remote {
    Remote {
        addr,
        auth_type: auth_type.into(),
        domain: String::new(),
        project: args.project.clone(),
        protocol: "lxd".into(),
        public: false,
        candid_agent: String::new(),
    }
}
