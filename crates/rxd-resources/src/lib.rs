//! The host's hardware as LXD 5.0's `GET /1.0/resources` reports it, read from `/proc`, `/sys`,
//! `/dev/disk` and udev's database, with LXD's rules for what is listed and in what order
//! (`lxd/resources/*.go`). What LXD learns from ioctls (ethtool's link modes and firmware, a
//! disk's `BLKPBSZGET`) comes from sysfs here where sysfs has it (carrier, speed, duplex,
//! `queue/physical_block_size`) and is left out where it does not; names of PCI vendors and
//! products come from `pci.ids` when the host has it (package `pci.ids`), as LXD's do.
//!
//! Everything read here is the kernel's (procfs, sysfs) or root's (`/run/udev`, `/dev/disk`
//! links), never a tree a container or a user could plant; a file that is missing or does not
//! parse leaves its field at the zero value, as a missing file does in LXD.

#![forbid(unsafe_code)]

use rxd_api::resources::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    #[error("Failed to retrieve memory information: {0}")]
    Memory(std::io::Error),
}

/// Where the host's files are: `/` on a real host; a test hands a tree of its own.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Host {
        Host::at("/")
    }
}

/// Kernel names compared as LXD's `os.ReadDir` sorts them: by bytes.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn text(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn string(p: &Path) -> String {
    text(p).unwrap_or_default()
}

fn number(p: &Path) -> Option<u64> {
    text(p)?.parse().ok()
}

/// A sysfs id such as `0x8086`, without its prefix.
fn hex_id(p: &Path) -> String {
    let s = string(p);
    s.strip_prefix("0x").unwrap_or(&s).to_owned()
}

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()?
        .file_name()?
        .to_str()
        .map(str::to_owned)
}

/// A NUMA node as LXD takes it: only a positive `numa_node` counts (-1 means none).
fn numa_node(dev: &Path) -> u64 {
    text(&dev.join("numa_node"))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|&n| n > 0)
        .map_or(0, |n| n as u64)
}

/// A cache or memory size as the kernel writes it: `48K`, `1024 kB`, `2M`.
fn byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim();
    let mult = match unit {
        "" | "B" => 1,
        "K" | "k" | "kB" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A list of CPUs in the kernel's syntax (`0-3,8`), bounded.
fn cpu_list(s: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
            if b >= a && b - a < 1 << 16 {
                out.extend(a..=b);
            }
        }
    }
    out
}

/// `uname`'s machine and release.
fn uname() -> (String, String) {
    let u = rustix::system::uname();
    (
        u.machine().to_string_lossy().into_owned(),
        u.release().to_string_lossy().into_owned(),
    )
}

