//! `rxc image ...`: import with a progress bar, list, show, delete, and aliases.

use crate::cli::{AliasCmd, ImageCmd};
use crate::connect::{open, remote_name, split_target, Conn};
use crate::output::{column, print_list, yes_no};
use anyhow::{anyhow, bail, Context};
use rxd_api::image::{
    Image, ImageAliasesEntry, ImageAliasesEntryPost, ImagePut, ImageUploadMetadata,
};
use rxd_api::operation::Operation;
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use std::sync::Arc;

pub async fn run(conf: &ConfigDir, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Import {
            args,
            alias,
            public,
        } => {
            // As `lxc image import`: a last argument ending in `:` names the server.
            let (files, remote) = match args.split_last() {
                Some((last, rest)) if last.ends_with(':') => (rest, Some(last.as_str())),
                _ => (args.as_slice(), None),
            };
            match files {
                [file] => import(conf, file, None, remote, &alias, public).await,
                [meta, rootfs] => import(conf, meta, Some(rootfs), remote, &alias, public).await,
                _ => bail!("usage: rxc image import FILE [ROOTFS] [REMOTE:]"),
            }
        }
        ImageCmd::Copy {
            image,
            target,
            alias,
            auto_update,
            public,
        } => copy(conf, &image, target.as_deref(), alias, auto_update, public).await,
        ImageCmd::List { remote, format } => {
            let name = remote_name(conf, remote.as_deref());
            let items: Vec<Image> = match conf.remote(&name)? {
                r if r.protocol == "simplestreams" => server_images(&r.addr).await?,
                _ => open(conf, &name)?.get_as("/1.0/images?recursion=1").await?,
            };
            let columns = [
                column("ALIAS", |v: &Image| {
                    v.aliases
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                }),
                column("FINGERPRINT", |v: &Image| {
                    v.fingerprint.chars().take(12).collect()
                }),
                column("PUBLIC", |v: &Image| yes_no(v.public)),
                column("DESCRIPTION", |v: &Image| {
                    v.properties.get("description").cloned().unwrap_or_default()
                }),
                column("ARCHITECTURE", |v: &Image| v.architecture.clone()),
                column("TYPE", |v: &Image| v.kind.clone()),
                column("SIZE", |v: &Image| {
                    format!("{:.2}MiB", v.size as f64 / 1048576.0)
                }),
                column("UPLOAD DATE", |v: &Image| v.uploaded_at.clone()),
            ];
            print_list(format.format, &items, &columns)
        }
        ImageCmd::Show { image } => {
            let (conn, fp) = resolve(conf, &image).await?;
            let v: Image = conn.get_as(&format!("/1.0/images/{fp}")).await?;
            out!("{}", serde_norway::to_string(&v)?)?;
            Ok(())
        }
        ImageCmd::Info { image } => {
            let (conn, fp) = resolve(conf, &image).await?;
            let v: Image = conn.get_as(&format!("/1.0/images/{fp}")).await?;
            info(&v)
        }
        ImageCmd::Edit { image } => {
            let (conn, fp) = resolve(conf, &image).await?;
            let path = format!("/1.0/images/{fp}");
            let v: Image = conn.get_as(&path).await?;
            let current = ImagePut {
                auto_update: Some(v.auto_update),
                properties: Some(v.properties),
                public: Some(v.public),
                expires_at: Some(v.expires_at),
                profiles: Some(v.profiles),
            };
            let (conn, path) = (&conn, &path);
            crate::edit::edit(
                IMAGE_EDIT_HELP,
                &serde_norway::to_string(&current)?,
                |new: ImagePut, _| async move { crate::edit::put(conn, path, &new, None).await },
            )
            .await
        }
        ImageCmd::Delete { image } => {
            let (conn, fp) = resolve(conf, &image).await?;
            let op = conn
                .call_as(Method::DELETE, &format!("/1.0/images/{fp}"))
                .await?;
            wait(&conn, &op).await.map(drop)
        }
        ImageCmd::Alias(cmd) => alias(conf, cmd).await,
        ImageCmd::Export { image, target } => export(conf, &image, target.as_deref()).await,
    }
}

