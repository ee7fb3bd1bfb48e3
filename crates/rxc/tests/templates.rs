//! Image templates (`metadata.yaml` `templates:`) applied as LXD applies them: `create`
//! templates at the first start, `start` templates at every start, `create_only` files left
//! alone, new files owned by the container's root, and every write confined to the root
//! filesystem whatever links the image planted.

use rxd_testkit::{bin, busybox_image, require_root, TestDaemon};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tar(args: &[&str]) {
    let out = Command::new("tar").args(args).output().unwrap();
    assert!(out.status.success(), "tar {args:?}: {out:?}");
}

/// The busybox image with templates (and `extra` written into metadata.yaml's `templates:`).
/// Its `/escape` is a link to the host's `/tmp` as seen from outside the root filesystem, and a
/// template writes `planted` through it.
fn templated_image(dir: &Path, planted: &str, extra: &str) -> PathBuf {
    let unified = dir.join("bb.tar.gz");
    busybox_image(&unified);
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    tar(&[
        "-C",
        tree.to_str().unwrap(),
        "-xzf",
        unified.to_str().unwrap(),
    ]);
    let meta = tree.join("metadata.yaml");
    let mut text = std::fs::read_to_string(&meta).unwrap();
    text.push_str(&format!(
        r#"templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/motd:
    when: [start]
    template: motd.tpl
    properties:
      default: none
  /etc/keep:
    when: [create]
    create_only: true
    template: hostname.tpl
  /var/lib/cloud/seed/nocloud-net/user-data:
    when: [create, copy]
    template: user-data.tpl
    properties:
      default: |
        #cloud-config
        {{}}
  /escape/{planted}:
    when: [create]
    template: hostname.tpl
{extra}"#
    ));
    std::fs::write(&meta, text).unwrap();
    let templates = tree.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("hostname.tpl"), "{{ container.name }}\n").unwrap();
    std::fs::write(
        templates.join("motd.tpl"),
        "{{ config_get(\"user.motd\", properties.default) }} {{ trigger }}\n",
    )
    .unwrap();
    // distrobuilder's cloud-init user-data template.
    std::fs::write(
        templates.join("user-data.tpl"),
        "{%- if config_get(\"cloud-init.user-data\", properties.default) == properties.default -%}\n{{ config_get(\"user.user-data\", properties.default) }}\n{%- else -%}\n{{- config_get(\"cloud-init.user-data\", properties.default) }}\n{%- endif %}\n",
    )
    .unwrap();
    std::fs::write(templates.join("bad.tpl"), "{{ unclosed\n").unwrap();
    std::fs::write(tree.join("rootfs/etc/keep"), "original\n").unwrap();
    // A link the image plants to lead a host-side write out of the root filesystem.
    std::os::unix::fs::symlink("/../../../../../../../tmp", tree.join("rootfs/escape")).unwrap();
    let out = dir.join("templated.tar.gz");
    tar(&[
        "--numeric-owner",
        "--owner=0",
        "--group=0",
        "-C",
        tree.to_str().unwrap(),
        "-czf",
        out.to_str().unwrap(),
        "metadata.yaml",
        "rootfs",
        "templates",
    ]);
    out
}

struct Rxc<'a> {
    conf: &'a Path,
    d: &'a TestDaemon,
}

impl Rxc<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin("rxc"))
            .args(args)
            .env("RXC_CONF", self.conf)
            .env("RXD_DIR", self.d.dir())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        rxd_testkit::succeeded(args, self.run(args))
    }

    fn cat(&self, name: &str, path: &str) -> String {
        self.ok(&["exec", name, "--", "cat", path])
    }
}

#[tokio::test]
async fn image_templates_are_applied_at_create_and_start() {
    if !require_root("image_templates_are_applied_at_create_and_start") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let planted = format!("rxd-template-planted-{}", std::process::id());
    let image = templated_image(work.path(), &planted, "");
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let rxc = Rxc {
        conf: conf.path(),
        d: &d,
    };
    rxc.ok(&["image", "import", image.to_str().unwrap(), "--alias", "t"]);
    rxc.ok(&[
        "launch",
        "t",
        "c1",
        "-c",
        "user.motd=hello",
        "-c",
        "user.user-data=#cloud-config\nx: 1",
    ]);
    assert_eq!(rxc.cat("c1", "/etc/hostname"), "c1\n");
    assert_eq!(rxc.cat("c1", "/etc/motd"), "hello start\n");
    assert_eq!(rxc.cat("c1", "/etc/keep"), "original\n", "create_only");
    assert_eq!(
        rxc.cat("c1", "/var/lib/cloud/seed/nocloud-net/user-data"),
        "#cloud-config\nx: 1\n"
    );
    // Owned by the container's root; the directories made for it 0755.
    assert_eq!(
        rxc.ok(&[
            "exec",
            "c1",
            "--",
            "stat",
            "-c",
            "%u %a",
            "/var/lib/cloud/seed/nocloud-net/user-data",
            "/var/lib/cloud"
        ]),
        "0 644\n0 755\n"
    );
    // The planted link was resolved inside the root filesystem: nothing written on the host.
    assert!(
        !Path::new("/tmp").join(&planted).exists(),
        "a template was written outside the container"
    );
    assert_eq!(rxc.cat("c1", &format!("/tmp/{planted}")), "c1\n");
    assert_eq!(
        rxc.ok(&["config", "get", "c1", "volatile.apply_template"])
            .trim(),
        ""
    );

    // create templates run once; start templates at every start, with the config of then.
    rxc.ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "echo changed > /etc/hostname",
    ]);
    rxc.ok(&["config", "set", "c1", "user.motd", "bye"]);
    rxc.ok(&["restart", "c1", "--force"]);
    assert_eq!(rxc.cat("c1", "/etc/hostname"), "changed\n");
    assert_eq!(rxc.cat("c1", "/etc/motd"), "bye start\n");
    rxc.ok(&["delete", "--force", "c1"]);

    // cloud-init.* keys win over user.* in distrobuilder's template.
    rxc.ok(&[
        "launch",
        "t",
        "c2",
        "-c",
        "user.user-data=#cloud-config\nx: 1",
        "-c",
        "cloud-init.user-data=#cloud-config\ny: 2",
    ]);
    assert_eq!(
        rxc.cat("c2", "/var/lib/cloud/seed/nocloud-net/user-data"),
        "#cloud-config\ny: 2\n"
    );
    rxc.ok(&["delete", "--force", "c2"]);
}

#[tokio::test]
async fn a_broken_template_fails_the_start_saying_which() {
    if !require_root("a_broken_template_fails_the_start_saying_which") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = templated_image(
        work.path(),
        "planted",
        "  /etc/broken:\n    when: [start]\n    template: bad.tpl\n",
    );
    let d = TestDaemon::start().await;
    let conf = tempfile::tempdir().unwrap();
    let rxc = Rxc {
        conf: conf.path(),
        d: &d,
    };
    rxc.ok(&["image", "import", image.to_str().unwrap(), "--alias", "t"]);
    rxc.ok(&["init", "t", "c1"]);
    let out = rxc.run(&["start", "c1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("template bad.tpl"),
        "{err}"
    );
}