impl Host {
    pub fn at(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// Everything, in LXD's order.
    pub fn resources(&self) -> Result<Resources, ResourcesError> {
        Ok(Resources {
            cpu: self.cpu(),
            memory: self.memory()?,
            gpu: self.gpu(),
            network: self.network(),
            storage: self.storage(),
            usb: self.usb(),
            pci: self.pci(),
            system: self.system(),
        })
    }

    /// Sockets, cores (by die and core id) and threads from `/sys/devices/system/cpu/cpuN`,
    /// walked in name order as LXD walks them; names and vendors from `/proc/cpuinfo`.
    pub fn cpu(&self) -> Cpu {
        let base = self.path("/sys/devices/system/cpu");
        let isolated = text(&base.join("isolated"))
            .map(|s| cpu_list(&s))
            .unwrap_or_default();
        let cpuinfo = self.cpuinfo();
        let mut sockets: Vec<CpuSocket> = Vec::new();
        let mut total = 0;
        for name in entries(&base) {
            let Some(id) = name.strip_prefix("cpu").and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            let dir = base.join(&name);
            let topo = dir.join("topology");
            if !topo.is_dir() {
                continue;
            }
            let id_of = |f: &str| {
                text(&topo.join(f))
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|&n| n >= 0)
                    .map_or(0, |n| n as u64)
            };
            let (socket_id, core_id, die) = (
                id_of("physical_package_id"),
                id_of("core_id"),
                id_of("die_id"),
            );
            let si = match sockets.iter().position(|s| s.socket == socket_id) {
                Some(i) => i,
                None => {
                    let (vendor, model) = cpuinfo
                        .iter()
                        .find(|(n, _, _)| *n == socket_id)
                        .map(|(_, v, m)| (v.clone(), m.clone()))
                        .unwrap_or_default();
                    let khz = |a: &str, b: &str| {
                        number(&dir.join("cpufreq").join(a))
                            .or_else(|| number(&dir.join("cpufreq").join(b)))
                            .unwrap_or(0)
                            / 1000
                    };
                    sockets.push(CpuSocket {
                        name: model,
                        vendor,
                        socket: socket_id,
                        cache: self.caches(&dir),
                        cores: Vec::new(),
                        frequency: 0,
                        frequency_minimum: khz("cpuinfo_min_freq", "scaling_min_freq"),
                        frequency_turbo: khz("cpuinfo_max_freq", "scaling_max_freq"),
                    });
                    sockets.len() - 1
                }
            };
            let socket = &mut sockets[si];
            let ci = match socket
                .cores
                .iter()
                .position(|c| c.core == core_id && c.die == die)
            {
                Some(i) => i,
                None => {
                    socket.cores.push(CpuCore {
                        core: core_id,
                        die,
                        threads: Vec::new(),
                        frequency: number(&dir.join("cpufreq/scaling_cur_freq")).unwrap_or(0)
                            / 1000,
                    });
                    socket.cores.len() - 1
                }
            };
            let core = &mut socket.cores[ci];
            let numa = entries(&dir)
                .iter()
                .filter_map(|e| e.strip_prefix("node")?.parse::<u64>().ok())
                .next()
                .unwrap_or(0);
            core.threads.push(CpuThread {
                id,
                numa_node: numa,
                thread: core.threads.len() as u64,
                online: number(&dir.join("online")) != Some(0),
                isolated: isolated.contains(&(id as u64)),
            });
            total += 1;
        }
        for s in &mut sockets {
            s.cores.sort_by_key(|c| c.core);
            let freqs: Vec<u64> = s
                .cores
                .iter()
                .map(|c| c.frequency)
                .filter(|&f| f > 0)
                .collect();
            if !freqs.is_empty() {
                s.frequency = freqs.iter().sum::<u64>() / freqs.len() as u64;
            }
        }
        sockets.sort_by_key(|s| s.socket);
        Cpu {
            architecture: uname().0,
            sockets,
            total,
        }
    }

    /// `/proc/cpuinfo` blocks: (processor, vendor_id, model name or cpu).
    fn cpuinfo(&self) -> Vec<(u64, String, String)> {
        let mut out = Vec::new();
        let Some(all) = text(&self.path("/proc/cpuinfo")) else {
            return out;
        };
        for block in all.split("\n\n") {
            let mut entry = (u64::MAX, String::new(), String::new());
            for line in block.lines() {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                let (k, v) = (k.trim(), v.trim().to_owned());
                match k {
                    "processor" => entry.0 = v.parse().unwrap_or(u64::MAX),
                    "vendor_id" => entry.1 = v,
                    "model name" | "cpu" if entry.2.is_empty() => entry.2 = v,
                    _ => {}
                }
            }
            if entry.0 != u64::MAX {
                out.push(entry);
            }
        }
        out
    }

