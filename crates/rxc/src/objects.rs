//! What several commands read before they change it: a `[REMOTE:]NAME` argument opened, an
//! object (a profile) with its ETag, and `KEY=VALUE` arguments.

use crate::connect::{open, split_target, Conn};
use crate::project::escape;
use anyhow::{anyhow, bail};
use rxd_api::profile::Profile;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use std::collections::BTreeMap;

/// `[REMOTE:]NAME` opened: the connection and the name.
pub fn target(conf: &ConfigDir, spec: &str) -> anyhow::Result<(Conn, String)> {
    let (remote, name) = split_target(conf, spec);
    if name.is_empty() {
        bail!("{spec:?}: expected [REMOTE:]NAME");
    }
    Ok((open(conf, &remote)?, name))
}

/// `GET` an object with its ETag, as `T`.
pub async fn fetch<T: serde::de::DeserializeOwned>(
    conn: &Conn,
    path: &str,
) -> anyhow::Result<(T, Option<String>)> {
    let reply = conn
        .client
        .request(Method::GET, path, None)
        .await
        .map_err(|e| conn.explain(e))?;
    let etag = reply.header("etag").map(str::to_owned);
    let v = reply.metadata_as().map_err(|e| anyhow!(e))?;
    Ok((v, etag))
}

/// `/1.0/profiles/NAME`.
pub fn profile_path(name: &str) -> String {
    format!("/1.0/profiles/{}", escape(name))
}

/// `GET` a profile with its ETag.
pub async fn profile(conn: &Conn, name: &str) -> anyhow::Result<(Profile, Option<String>)> {
    fetch(conn, &profile_path(name)).await
}

/// `KEY=VALUE` pairs.
pub fn pairs(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    args.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("bad argument {kv:?}: expected KEY=VALUE"))
        })
        .collect()
}
