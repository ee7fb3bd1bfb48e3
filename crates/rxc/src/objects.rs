//! What several commands read before they change it: a profile with its ETag, and
//! `KEY=VALUE` arguments.

use crate::connect::Conn;
use crate::project::escape;
use anyhow::anyhow;
use rxd_api::profile::Profile;
use rxd_client::Method;
use std::collections::BTreeMap;

/// `/1.0/profiles/NAME`.
pub fn profile_path(name: &str) -> String {
    format!("/1.0/profiles/{}", escape(name))
}

/// `GET` a profile with its ETag.
pub async fn profile(conn: &Conn, name: &str) -> anyhow::Result<(Profile, Option<String>)> {
    let reply = conn
        .client
        .request(Method::GET, &profile_path(name), None)
        .await
        .map_err(|e| conn.explain(e))?;
    let etag = reply.header("etag").map(str::to_owned);
    let v = reply.metadata_as().map_err(|e| anyhow!(e))?;
    Ok((v, etag))
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