    fn caches(&self, cpu: &Path) -> Vec<CpuCache> {
        let dir = cpu.join("cache");
        entries(&dir)
            .iter()
            .filter(|e| e.starts_with("index"))
            .filter_map(|e| {
                let d = dir.join(e);
                Some(CpuCache {
                    level: number(&d.join("level"))?,
                    kind: text(&d.join("type")).unwrap_or_else(|| "Unknown".into()),
                    size: text(&d.join("size"))
                        .and_then(|s| byte_size(&s))
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    /// `/proc/meminfo`, the total corrected by the online memory blocks as LXD does, and the
    /// NUMA nodes.
    pub fn memory(&self) -> Result<Memory, ResourcesError> {
        let info =
            std::fs::read_to_string(self.path("/proc/meminfo")).map_err(ResourcesError::Memory)?;
        let m = meminfo(&info);
        let get = |k: &str| m.get(k).copied().unwrap_or(0);
        let mut total = get("MemTotal");
        let blocks = self.online_memory(&self.path("/sys/devices/system/memory"));
        if blocks > 0 {
            total = blocks;
        }
        let page = get("Hugepagesize");
        let mut nodes = Vec::new();
        let node_dir = self.path("/sys/devices/system/node");
        for name in entries(&node_dir) {
            let Some(n) = name.strip_prefix("node").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let d = node_dir.join(&name);
            let Ok(info) = std::fs::read_to_string(d.join("meminfo")) else {
                continue;
            };
            let nm = meminfo(&info);
            let nget = |k: &str| nm.get(k).copied().unwrap_or(0);
            let mut ntotal = nget("MemTotal");
            let blocks = self.online_memory(&d);
            if blocks > 0 {
                ntotal = blocks;
            }
            nodes.push(MemoryNode {
                numa_node: n,
                hugepages_used: nget("HugePages_Total").saturating_sub(nget("HugePages_Free"))
                    * page,
                hugepages_total: nget("HugePages_Total") * page,
                used: nget("MemUsed"),
                total: ntotal,
            });
        }
        Ok(Memory {
            nodes,
            hugepages_total: get("HugePages_Total") * page,
            hugepages_used: get("HugePages_Total").saturating_sub(get("HugePages_Free")) * page,
            hugepages_size: page,
            used: total
                .saturating_sub(get("MemFree"))
                .saturating_sub(get("Cached"))
                .saturating_sub(get("Buffers")),
            total,
        })
    }

    /// Bytes of online memory blocks under `dir` (`memoryN/online` = 1), 0 if unknown.
    fn online_memory(&self, dir: &Path) -> u64 {
        let Some(size) = text(&self.path("/sys/devices/system/memory/block_size_bytes"))
            .and_then(|s| u64::from_str_radix(&s, 16).ok())
        else {
            return 0;
        };
        let online = entries(dir)
            .iter()
            .filter(|e| {
                e.strip_prefix("memory")
                    .is_some_and(|n| n.parse::<u64>().is_ok())
            })
            .filter(|e| text(&dir.join(e).join("online")).as_deref() == Some("1"))
            .count() as u64;
        online * size
    }

    /// The device behind a class entry, and its PCI address and USB `bus:device` if any.
    fn addresses(&self, device: &Path) -> (String, String) {
        let Ok(mut real) = std::fs::canonicalize(device) else {
            return (String::new(), String::new());
        };
        if link_name(&real.join("subsystem")).as_deref() == Some("virtio") {
            real.pop();
        }
        let pci = if link_name(&real.join("subsystem")).as_deref() == Some("pci") {
            real.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned()
        } else {
            String::new()
        };
        let usb = real
            .ancestors()
            .find_map(|a| {
                Some(format!(
                    "{}:{}",
                    number(&a.join("busnum"))?,
                    number(&a.join("devnum"))?
                ))
            })
            .unwrap_or_default();
        (pci, usb)
    }

    /// The PCI function's directory for a PCI address.
    fn pci_dir(&self, address: &str) -> PathBuf {
        self.path("/sys/bus/pci/devices").join(address)
    }

    fn driver(&self, dev: &Path) -> (String, String) {
        let Some(driver) = link_name(&dev.join("driver")) else {
            return (String::new(), String::new());
        };
        let version = text(&dev.join("driver/module/version")).unwrap_or_else(|| uname().1);
        (driver, version)
    }

    /// GPUs: DRM cards, then PCI display controllers no card named.
    pub fn gpu(&self) -> Gpu {
        let mut cards: Vec<GpuCard> = Vec::new();
        let drm = self.path("/sys/class/drm");
        for name in entries(&drm) {
            let Some(id) = name
                .strip_prefix("card")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let entry = drm.join(&name);
            if !entry.join("dev").exists() {
                continue;
            }
            let dev = entry.join("device");
            let (pci, usb) = self.addresses(&dev);
            if !pci.is_empty() && cards.iter().any(|c| c.pci_address == pci) {
                continue;
            }
            let mut card = self.gpu_card(&dev, pci, usb);
            let nodes = entries(&dev.join("drm"));
            let node = |prefix: &str| {
                nodes
                    .iter()
                    .find(|n| n.starts_with(prefix))
                    .map(|n| (n.clone(), string(&dev.join("drm").join(n).join("dev"))))
                    .unwrap_or_default()
            };
            let (control_name, control_device) = node("controlD");
            let (render_name, render_device) = node("renderD");
            card.drm = Some(GpuDrm {
                id,
                card_device: string(&entry.join("dev")),
                card_name: name.clone(),
                control_name,
                control_device,
                render_name,
                render_device,
            });
            cards.push(card);
        }
        for address in entries(&self.path("/sys/bus/pci/devices")) {
            let dev = self.pci_dir(&address);
            if !string(&dev.join("class")).starts_with("0x03")
                || cards.iter().any(|c| c.pci_address == address)
            {
                continue;
            }
            cards.push(self.gpu_card(&dev, address, String::new()));
        }
        Gpu {
            total: cards.len() as u64,
            cards,
        }
    }

    fn gpu_card(&self, dev: &Path, pci_address: String, usb_address: String) -> GpuCard {
        let (driver, driver_version) = self.driver(dev);
        let (vendor_id, product_id) = (hex_id(&dev.join("vendor")), hex_id(&dev.join("device")));
        let (vendor, product) = self.pci_names(&vendor_id, &product_id);
        GpuCard {
            driver,
            driver_version,
            numa_node: numa_node(dev),
            pci_address,
            vendor,
            vendor_id,
            product,
            product_id,
            usb_address,
            ..GpuCard::default()
        }
    }

    /// Network cards: `/sys/class/net` entries backed by a device, one card per PCI function
    /// with a port per interface; then PCI network controllers with no interface (bound to
    /// vfio, say).
    pub fn network(&self) -> Network {
        let class = self.path("/sys/class/net");
        let mut cards: Vec<NetworkCard> = Vec::new();
        for ifname in entries(&class) {
            let dev = class.join(&ifname).join("device");
            if !dev.exists() || dev.join("physfn").exists() {
                continue;
            }
            let (pci, usb) = self.addresses(&dev);
            let idx = match cards
                .iter()
                .position(|c| !pci.is_empty() && c.pci_address == pci)
            {
                Some(i) => i,
                None => {
                    let (driver, driver_version) = self.driver(&dev);
                    let card_dev = if pci.is_empty() {
                        dev.clone()
                    } else {
                        self.pci_dir(&pci)
                    };
                    let (vendor_id, product_id) = (
                        hex_id(&card_dev.join("vendor")),
                        hex_id(&card_dev.join("device")),
                    );
                    let (vendor, product) = self.pci_names(&vendor_id, &product_id);
                    let sriov = number(&dev.join("sriov_totalvfs")).map(|max| NetworkSriov {
                        current_vfs: number(&dev.join("sriov_numvfs")).unwrap_or(0),
                        maximum_vfs: max,
                        vfs: None,
                    });
                    cards.push(NetworkCard {
                        driver,
                        driver_version,
                        sriov,
                        numa_node: numa_node(&dev),
                        pci_address: pci.clone(),
                        vendor,
                        vendor_id,
                        product,
                        product_id,
                        usb_address: usb,
                        ..NetworkCard::default()
                    });
                    cards.len() - 1
                }
            };
            let iface = class.join(&ifname);
            let link_detected = number(&iface.join("carrier")) == Some(1);
            let speed = text(&iface.join("speed"))
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|&s| s > 0 && link_detected)
                .map_or(0, |s| s as u64);
            let duplex = if speed > 0 {
                text(&iface.join("duplex"))
                    .filter(|d| d == "full" || d == "half")
                    .unwrap_or_default()
            } else {
                String::new()
            };
            cards[idx].ports.push(NetworkPort {
                id: ifname.clone(),
                address: string(&iface.join("address")),
                port: number(&iface.join("dev_port")).unwrap_or(0),
                protocol: match number(&iface.join("type")) {
                    Some(1) => "ethernet",
                    Some(19) => "ATM",
                    Some(32) => "infiniband",
                    _ => "",
                }
                .into(),
                link_detected,
                link_speed: speed,
                link_duplex: duplex,
                ..NetworkPort::default()
            });
        }
        for address in entries(&self.path("/sys/bus/pci/devices")) {
            let dev = self.pci_dir(&address);
            if !string(&dev.join("class")).starts_with("0x02")
                || dev.join("physfn").exists()
                || cards.iter().any(|c| c.pci_address == address)
            {
                continue;
            }
            let (driver, driver_version) = self.driver(&dev);
            let (vendor_id, product_id) =
                (hex_id(&dev.join("vendor")), hex_id(&dev.join("device")));
            let (vendor, product) = self.pci_names(&vendor_id, &product_id);
            cards.push(NetworkCard {
                driver,
                driver_version,
                numa_node: numa_node(&dev),
                pci_address: address,
                vendor,
                vendor_id,
                product,
                product_id,
                ..NetworkCard::default()
            });
        }
        Network {
            total: cards.len() as u64,
            cards,
        }
    }

    /// Disks: `/sys/class/block` entries backed by a device with a `dev` number (so not
    /// partitions, loop, device-mapper or zram devices), rbd left out; their partitions.
    pub fn storage(&self) -> Storage {
        let class = self.path("/sys/class/block");
        let names = entries(&class);
        let mut disks = Vec::new();
        for name in &names {
            let entry = class.join(name);
            let dev = entry.join("device");
            if !dev.exists() || !entry.join("dev").exists() {
                continue;
            }
            let subsystem = link_name(&dev.join("subsystem")).unwrap_or_default();
            if subsystem == "rbd" {
                continue;
            }
            let device = string(&entry.join("dev"));
            let udev = self.udev(&format!("b{device}"));
            let removable = number(&entry.join("removable")) == Some(1);
            let mut size = number(&entry.join("size")).unwrap_or(0).saturating_mul(512);
            let mut kind = subsystem;
            if name.starts_with("sr") && removable {
                kind = "cdrom".into();
                if size == 0x1f_ffff * 512 {
                    size = 0;
                }
            }
            if udev.get("ID_CDROM").map(String::as_str) == Some("1") {
                kind = "cdrom".into();
            } else if udev.get("ID_USB_DRIVER").map(String::as_str) == Some("usb-storage") {
                kind = "usb".into();
            } else if udev.get("ID_ATA_SATA").map(String::as_str) == Some("1") {
                kind = "sata".into();
            }
            let model = udev
                .get("ID_MODEL_ENC")
                .map(|m| unescape_udev(m).trim().to_owned())
                .or_else(|| udev.get("ID_MODEL").cloned())
                .unwrap_or_else(|| string(&dev.join("model")));
            let mut firmware_version = string(&dev.join("firmware_rev"));
            if firmware_version.is_empty() {
                firmware_version = udev.get("ID_REVISION").cloned().unwrap_or_default();
            }
            let rotational = number(&entry.join("queue/rotational")).unwrap_or(0);
            let rpm = udev
                .get("ID_ATA_ROTATION_RATE_RPM")
                .and_then(|r| r.parse().ok())
                .unwrap_or(rotational);
            let serial = udev
                .get("ID_SERIAL_SHORT")
                .cloned()
                .unwrap_or_else(|| string(&entry.join("serial")));
            // The disk's own children with a `partition` file (not every name it prefixes:
            // `sda` is no parent of `sdaa1`).
            let partitions: Vec<Partition> = entries(&entry)
                .iter()
                .filter(|p| {
                    p.starts_with(name.as_str()) && entry.join(p).join("partition").exists()
                })
                .filter_map(|p| {
                    let pe = entry.join(p);
                    Some(Partition {
                        id: p.clone(),
                        device: string(&pe.join("dev")),
                        read_only: number(&pe.join("ro")) == Some(1),
                        size: number(&pe.join("size")).unwrap_or(0).saturating_mul(512),
                        partition: number(&pe.join("partition"))?,
                    })
                })
                .collect();
            let (pci_address, usb_address) = self.addresses(&dev);
            disks.push(Disk {
                id: name.clone(),
                device,
                model,
                kind,
                read_only: number(&entry.join("ro")) == Some(1),
                size,
                removable,
                wwn: string(&entry.join("wwid")),
                numa_node: numa_node(&dev),
                device_path: self.disk_link("/dev/disk/by-path", name),
                block_size: number(&entry.join("queue/physical_block_size")).unwrap_or(0),
                firmware_version,
                rpm,
                serial,
                device_id: self.disk_link("/dev/disk/by-id", name),
                partitions,
                pci_address,
                usb_address,
            });
        }
        let total = disks.iter().map(|d| 1 + d.partitions.len() as u64).sum();
        Storage { disks, total }
    }

    /// The last name (in byte order) in a `/dev/disk/by-*` directory whose link ends at
    /// `/dev/<name>`.
    fn disk_link(&self, dir: &str, name: &str) -> String {
        let dir = self.path(dir);
        entries(&dir)
            .into_iter()
            .rfind(|e| {
                std::fs::read_link(dir.join(e))
                    .ok()
                    .and_then(|t| t.file_name().map(|f| f == name))
                    .unwrap_or(false)
            })
            .unwrap_or_default()
    }

    /// udev's `E:` properties for a device (`b8:0`), bounded.
    fn udev(&self, id: &str) -> BTreeMap<String, String> {
        let Some(data) = text(&self.path("/run/udev/data").join(id)) else {
            return BTreeMap::new();
        };
        data.lines()
            .take(4096)
            .filter_map(|l| {
                let (k, v) = l.strip_prefix("E:")?.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect()
    }

    /// USB devices (hubs left out) with their interfaces.
    pub fn usb(&self) -> Usb {
        let base = self.path("/sys/bus/usb/devices");
        let mut devices = Vec::new();
        for name in entries(&base) {
            let d = base.join(&name);
            let (Some(bus), Some(devnum)) = (number(&d.join("busnum")), number(&d.join("devnum")))
            else {
                continue;
            };
            if string(&d.join("bDeviceClass")) == "09" {
                continue;
            }
            let interfaces: Vec<UsbInterface> = entries(&d)
                .iter()
                .filter(|e| e.starts_with(&format!("{name}:")))
                .map(|e| {
                    let i = d.join(e);
                    let hex = |f: &str| u64::from_str_radix(&string(&i.join(f)), 16).unwrap_or(0);
                    let (driver, driver_version) = self.driver(&i);
                    UsbInterface {
                        class: String::new(),
                        class_id: hex("bInterfaceClass"),
                        driver,
                        driver_version,
                        number: hex("bInterfaceNumber"),
                        subclass: String::new(),
                        subclass_id: hex("bInterfaceSubClass"),
                    }
                })
                .collect();
            devices.push(UsbDevice {
                bus_address: bus,
                device_address: devnum,
                interfaces: (!interfaces.is_empty()).then_some(interfaces),
                vendor: string(&d.join("manufacturer")),
                vendor_id: string(&d.join("idVendor")),
                product: string(&d.join("product")),
                product_id: string(&d.join("idProduct")),
                speed: text(&d.join("speed"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0),
            });
        }
        Usb {
            total: devices.len() as u64,
            devices,
        }
    }

    /// Every PCI function.
    pub fn pci(&self) -> Pci {
        let mut devices = Vec::new();
        for address in entries(&self.path("/sys/bus/pci/devices")) {
            let dev = self.pci_dir(&address);
            let (driver, driver_version) = self.driver(&dev);
            let (vendor_id, product_id) =
                (hex_id(&dev.join("vendor")), hex_id(&dev.join("device")));
            let (vendor, product) = self.pci_names(&vendor_id, &product_id);
            devices.push(PciDevice {
                driver,
                driver_version,
                numa_node: numa_node(&dev),
                pci_address: address,
                vendor,
                vendor_id,
                product,
                product_id,
                iommu_group: link_name(&dev.join("iommu_group"))
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0),
                vpd: PciVpd::default(),
            });
        }
        Pci {
            total: devices.len() as u64,
            devices,
        }
    }

    /// A vendor's and a product's names from the first `pci.ids` the host has.
    fn pci_names(&self, vendor_id: &str, product_id: &str) -> (String, String) {
        static IDS: OnceLock<Option<String>> = OnceLock::new();
        if self.root == Path::new("/") {
            IDS.get_or_init(|| self.read_pci_ids())
                .as_deref()
                .map(|ids| pci_names(ids, vendor_id, product_id))
                .unwrap_or_default()
        } else {
            self.read_pci_ids()
                .map(|ids| pci_names(&ids, vendor_id, product_id))
                .unwrap_or_default()
        }
    }

    fn read_pci_ids(&self) -> Option<String> {
        ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"]
            .iter()
            .find_map(|p| std::fs::read_to_string(self.path(p)).ok())
    }

    /// The machine from DMI, and what it runs on.
    pub fn system(&self) -> System {
        let kind = self.virt_kind();
        let dmi = self.path("/sys/class/dmi/id");
        if !dmi.is_dir() {
            return System {
                kind,
                ..System::default()
            };
        }
        let f = |name: &str| string(&dmi.join(name));
        System {
            uuid: f("product_uuid"),
            vendor: f("sys_vendor"),
            product: f("product_name"),
            family: f("product_family"),
            version: f("product_version"),
            sku: f("product_sku"),
            serial: f("product_serial"),
            kind,
            firmware: Some(Firmware {
                vendor: f("bios_vendor"),
                date: f("bios_date"),
                version: f("bios_version"),
            }),
            chassis: Some(Chassis {
                vendor: f("chassis_vendor"),
                kind: f("chassis_type")
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| CHASSIS.get(n.wrapping_sub(1)))
                    .map_or(String::new(), |s| (*s).to_owned()),
                serial: f("chassis_serial"),
                version: f("chassis_version"),
            }),
            motherboard: Some(Motherboard {
                vendor: f("board_vendor"),
                product: f("board_name"),
                serial: f("board_serial"),
                version: f("board_version"),
            }),
        }
    }

    /// `systemd-detect-virt`'s verdict as LXD takes it (exit codes only), once per process on a
    /// real host: `unknown` without the tool, else `container`, `virtual-machine` or
    /// `physical`.
    fn virt_kind(&self) -> String {
        static KIND: OnceLock<String> = OnceLock::new();
        KIND.get_or_init(|| {
            let detect = |arg: &str| {
                Command::new("systemd-detect-virt")
                    .arg(arg)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            };
            match detect("--container") {
                Err(_) => "unknown",
                Ok(s) if s.success() => "container",
                Ok(_) => match detect("--vm") {
                    Ok(s) if s.success() => "virtual-machine",
                    _ => "physical",
                },
            }
            .to_owned()
        })
        .clone()
    }
}

/// SMBIOS chassis types 1..=36.
const CHASSIS: [&str; 36] = [
    "Other",
    "Unknown",
    "Desktop",
    "Low Profile Desktop",
    "Pizza Box",
    "Mini Tower",
    "Tower",
    "Portable",
    "Laptop",
    "Notebook",
    "Hand Held",
    "Docking Station",
    "All in One",
    "Sub Notebook",
    "Space-saving",
    "Lunch Box",
    "Main Server Chassis",
    "Expansion Chassis",
    "SubChassis",
    "Bus Expansion Chassis",
    "Peripheral Chassis",
    "RAID Chassis",
    "Rack Mount Chassis",
    "Sealed-case PC",
    "Multi-system chassis",
    "Compact PCI",
    "Advanced TCA",
    "Blade",
    "Blade Enclosure",
    "Tablet",
    "Convertible",
    "Detachable",
    "IoT Gateway",
    "Embedded PC",
    "Mini PC",
    "Stick PC",
];

/// `/proc/meminfo` (or a node's `meminfo`, whose lines start `Node N`) as bytes by key; the
/// `HugePages_*` counts are counts, not sizes.
fn meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            let key = k.split_whitespace().last()?.to_owned();
            let v = v.trim();
            let n = if key.starts_with("HugePages_") {
                v.parse().ok()?
            } else {
                byte_size(v)?
            };
            Some((key, n))
        })
        .collect()
}

/// udev's `\xNN` escapes in `ID_MODEL_ENC`.
fn unescape_udev(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        if let (b'\\', Some(b'x'), Some(h)) = (b[i], b.get(i + 1), hex) {
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(digit(h[0]) << 4 | digit(h[1]));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A vendor's and product's names in `pci.ids` text: vendors at column 0 (`8086  Intel
/// Corporation`), their devices indented by one tab.
fn pci_names(ids: &str, vendor_id: &str, product_id: &str) -> (String, String) {
    let (mut vendor, mut product) = (String::new(), String::new());
    let mut in_vendor = false;
    for line in ids.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('\t') {
            if in_vendor && !rest.starts_with('\t') {
                if let Some((id, name)) = rest.split_once("  ") {
                    if id.eq_ignore_ascii_case(product_id) {
                        product = name.trim().to_owned();
                        break;
                    }
                }
            }
            continue;
        }
        if in_vendor {
            break;
        }
        if let Some((id, name)) = line.split_once("  ") {
            if id.eq_ignore_ascii_case(vendor_id) {
                vendor = name.trim().to_owned();
                in_vendor = true;
            }
        }
    }
    (vendor, product)
}

#[cfg(test)]
mod tests;