/// `rxc image export`: `GET /1.0/images/<fp>/export`, one file (a unified image) or two (a
/// split image's metadata tarball and root filesystem, sent as multipart), named as the server
/// names them in a directory, else TARGET (and TARGET.root), as `lxc image export` does.
async fn export(conf: &ConfigDir, image: &str, target: Option<&str>) -> anyhow::Result<()> {
    let (conn, fp) = resolve(conf, image).await?;
    let (report, bar) = crate::output::download_bar("Exporting the image".into());
    let reply = conn
        .client
        .download(&format!("/1.0/images/{fp}/export"), report)
        .await;
    crate::output::download_done(&bar);
    let reply = reply.map_err(|e| conn.explain(e))?;
    if reply.status != 200 {
        let err = reply
            .envelope()
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("HTTP {}", reply.status));
        anyhow::bail!("{err}");
    }
    let target = std::path::PathBuf::from(target.unwrap_or("."));
    let content_type = reply.header("content-type").unwrap_or_default().to_owned();
    // A TARGET that is not a directory names the file (the metadata tarball of a split image;
    // its root filesystem is TARGET.root).
    let place = |server_name: &str, first: bool| {
        if target.is_dir() {
            target.join(server_name)
        } else if first {
            target.clone()
        } else {
            // As lxc names it.
            let mut root = target.clone().into_os_string();
            root.push(".root");
            root.into()
        }
    };
    if let Some(boundary) = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split("boundary=").nth(1))
    {
        let body = reply.body.clone();
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut parts = multer::Multipart::new(stream, boundary.trim_matches('"'));
        let mut first = true;
        while let Some(part) = parts.next_field().await? {
            let name = safe_name(part.file_name().unwrap_or("image"))?;
            let bytes = part.bytes().await?;
            write_new(&place(&name, first), &bytes)?;
            first = false;
        }
    } else {
        let name = reply
            .header("content-disposition")
            .and_then(|d| d.split("filename=").nth(1))
            .map(|n| n.trim_matches('"').to_owned())
            .unwrap_or_else(|| format!("{fp}.tar.gz"));
        write_new(&place(&safe_name(&name)?, true), &reply.body)?;
    }
    outln!("Image exported successfully!")?;
    Ok(())
}

/// A file name the server chose, as one plain component.
fn safe_name(name: &str) -> anyhow::Result<String> {
    let base = std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "..")
        .ok_or_else(|| anyhow::anyhow!("the server sent an unusable file name {name:?}"))?;
    Ok(base.to_owned())
}

fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `[REMOTE:]ALIAS_OR_FINGERPRINT` to a connection and a fingerprint (prefix).
/// What `lxc image edit` shows above an image's YAML.
const IMAGE_EDIT_HELP: &str = "### This is a YAML representation of the image properties.
### Any line starting with a '# will be ignored.
###
### Each property is represented by a single line:
### An example would be:
###  description: My custom image";

/// `rxc image info`: `lxc image info`'s lines (properties in key order).
fn info(v: &Image) -> anyhow::Result<()> {
    use crate::list::{any_date, date};
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    outln!("Fingerprint: {}", v.fingerprint)?;
    outln!("Size: {:.2}MB", v.size as f64 / 1024.0 / 1024.0)?;
    outln!("Architecture: {}", v.architecture)?;
    outln!(
        "Type: {}",
        if v.kind.is_empty() {
            "container"
        } else {
            &v.kind
        }
    )?;
    outln!("Public: {}", yes_no(v.public))?;
    outln!("Timestamps:")?;
    if !date(&v.created_at).is_empty() {
        outln!("    Created: {}", date(&v.created_at))?;
    }
    outln!("    Uploaded: {}", any_date(&v.uploaded_at))?;
    match date(&v.expires_at) {
        d if d.is_empty() => outln!("    Expires: never")?,
        d => outln!("    Expires: {d}")?,
    }
    match date(&v.last_used_at) {
        d if d.is_empty() => outln!("    Last used: never")?,
        d => outln!("    Last used: {d}")?,
    }
    outln!("Properties:")?;
    for (key, value) in &v.properties {
        outln!("    {key}: {value}")?;
    }
    outln!("Aliases:")?;
    for alias in &v.aliases {
        match alias.description.as_str() {
            "" => outln!("    - {}", alias.name)?,
            d => outln!("    - {} ({d})", alias.name)?,
        }
    }
    outln!("Cached: {}", yes_no(v.cached))?;
    outln!(
        "Auto update: {}",
        if v.auto_update { "enabled" } else { "disabled" }
    )?;
    if let Some(source) = &v.update_source {
        outln!("Source:")?;
        outln!("    Server: {}", source.server)?;
        outln!("    Protocol: {}", source.protocol)?;
        outln!("    Alias: {}", source.alias)?;
    }
    if v.profiles.is_empty() {
        outln!("Profiles: []")?;
    } else {
        outln!("Profiles:")?;
        for name in &v.profiles {
            outln!("    - {name}")?;
        }
    }
    Ok(())
}

