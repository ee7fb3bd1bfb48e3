//! An image's templates (`metadata.yaml` `templates:`), rendered as LXD renders them for a
//! trigger (`create`, `copy`, `start`): pongo2-style syntax by `minijinja`, with LXD's context
//! (`trigger`, `path`, `container`/`instance`, `config`, `devices`, `properties`,
//! `config_get`). Templates come from the image and are untrusted: bounded in size, in work
//! (fuel) and in output; nothing is loaded from anywhere but the image's own `templates/`, and
//! writing the result into the root filesystem is the caller's (through `rootfs`, confined).

use crate::{ImageError, ImageMetadata};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Largest template file read.
pub const MAX_TEMPLATE: u64 = 64 * 1024;
/// Largest rendered output.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Work a template may do (minijinja's fuel: roughly one unit per instruction).
const FUEL: u64 = 1_000_000;
/// Largest `metadata.yaml` read back from an instance's directory.
const MAX_METADATA: u64 = 256 * 1024;

/// The instance a template is rendered for.
pub struct Instance<'a> {
    pub name: &'a str,
    pub architecture: &'a str,
    pub ephemeral: bool,
    pub privileged: bool,
    /// The expanded config (`config_get` reads it).
    pub config: &'a BTreeMap<String, String>,
}

/// One file to write: where inside the root filesystem, what, and whether an existing file
/// is to be left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub path: String,
    pub content: String,
    pub create_only: bool,
}

/// The `metadata.yaml` unpacked in an instance's directory (none: an image without one).
pub fn instance_metadata(dir: &Path) -> Result<Option<ImageMetadata>, ImageError> {
    let path = dir.join("metadata.yaml");
    let file = match open_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ImageError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let mut text = String::new();
    file.take(MAX_METADATA)
        .read_to_string(&mut text)
        .map_err(|source| ImageError::Io {
            path: path.display().to_string(),
            source,
        })?;
    crate::parse_metadata(&text).map(Some)
}

fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn bad(name: &str, reason: impl std::fmt::Display) -> ImageError {
    ImageError::Template(format!("template {name}: {reason}"))
}

/// Render every template of `metadata` whose `when` holds `trigger`, reading the template files
/// from `dir/templates/`. Paths are as the image gives them (absolute, inside the container).
pub fn render(
    dir: &Path,
    metadata: &ImageMetadata,
    trigger: &str,
    instance: &Instance<'_>,
) -> Result<Vec<Rendered>, ImageError> {
    let mut out = Vec::new();
    for (path, t) in &metadata.templates {
        if !t.when.iter().any(|w| w == trigger) {
            continue;
        }
        let name = t.template.as_str();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(bad(name, "must be a file name inside templates/"));
        }
        if !path.starts_with('/') {
            return Err(bad(
                name,
                format!("target {path:?} is not an absolute path"),
            ));
        }
        let file = dir.join("templates").join(name);
        let mut source = String::new();
        let read = open_nofollow(&file).and_then(|f| {
            let n = f.take(MAX_TEMPLATE + 1).read_to_string(&mut source)?;
            Ok(n)
        });
        match read {
            Ok(n) if n as u64 > MAX_TEMPLATE => {
                return Err(bad(name, format!("larger than {MAX_TEMPLATE} bytes")))
            }
            Ok(_) => {}
            Err(e) => return Err(bad(name, e)),
        }
        let content = render_one(name, &source, trigger, path, &t.properties, instance)?;
        out.push(Rendered {
            path: path.clone(),
            content,
            create_only: t.create_only,
        });
    }
    Ok(out)
}

