//! The index (`streams/v1/index.json`) and products files, as LXD 5.0 reads them
//! (`shared/simplestreams`): which images exist, their aliases, fingerprints and files.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub index: BTreeMap<String, IndexEntry>,
}

#[derive(Deserialize)]
pub(crate) struct IndexEntry {
    #[serde(default)]
    pub datatype: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub products: Vec<String>,
}

impl Index {
    /// The products files to read: entries of datatype `image-downloads` naming products.
    pub fn product_paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self
            .index
            .values()
            .filter(|e| e.datatype == "image-downloads" && !e.products.is_empty())
            .map(|e| e.path.as_str())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }
}

#[derive(Deserialize)]
pub(crate) struct Products {
    #[serde(default)]
    pub products: BTreeMap<String, Product>,
}

#[derive(Deserialize)]
pub(crate) struct Product {
    #[serde(default)]
    aliases: String,
    #[serde(default)]
    arch: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    release: String,
    #[serde(default)]
    release_title: String,
    #[serde(default)]
    variant: String,
    #[serde(default)]
    versions: BTreeMap<String, Version>,
}

#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    label: String,
    #[serde(default)]
    items: BTreeMap<String, Item>,
}

#[derive(Deserialize, Clone)]
struct Item {
    #[serde(default)]
    ftype: String,
    #[serde(default)]
    path: String,
    sha256: Option<String>,
    size: Option<u64>,
    combined_rootxz_sha256: Option<String>,
    combined_squashfs_sha256: Option<String>,
    combined_sha256: Option<String>,
}

/// One file of an image on the server: where, and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the server's root.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// An image on the server, as the daemon records it once pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    pub fingerprint: String,
    /// The kernel's name (`x86_64`).
    pub architecture: String,
    /// The product's aliases (`debian/12`); each also answers with `/<arch>` appended
    /// (`debian/12/amd64`), for any host.
    pub aliases: Vec<String>,
    pub properties: BTreeMap<String, String>,
    /// Unix seconds, from the serial's date.
    pub created_at: i64,
    /// A unified image's only file, or a split image's metadata tarball.
    pub meta: File,
    /// A split image's root filesystem tarball.
    pub rootfs: Option<File>,
    pub serial: String,
}

impl RemoteImage {
    /// Whether `name` is one of its aliases on a host of architecture `arch`: a product alias
    /// on its own architecture, or the alias with its architecture appended on any.
    pub fn answers_to(&self, name: &str, arch: &str) -> bool {
        let product_arch = self
            .properties
            .get("architecture")
            .map_or("", String::as_str);
        self.aliases.iter().any(|a| {
            (a == name && self.architecture == arch)
                || name
                    .strip_prefix(a.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    == Some(product_arch)
        })
    }

    pub fn size(&self) -> u64 {
        self.meta.size + self.rootfs.as_ref().map_or(0, |r| r.size)
    }

    /// The name LXD gives it: the basename of its metadata (or only) file.
    pub fn filename(&self) -> String {
        self.meta
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

/// LXD's architecture names in simplestreams, and the kernel's.
fn kernel_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "armhf" => "armv7l",
        "i386" => "i686",
        "ppc64el" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        _ => return None,
    })
}

/// Days since the epoch of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A serial's date (`20261201_04:05` → 2026-12-01), as Unix seconds; none if it has none.
fn serial_date(serial: &str) -> Option<i64> {
    let digits = serial.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        digits[..4].parse().ok()?,
        digits[4..6].parse().ok()?,
        digits[6..].parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400)
}

fn file(item: &Item) -> Option<File> {
    Some(File {
        path: item.path.clone(),
        sha256: item.sha256.clone()?.to_ascii_lowercase(),
        size: item.size?,
    })
}

/// Every container image the products files list, for any architecture.
#[derive(Debug, Default)]
pub struct Catalog {
    pub images: Vec<RemoteImage>,
}