async fn resolve(conf: &ConfigDir, target: &str) -> anyhow::Result<(Conn, String)> {
    let (remote, name) = split_target(conf, target);
    let conn = open(conf, &remote)?;
    let reply = conn
        .client
        .request(Method::GET, &format!("/1.0/images/aliases/{name}"), None)
        .await
        .map_err(|e| conn.explain(e))?;
    let fp = match reply.metadata_as::<ImageAliasesEntry>() {
        Ok(alias) => alias.target,
        Err(_) => name,
    };
    Ok((conn, fp))
}

/// Wait for an operation (given as the object a 202 returned) and return its final form.
pub async fn wait(conn: &Conn, op: &Operation) -> anyhow::Result<Operation> {
    wait_id(conn, &op.id).await
}

/// Wait for the operation `id` and return its final form, or its error.
pub async fn wait_id(conn: &Conn, id: &str) -> anyhow::Result<Operation> {
    conn.wait_operation(id).await
}

async fn import(
    conf: &ConfigDir,
    file: &str,
    rootfs: Option<&str>,
    remote: Option<&str>,
    aliases: &[String],
    public: bool,
) -> anyhow::Result<()> {
    let conn = open(conf, &remote_name(conf, remote))?;
    let size_of = |f: &str| -> anyhow::Result<u64> {
        Ok(std::fs::metadata(f)
            .with_context(|| format!("reading {f}"))?
            .len())
    };
    let size = size_of(file)? + rootfs.map(size_of).transpose()?.unwrap_or(0);
    let bar = crate::output::transfer_bar("Transferring image", size);
    let progress_bar = bar.clone();
    let filename = std::path::Path::new(file)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut headers = vec![("x-lxd-filename", filename.as_str())];
    if public {
        headers.push(("x-lxd-public", "1"));
    }
    let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| progress_bar.set_position(n));
    let reply = match rootfs {
        // A split image: one multipart body, as `lxc image import META ROOTFS` sends it (the
        // server takes its filename from the root filesystem's part).
        Some(rootfs) => {
            headers.retain(|(k, _)| *k != "x-lxd-filename");
            conn.client
                .send_split_image(
                    "/1.0/images",
                    &headers,
                    std::path::Path::new(file),
                    std::path::Path::new(rootfs),
                    progress,
                )
                .await
        }
        None => {
            conn.client
                .send_file(
                    Method::POST,
                    "/1.0/images",
                    &headers,
                    std::path::Path::new(file),
                    progress,
                )
                .await
        }
    }
    .map_err(|e| conn.explain(e))?;
    bar.finish_and_clear();
    let op: Operation = reply.metadata_as().map_err(|e| anyhow!(e))?;
    let done = wait(&conn, &op).await?;
    let uploaded: ImageUploadMetadata = crate::connect::decode(done.metadata)?;
    let fp = uploaded.fingerprint;
    if fp.is_empty() {
        bail!("no fingerprint in the reply");
    }
    for name in aliases {
        let body = ImageAliasesEntry {
            name: name.clone(),
            target: fp.clone(),
            ..Default::default()
        };
        conn.send_as::<serde_json::Value>(Method::POST, "/1.0/images/aliases", &body)
            .await?;
    }
    outln!("Image imported with fingerprint: {fp}")?;
    Ok(())
}