/// Render one template's text.
pub fn render_one(
    name: &str,
    source: &str,
    trigger: &str,
    path: &str,
    properties: &BTreeMap<String, String>,
    instance: &Instance<'_>,
) -> Result<String, ImageError> {
    let mut env = minijinja::Environment::new();
    // As pongo2 (LXD): a trailing newline is kept, nothing is escaped, a missing value is empty.
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.set_fuel(Some(FUEL));
    let config = instance.config.clone();
    env.add_function(
        "config_get",
        move |key: String, default: minijinja::Value| -> minijinja::Value {
            match config.get(&key) {
                Some(v) => minijinja::Value::from(v.trim_end_matches(['\r', '\n']).to_owned()),
                None => default,
            }
        },
    );
    let ctx = minijinja::context! {
        trigger => trigger,
        path => path,
        container => minijinja::context! {
            name => instance.name,
            type => "container",
            architecture => instance.architecture,
            ephemeral => instance.ephemeral.to_string(),
            privileged => instance.privileged.to_string(),
        },
        instance => minijinja::context! {
            name => instance.name,
            type => "container",
            architecture => instance.architecture,
            ephemeral => instance.ephemeral.to_string(),
            privileged => instance.privileged.to_string(),
        },
        config => instance.config,
        devices => BTreeMap::<String, String>::new(),
        properties => properties,
    };
    let rendered = env.render_str(source, ctx).map_err(|e| bad(name, e))?;
    if rendered.len() > MAX_OUTPUT {
        return Err(bad(
            name,
            format!("renders to more than {MAX_OUTPUT} bytes"),
        ));
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(config: &BTreeMap<String, String>) -> Instance<'_> {
        Instance {
            name: "c1",
            architecture: "x86_64",
            ephemeral: false,
            privileged: false,
            config,
        }
    }

    fn one(
        source: &str,
        config: &[(&str, &str)],
        props: &[(&str, &str)],
    ) -> Result<String, ImageError> {
        let config: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let props: BTreeMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        render_one(
            "t.tpl",
            source,
            "create",
            "/etc/x",
            &props,
            &instance(&config),
        )
    }

    #[test]
    fn templates_real_images_ship_render_as_lxd_renders_them() {
        assert_eq!(one("{{ container.name }}\n", &[], &[]).unwrap(), "c1\n");
        assert_eq!(
            one("127.0.1.1\t{{ container.name }}\n", &[], &[]).unwrap(),
            "127.0.1.1\tc1\n"
        );
        // distrobuilder's cloud-init user-data template.
        let user_data = "{%- if config_get(\"cloud-init.user-data\", properties.default) == properties.default -%}\n{{ config_get(\"user.user-data\", properties.default) }}\n{%- else -%}\n{{- config_get(\"cloud-init.user-data\", properties.default) }}\n{%- endif %}\n";
        let default = [("default", "#cloud-config\n{}")];
        assert_eq!(
            one(user_data, &[], &default).unwrap(),
            "#cloud-config\n{}\n"
        );
        assert_eq!(
            one(
                user_data,
                &[("user.user-data", "#cloud-config\nx: 1\r\n")],
                &default
            )
            .unwrap(),
            "#cloud-config\nx: 1\n"
        );
        assert_eq!(
            one(
                user_data,
                &[("cloud-init.user-data", "#cloud-config\ny: 2")],
                &default
            )
            .unwrap(),
            "#cloud-config\ny: 2\n"
        );
        // Nothing escaped; a missing value is empty; the context LXD gives.
        assert_eq!(one("{{ '<&>' }}{{ nothing }}", &[], &[]).unwrap(), "<&>");
        assert_eq!(
            one(
                "{{ instance.type }} {{ container.privileged }} {{ trigger }} {{ path }}",
                &[],
                &[]
            )
            .unwrap(),
            "container false create /etc/x"
        );
        assert_eq!(
            one("{{ config['user.a'] }}", &[("user.a", "b")], &[]).unwrap(),
            "b"
        );
    }

    #[test]
    fn hostile_templates_are_bounded() {
        // Endless work runs out of fuel; output and includes are refused.
        assert!(one("{% for i in range(100000000) %}x{% endfor %}", &[], &[]).is_err());
        assert!(one("{% for i in range(2000000) %}{{ i }}{% endfor %}", &[], &[]).is_err());
        assert!(one("{% include '/etc/shadow' %}", &[], &[]).is_err());
        assert!(one("{{ unclosed", &[], &[]).is_err());
    }
}
