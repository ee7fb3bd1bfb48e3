//! The `edit` commands (`config edit`, `project edit`, `config trust edit`): an object's
//! editable fields as YAML, changed in `$VISUAL`/`$EDITOR` when standard input is a terminal or
//! read from standard input otherwise, checked before anything is sent, and PUT back. As `lxc`
//! does, an interactive edit is guarded by the object's ETag and, when the YAML does not read
//! or the server refuses it, offers to reopen the editor on what was written.

use crate::connect::Conn;
use anyhow::{anyhow, bail, Context};
use rxd_api::ResponseType;
use rxd_client::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::{IsTerminal, Read, Write};

/// `GET` an object with its ETag.
pub async fn get(conn: &Conn, path: &str) -> anyhow::Result<(Value, Option<String>)> {
    let reply = conn
        .client
        .request(Method::GET, path, None)
        .await
        .map_err(|e| conn.explain(e))?;
    let etag = reply.header("etag").map(str::to_owned);
    Ok((reply.metadata().map_err(|e| anyhow!(e))?, etag))
}

/// `PUT` a body (with `If-Match` when an ETag is given), waiting for the operation when the
/// server answers with one.
pub async fn put(
    conn: &Conn,
    path: &str,
    body: &impl serde::Serialize,
    etag: Option<&str>,
) -> anyhow::Result<()> {
    let headers: Vec<(&str, &str)> = etag.iter().map(|e| ("if-match", *e)).collect();
    let reply = conn
        .client
        .send(
            Method::PUT,
            path,
            &headers,
            serde_json::to_vec(body)?.into(),
        )
        .await
        .map_err(|e| conn.explain(e))?;
    let metadata = reply.metadata().map_err(|e| anyhow!(e))?;
    if reply
        .envelope()
        .is_ok_and(|e| e.kind == ResponseType::Async)
    {
        let op: rxd_api::operation::Operation = crate::connect::decode(metadata)?;
        conn.wait_operation(&op.id).await?;
    }
    Ok(())
}

/// YAML as Go's decoder reads it into LXD's types: a scalar where a string is expected in a
/// `config` map or a device (`limits.cpu: 2`) is that string. (Only where the type wants
/// strings: the server's config keeps `core.trust_password: true`, which means "unchanged".)
fn stringify_maps(v: &mut Value) {
    let as_string = |v: &mut Value| match v {
        Value::Number(n) => *v = Value::String(n.to_string()),
        Value::Bool(b) => *v = Value::String(b.to_string()),
        _ => {}
    };
    if let Some(config) = v.get_mut("config").and_then(Value::as_object_mut) {
        config.values_mut().for_each(as_string);
    }
    if let Some(devices) = v.get_mut("devices").and_then(Value::as_object_mut) {
        for device in devices.values_mut().filter_map(Value::as_object_mut) {
            device.values_mut().for_each(as_string);
        }
    }
}

/// Read YAML text as `T`, refusing what is not a mapping or does not fit `T`'s fields.
pub fn parse<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    let mut v: Value = serde_norway::from_str(text)?;
    if v.is_null() {
        v = Value::Object(Default::default());
    }
    if !v.is_object() {
        bail!("expected a YAML mapping of the object's fields");
    }
    match rxd_api::from_value(v.clone()) {
        Ok(value) => Ok(value),
        Err(_) => {
            stringify_maps(&mut v);
            Ok(rxd_api::from_value(v)?)
        }
    }
}

/// The editor `lxc` would start: `$VISUAL`, `$EDITOR`, else the first of `editor`, `vi`,
/// `emacs`, `nano` on the `PATH`.
fn editor() -> anyhow::Result<Vec<String>> {
    for var in ["VISUAL", "EDITOR"] {
        if let Some(e) = std::env::var(var).ok().filter(|e| !e.trim().is_empty()) {
            return Ok(e.split_whitespace().map(str::to_owned).collect());
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["editor", "vi", "emacs", "nano"] {
        if std::env::split_paths(&path).any(|dir| dir.join(name).is_file()) {
            return Ok(vec![name.to_owned()]);
        }
    }
    bail!("No text editor found, please set the EDITOR environment variable")
}

/// Let the user edit `text` and return what they saved.
fn run_editor(text: &str) -> anyhow::Result<String> {
    let saved = run_editor_on(text.as_bytes(), ".yaml")?;
    String::from_utf8(saved).context("the edited file is not UTF-8")
}

/// Let the user edit any bytes (`rxc file edit`) and return what they saved.
pub fn edit_text(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    run_editor_on(bytes, "")
}

fn run_editor_on(bytes: &[u8], suffix: &str) -> anyhow::Result<Vec<u8>> {
    let mut file = tempfile::Builder::new()
        .prefix("rxc_editor_")
        .suffix(suffix)
        .tempfile()?;
    file.write_all(bytes)?;
    file.flush()?;
    let editor = editor()?;
    let status = std::process::Command::new(&editor[0])
        .args(&editor[1..])
        .arg(file.path())
        .status()
        .with_context(|| format!("starting the editor {}", editor[0]))?;
    if !status.success() {
        bail!("the editor {} failed ({status})", editor[0]);
    }
    std::fs::read(file.path()).context("reading the edited file back")
}

/// Edit `current` (YAML) as `T` and hand the result to `apply`, which sends it (with the ETag
/// when `interactive`).
pub async fn edit<T, F, Fut>(header: &str, current: &str, mut apply: F) -> anyhow::Result<()>
where
    T: DeserializeOwned,
    F: FnMut(T, bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        let value = parse(&text).context("the YAML on standard input does not read")?;
        return apply(value, false).await;
    }
    let mut text = if header.is_empty() {
        current.to_owned()
    } else {
        format!("{header}\n\n{current}")
    };
    loop {
        text = run_editor(&text)?;
        let result = match parse::<T>(&text) {
            Ok(value) => apply(value, true).await,
            Err(e) => Err(e),
        };
        let Err(e) = result else {
            return Ok(());
        };
        eprintln!("Config parsing error: {e:#}");
        outln!("Press enter to open the editor again or ctrl+c to abort change")?;
        let mut byte = [0u8; 1];
        if std::io::stdin().read(&mut byte)? == 0 {
            bail!("aborted: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rxd_api::instance::InstancePut;

    #[test]
    fn yaml_reads_as_go_reads_it() {
        let put: InstancePut =
            parse("config:\n  limits.cpu: 2\n  user.on: true\nephemeral: false\n# a comment\n")
                .unwrap();
        let config = put.config.unwrap();
        assert_eq!(config["limits.cpu"], "2");
        assert_eq!(config["user.on"], "true");
        assert_eq!(put.ephemeral, Some(false));
        assert!(parse::<InstancePut>("just words").is_err());
        assert!(parse::<InstancePut>("config: [1, 2]").is_err());
        assert!(parse::<InstancePut>("config:\n  a: [\n").is_err());
        assert_eq!(parse::<InstancePut>("").unwrap(), InstancePut::default());
        let server: rxd_api::server::ServerPut =
            parse("config:\n  core.trust_password: true\n").unwrap();
        assert_eq!(server.config["core.trust_password"], Value::Bool(true));
    }
}