impl Catalog {
    pub(crate) fn add(&mut self, products: Products) {
        for product in products.products.into_values() {
            let Some(architecture) = kernel_arch(&product.arch) else {
                continue;
            };
            for (serial, version) in &product.versions {
                let Some(created_at) = serial_date(serial) else {
                    continue;
                };
                let items: Vec<&Item> = version.items.values().collect();
                let mut found = Vec::new();
                for meta in items.iter().filter(|i| i.ftype == "lxd.tar.xz") {
                    // Squashfs first: an alias names the first image of the newest serial, and
                    // LXD prefers squashfs to a root tarball.
                    for root in items.iter().filter(|i| i.ftype == "squashfs") {
                        if let (Some(fp), Some(m), Some(r)) = (
                            meta.combined_squashfs_sha256.clone(),
                            file(meta),
                            file(root),
                        ) {
                            found.push((fp, m, Some(r), "squashfs"));
                        }
                    }
                    for root in items.iter().filter(|i| i.ftype == "root.tar.xz") {
                        let fp = meta
                            .combined_rootxz_sha256
                            .clone()
                            .or_else(|| meta.combined_sha256.clone());
                        if let (Some(fp), Some(m), Some(r)) = (fp, file(meta), file(root)) {
                            found.push((fp, m, Some(r), "root.tar.xz"));
                        }
                    }
                }
                for unified in items.iter().filter(|i| i.ftype == "lxd_combined.tar.gz") {
                    if let Some(f) = file(unified) {
                        found.push((f.sha256.clone(), f, None, "combined"));
                    }
                }
                for (fingerprint, meta, rootfs, kind) in found {
                    let mut properties = BTreeMap::new();
                    for (k, v) in [
                        ("os", product.os.as_str()),
                        ("release", product.release.as_str()),
                        ("architecture", product.arch.as_str()),
                        ("label", version.label.as_str()),
                        ("serial", serial.as_str()),
                        ("variant", product.variant.as_str()),
                        ("type", kind),
                    ] {
                        if !v.is_empty() {
                            properties.insert(k.to_owned(), v.to_owned());
                        }
                    }
                    let label = if version.label.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", version.label)
                    };
                    properties.insert(
                        "description".into(),
                        format!(
                            "{} {} {}{label} ({serial})",
                            product.os, product.release_title, product.arch
                        ),
                    );
                    let aliases = product
                        .aliases
                        .split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect();
                    self.images.push(RemoteImage {
                        fingerprint: fingerprint.to_ascii_lowercase(),
                        architecture: architecture.to_owned(),
                        aliases,
                        properties,
                        created_at,
                        meta,
                        rootfs,
                        serial: serial.clone(),
                    });
                }
            }
        }
    }

    /// The image `name` means on a host of architecture `arch` (kernel name): an alias (the
    /// newest serial wins, this architecture only unless the alias names one), else a
    /// fingerprint or an unambiguous prefix of one.
    pub fn resolve(&self, name: &str, arch: &str) -> Result<&RemoteImage, crate::StreamsError> {
        let mut by_alias: Vec<&RemoteImage> = self
            .images
            .iter()
            .filter(|i| i.answers_to(name, arch))
            .collect();
        by_alias.sort_by(|a, b| b.serial.cmp(&a.serial));
        if let Some(image) = by_alias.first() {
            return Ok(image);
        }
        let name = name.to_ascii_lowercase();
        let hex = !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit());
        let mut by_fp: Vec<&RemoteImage> = if hex {
            self.images
                .iter()
                .filter(|i| i.fingerprint.starts_with(&name))
                .collect()
        } else {
            Vec::new()
        };
        by_fp.dedup_by(|a, b| a.fingerprint == b.fingerprint);
        match by_fp.len() {
            0 => Err(crate::StreamsError::NotFound(name)),
            1 => Ok(by_fp[0]),
            _ => Err(crate::StreamsError::Ambiguous(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn products(json: &str) -> Catalog {
        let mut c = Catalog::default();
        c.add(serde_json::from_str(json).unwrap());
        c
    }

    const TWO_SERIALS: &str = r#"{"products": {
      "debian:12:amd64:default": {"aliases": "debian/12/default,debian/12", "arch": "amd64",
        "os": "Debian", "release": "bookworm", "release_title": "12", "variant": "default",
        "versions": {
          "20261130_05:24": {"items": {
            "lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "images/old/lxd.tar.xz", "sha256": "aa", "size": 10,
              "combined_rootxz_sha256": "1111"},
            "root.tar.xz": {"ftype": "root.tar.xz", "path": "images/old/root.tar.xz", "sha256": "bb", "size": 20}}},
          "20261201_05:24": {"label": "new", "items": {
            "lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "images/new/lxd.tar.xz", "sha256": "cc", "size": 10,
              "combined_rootxz_sha256": "2222", "combined_squashfs_sha256": "3333"},
            "root.tar.xz": {"ftype": "root.tar.xz", "path": "images/new/root.tar.xz", "sha256": "DD", "size": 30},
            "root.squashfs": {"ftype": "squashfs", "path": "images/new/root.squashfs", "sha256": "ee", "size": 5}}},
          "not-a-date": {"items": {
            "u": {"ftype": "lxd_combined.tar.gz", "path": "u.tar.gz", "sha256": "ff", "size": 1}}}
        }},
      "debian:12:arm64:default": {"aliases": "debian/12", "arch": "arm64",
        "versions": {"20261202_00:00": {"items": {
          "u": {"ftype": "lxd_combined.tar.gz", "path": "arm.tar.gz", "sha256": "4444", "size": 7}}}}},
      "vm:amd64": {"aliases": "vm", "arch": "amd64", "versions": {"20261202": {"items": {
          "m": {"ftype": "lxd.tar.xz", "path": "m", "sha256": "55", "size": 1, "combined_disk-kvm-img_sha256": "66"},
          "d": {"ftype": "disk-kvm.img", "path": "d", "sha256": "77", "size": 1}}}}},
      "odd:amd64": {"aliases": "odd", "arch": "sparc", "versions": {}}
    }}"#;

    #[test]
    fn aliases_resolve_to_the_newest_serial_for_this_architecture() {
        let c = products(TWO_SERIALS);
        // The squashfs variant of the newest serial.
        let sq = c.resolve("debian/12", "x86_64").unwrap();
        assert_eq!(sq.fingerprint, "3333");
        assert_eq!(sq.properties["type"], "squashfs");
        assert_eq!(sq.rootfs.as_ref().unwrap().path, "images/new/root.squashfs");
        assert_eq!(sq.size(), 15);
        // The tarball variant, by its fingerprint.
        let img = c.resolve("2222", "x86_64").unwrap();
        assert_eq!(img.fingerprint, "2222");
        assert_eq!(img.serial, "20261201_05:24");
        assert_eq!(img.created_at, 1_796_083_200); // 2026-12-01
        assert_eq!(img.rootfs.as_ref().unwrap().sha256, "dd");
        assert_eq!(img.size(), 40);
        assert_eq!(img.filename(), "lxd.tar.xz");
        assert_eq!(
            img.properties["description"],
            "Debian 12 amd64 (new) (20261201_05:24)"
        );
        assert_eq!(img.properties["type"], "root.tar.xz");
        // Another architecture by its suffixed alias; the native one otherwise.
        assert_eq!(
            c.resolve("debian/12/arm64", "x86_64").unwrap().fingerprint,
            "4444"
        );
        assert_eq!(
            c.resolve("debian/12", "aarch64").unwrap().fingerprint,
            "4444"
        );
        assert_eq!(
            c.resolve("debian/12/default/amd64", "x86_64")
                .unwrap()
                .fingerprint,
            "3333"
        );
        // Fingerprints and prefixes; the older serial stays reachable by fingerprint.
        assert_eq!(
            c.resolve("1111", "x86_64").unwrap().serial,
            "20261130_05:24"
        );
        assert_eq!(c.resolve("22", "x86_64").unwrap().fingerprint, "2222");
        assert!(matches!(
            c.resolve("nothing", "x86_64"),
            Err(crate::StreamsError::NotFound(_))
        ));
        // Virtual machines, unknown architectures and serials without a date are not listed.
        assert!(c.resolve("vm", "x86_64").is_err());
        assert!(c.resolve("ff", "x86_64").is_err());
        assert_eq!(c.images.len(), 4);
    }

    #[test]
    fn items_without_a_hash_or_size_are_not_offered() {
        let c = products(
            r#"{"products": {"p": {"aliases": "a", "arch": "amd64", "versions": {"20260101": {"items": {
            "u": {"ftype": "lxd_combined.tar.gz", "path": "u", "size": 1}}}}}}}"#,
        );
        assert!(c.images.is_empty());
    }
}