async fn alias(conf: &ConfigDir, cmd: AliasCmd) -> anyhow::Result<()> {
    match cmd {
        AliasCmd::Create {
            name,
            fingerprint,
            description,
        } => {
            let (remote, name) = split_target(conf, &name);
            let conn = open(conf, &remote)?;
            let body = ImageAliasesEntry {
                name,
                target: fingerprint,
                description,
                ..Default::default()
            };
            conn.send_as::<serde_json::Value>(Method::POST, "/1.0/images/aliases", &body)
                .await
                .map(drop)
        }
        AliasCmd::Delete { name } => {
            let (remote, name) = split_target(conf, &name);
            open(conf, &remote)?
                .call(Method::DELETE, &format!("/1.0/images/aliases/{name}"), None)
                .await
                .map(drop)
        }
        AliasCmd::Rename { old, new } => {
            let (remote, old) = split_target(conf, &old);
            let body = ImageAliasesEntryPost { name: new };
            open(conf, &remote)?
                .send_as::<serde_json::Value>(
                    Method::POST,
                    &format!("/1.0/images/aliases/{old}"),
                    &body,
                )
                .await
                .map(drop)
        }
        AliasCmd::List { remote, format } => {
            let conn = open(conf, &remote_name(conf, remote.as_deref()))?;
            let items: Vec<ImageAliasesEntry> =
                conn.get_as("/1.0/images/aliases?recursion=1").await?;
            let columns = [
                column("ALIAS", |v: &ImageAliasesEntry| v.name.clone()),
                column("FINGERPRINT", |v: &ImageAliasesEntry| {
                    v.target.chars().take(12).collect()
                }),
                column("TYPE", |v: &ImageAliasesEntry| v.kind.clone()),
                column("DESCRIPTION", |v: &ImageAliasesEntry| v.description.clone()),
            ];
            print_list(format.format, &items, &columns)
        }
    }
}

/// An image server's images, as the image list shows a server's.
async fn server_images(url: &str) -> anyhow::Result<Vec<Image>> {
    let server = rxd_simplestreams::Server::new(url)?;
    let catalog = server.catalog().await?;
    Ok(catalog
        .images
        .iter()
        .map(|i| Image {
            aliases: i
                .aliases
                .iter()
                .map(|a| rxd_api::image::ImageAlias {
                    name: a.clone(),
                    description: String::new(),
                })
                .collect(),
            architecture: i.architecture.clone(),
            fingerprint: i.fingerprint.clone(),
            public: true,
            properties: i.properties.clone(),
            kind: "container".into(),
            size: i64::try_from(i.size()).unwrap_or(i64::MAX),
            uploaded_at: time::OffsetDateTime::from_unix_timestamp(i.created_at)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default(),
            filename: i.filename(),
            ..Default::default()
        })
        .collect())
}

/// `rxc image copy REMOTE:IMAGE [TARGET:]`: the target server pulls the image from the image
/// server (LXD's `POST /1.0/images` with a `pull` source), then gets the aliases asked for.
async fn copy(
    conf: &ConfigDir,
    image: &str,
    target: Option<&str>,
    aliases: Vec<String>,
    auto_update: bool,
    public: bool,
) -> anyhow::Result<()> {
    let (source_remote, name) = crate::connect::split_target(conf, image);
    let source = conf.remote(&source_remote)?;
    let conn = open(
        conf,
        &remote_name(conf, target.map(|t| t.trim_end_matches(':'))),
    )?;
    let source_json = if source.protocol == "simplestreams" {
        serde_json::json!({
            "type": "image",
            "mode": "pull",
            "server": source.addr,
            "protocol": "simplestreams",
            "fingerprint": name,
        })
    } else {
        // Another rxd or LXD: the target pulls as an untrusted client, so a private image
        // needs a one-time secret from the source, and the source's certificate (our pin)
        // goes along for the target to pin.
        let (src, fp) = resolve(conf, image).await?;
        let info: Image = src.get_as(&format!("/1.0/images/{fp}")).await?;
        let secret = if info.public {
            String::new()
        } else {
            let op: Operation = src
                .call_as(
                    Method::POST,
                    &format!("/1.0/images/{}/secret", info.fingerprint),
                )
                .await?;
            op.metadata["secret"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let certificate =
            std::fs::read_to_string(conf.pin_path(&source_remote)).unwrap_or_default();
        serde_json::json!({
            "type": "image",
            "mode": "pull",
            "server": source.addr,
            "protocol": "lxd",
            "certificate": certificate,
            "fingerprint": info.fingerprint,
            "secret": secret,
            "project": src.project,
        })
    };
    let body = serde_json::json!({
        "source": source_json,
        "auto_update": auto_update,
        "public": public,
        "aliases": aliases.iter().map(|a| serde_json::json!({"name": a, "description": ""})).collect::<Vec<_>>(),
    });
    let op: Operation = conn.send_as(Method::POST, "/1.0/images", &body).await?;
    conn.wait_operation_showing(&op.id, "Copying the image")
        .await?;
    outln!("Image copied successfully!")?;
    Ok(())
}
