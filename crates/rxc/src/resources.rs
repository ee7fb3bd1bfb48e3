//! `rxc info [REMOTE:] --resources`: the server's hardware (`GET /1.0/resources`) as `lxc info
//! --resources` 5.0 prints it: CPU, memory, GPUs, NICs and disks, in that order (USB, PCI and the
//! machine are in the API but `lxc` prints none of them, so neither does this).

use crate::connect::{open, remote_name};
use crate::list::iec_precision;
use rxd_api::resources::{CpuSocket, Disk, GpuCard, NetworkCard, Resources};
use rxd_client::remotes::ConfigDir;
use rxd_client::Method;
use std::fmt::Write;

pub async fn info(conf: &ConfigDir, remote: Option<&str>) -> anyhow::Result<()> {
    let conn = open(conf, &remote_name(conf, remote))?;
    let server = conn.call(Method::GET, "/1.0", None).await?;
    let has_v2 = server["api_extensions"]
        .as_array()
        .is_some_and(|e| e.iter().any(|x| x == "resources_v2"));
    if !has_v2 {
        anyhow::bail!("The server doesn't implement the newer v2 resources API");
    }
    let v = conn.call(Method::GET, "/1.0/resources", None).await?;
    let r: Resources = serde_json::from_value(v)?;
    // Vendor and model strings come from firmware (a USB stick's, say): no escape sequence
    // reaches the terminal.
    let text: String = render(&r)
        .lines()
        .map(|l| crate::output::printable(l) + "\n")
        .collect();
    out!("{text}")?;
    Ok(())
}

fn iec(n: u64, precision: usize) -> String {
    iec_precision(i64::try_from(n).unwrap_or(i64::MAX), precision)
}

/// Signed difference as Go computes `int64(a-b)` on unsigned values that may cross.
fn diff(a: u64, b: u64) -> String {
    iec_precision(a.wrapping_sub(b) as i64, 2)
}

/// The whole text, each line ending in a newline.
pub fn render(r: &Resources) -> String {
    let mut o = String::new();
    match r.cpu.sockets.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(o, "CPU ({}):", r.cpu.architecture);
            cpu(&mut o, one, "  ");
        }
        many => {
            let _ = writeln!(o, "CPUs ({}):", r.cpu.architecture);
            for s in many {
                let _ = writeln!(o, "  Socket {}:", s.socket);
                cpu(&mut o, s, "    ");
            }
        }
    }
    let m = &r.memory;
    o.push_str("\nMemory:\n");
    if m.hugepages_total > 0 {
        let _ = writeln!(o, "  Hugepages:");
        let _ = writeln!(o, "    Free: {}", diff(m.hugepages_total, m.hugepages_used));
        let _ = writeln!(o, "    Used: {}", iec(m.hugepages_used, 2));
        let _ = writeln!(o, "    Total: {}", iec(m.hugepages_total, 2));
    }
    if m.nodes.len() > 1 {
        let _ = writeln!(o, "  NUMA nodes:");
        for n in &m.nodes {
            let _ = writeln!(o, "    Node {}:", n.numa_node);
            if n.hugepages_total > 0 {
                let _ = writeln!(o, "      Hugepages:");
                let _ = writeln!(
                    o,
                    "        Free: {}",
                    diff(n.hugepages_total, n.hugepages_used)
                );
                let _ = writeln!(o, "        Used: {}", iec(n.hugepages_used, 2));
                let _ = writeln!(o, "        Total: {}", iec(n.hugepages_total, 2));
            }
            let _ = writeln!(o, "      Free: {}", diff(n.total, n.used));
            let _ = writeln!(o, "      Used: {}", iec(n.used, 2));
            let _ = writeln!(o, "      Total: {}", iec(n.total, 2));
        }
    }
    let _ = writeln!(o, "  Free: {}", diff(m.total, m.used));
    let _ = writeln!(o, "  Used: {}", iec(m.used, 2));
    let _ = writeln!(o, "  Total: {}", iec(m.total, 2));
    section(&mut o, "GPU", "GPUs", "Card", &r.gpu.cards, |o, c, p| {
        gpu(o, c, p, true)
    });
    section(
        &mut o,
        "NIC",
        "NICs",
        "Card",
        &r.network.cards,
        |o, c, p| nic(o, c, p, true),
    );
    section(&mut o, "Disk", "Disks", "Disk", &r.storage.disks, disk);
    o
}

/// A list printed as `lxc` prints GPUs, NICs and disks: nothing when empty, the singular
/// heading for one, numbered entries under the plural heading for more.
fn section<T>(
    o: &mut String,
    one: &str,
    many: &str,
    entry: &str,
    items: &[T],
    render: impl Fn(&mut String, &T, &str),
) {
    match items {
        [] => {}
        [item] => {
            let _ = writeln!(o, "\n{one}:");
            render(o, item, "  ");
        }
        items => {
            let _ = writeln!(o, "\n{many}:");
            for (i, item) in items.iter().enumerate() {
                let _ = writeln!(o, "  {entry} {i}:");
                render(o, item, "    ");
            }
        }
    }
}

fn cpu(o: &mut String, s: &CpuSocket, p: &str) {
    if !s.vendor.is_empty() {
        let _ = writeln!(o, "{p}Vendor: {}", s.vendor);
    }
    if !s.name.is_empty() {
        let _ = writeln!(o, "{p}Name: {}", s.name);
    }
    if !s.cache.is_empty() {
        let _ = writeln!(o, "{p}Caches:");
        for c in &s.cache {
            let _ = writeln!(
                o,
                "{p}  - Level {} (type: {}): {}",
                c.level,
                c.kind,
                iec(c.size, 0)
            );
        }
    }
    let _ = writeln!(o, "{p}Cores:");
    for c in &s.cores {
        let _ = writeln!(o, "{p}  - Core {}", c.core);
        let _ = writeln!(o, "{p}    Frequency: {}Mhz", c.frequency);
        let _ = writeln!(o, "{p}    Threads:");
        for t in &c.threads {
            let _ = writeln!(
                o,
                "{p}      - {} (id: {}, online: {}, NUMA node: {})",
                t.thread, t.id, t.online, t.numa_node
            );
        }
    }
    if s.frequency > 0 {
        if s.frequency_turbo > 0 && s.frequency_minimum > 0 {
            let _ = writeln!(
                o,
                "{p}Frequency: {}Mhz (min: {}Mhz, max: {}Mhz)",
                s.frequency, s.frequency_minimum, s.frequency_turbo
            );
        } else {
            let _ = writeln!(o, "{p}Frequency: {}Mhz", s.frequency);
        }
    }
}

/// The lines every device starts with: its NUMA node (after `initial`'s prefix, or after
/// the `- ` a virtual function's entry starts with), then vendor, product, address, driver.
#[allow(clippy::too_many_arguments)]
fn device_head(
    o: &mut String,
    p: &str,
    initial: bool,
    numa: u64,
    vendor: (&str, &str),
    product: (&str, &str),
    pci: &str,
    driver: (&str, &str),
) {
    if initial {
        o.push_str(p);
    }
    let _ = writeln!(o, "NUMA node: {numa}");
    if !vendor.0.is_empty() {
        let _ = writeln!(o, "{p}Vendor: {} ({})", vendor.0, vendor.1);
    }
    if !product.0.is_empty() {
        let _ = writeln!(o, "{p}Product: {} ({})", product.0, product.1);
    }
    if !pci.is_empty() {
        let _ = writeln!(o, "{p}PCI address: {pci}");
    }
    if !driver.0.is_empty() {
        let _ = writeln!(o, "{p}Driver: {} ({})", driver.0, driver.1);
    }
}

fn gpu(o: &mut String, g: &GpuCard, p: &str, initial: bool) {
    device_head(
        o,
        p,
        initial,
        g.numa_node,
        (&g.vendor, &g.vendor_id),
        (&g.product, &g.product_id),
        &g.pci_address,
        (&g.driver, &g.driver_version),
    );
    if let Some(d) = &g.drm {
        let _ = writeln!(o, "{p}DRM:");
        let _ = writeln!(o, "{p}  ID: {}", d.id);
        if !d.card_name.is_empty() {
            let _ = writeln!(o, "{p}  Card: {} ({})", d.card_name, d.card_device);
        }
        if !d.control_name.is_empty() {
            let _ = writeln!(o, "{p}  Control: {} ({})", d.control_name, d.control_device);
        }
        if !d.render_name.is_empty() {
            let _ = writeln!(o, "{p}  Render: {} ({})", d.render_name, d.render_device);
        }
    }
    if let Some(n) = &g.nvidia {
        let f = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
        let _ = writeln!(o, "{p}NVIDIA information:");
        let _ = writeln!(o, "{p}  Architecture: {}", f("architecture"));
        let _ = writeln!(o, "{p}  Brand: {}", f("brand"));
        let _ = writeln!(o, "{p}  Model: {}", f("model"));
        let _ = writeln!(o, "{p}  CUDA Version: {}", f("cuda_version"));
        let _ = writeln!(o, "{p}  NVRM Version: {}", f("nvrm_version"));
        let _ = writeln!(o, "{p}  UUID: {}", f("uuid"));
    }
    if let Some(s) = &g.sriov {
        let vfs = s.vfs.as_deref().unwrap_or_default();
        sriov(o, p, s.current_vfs, s.maximum_vfs, vfs, gpu);
    }
    if !g.mdev.is_empty() {
        let _ = writeln!(o, "{p}Mdev profiles:");
        for (k, v) in &g.mdev {
            let _ = writeln!(o, "{p}  - {k} ({} available)", v["available"]);
            if let Some(d) = v["description"].as_str().filter(|d| !d.is_empty()) {
                for line in d.split('\n') {
                    let _ = writeln!(o, "{p}      {line}");
                }
            }
        }
    }
}

fn nic(o: &mut String, n: &NetworkCard, p: &str, initial: bool) {
    device_head(
        o,
        p,
        initial,
        n.numa_node,
        (&n.vendor, &n.vendor_id),
        (&n.product, &n.product_id),
        &n.pci_address,
        (&n.driver, &n.driver_version),
    );
    if !n.ports.is_empty() {
        let _ = writeln!(o, "{p}Ports:");
        for port in &n.ports {
            let _ = writeln!(o, "{p}  - Port {} ({})", port.port, port.protocol);
            let _ = writeln!(o, "{p}    ID: {}", port.id);
            if !port.address.is_empty() {
                let _ = writeln!(o, "{p}    Address: {}", port.address);
            }
            if let Some(m) = &port.supported_modes {
                let _ = writeln!(o, "{p}    Supported modes: {}", m.join(", "));
            }
            if let Some(m) = &port.supported_ports {
                let _ = writeln!(o, "{p}    Supported ports: {}", m.join(", "));
            }
            if !port.port_type.is_empty() {
                let _ = writeln!(o, "{p}    Port type: {}", port.port_type);
            }
            if !port.transceiver_type.is_empty() {
                let _ = writeln!(o, "{p}    Transceiver type: {}", port.transceiver_type);
            }
            let _ = writeln!(o, "{p}    Auto negotiation: {}", port.auto_negotiation);
            let _ = writeln!(o, "{p}    Link detected: {}", port.link_detected);
            if port.link_speed > 0 {
                let _ = writeln!(
                    o,
                    "{p}    Link speed: {}Mbit/s ({} duplex)",
                    port.link_speed, port.link_duplex
                );
            }
            if let Some(ib) = &port.infiniband {
                let f = |k: &str| ib[k].as_str().unwrap_or_default().to_owned();
                let _ = writeln!(o, "{p}    Infiniband:");
                for (label, name, dev) in [
                    ("IsSM", "issm_name", "issm_device"),
                    ("MAD", "mad_name", "mad_device"),
                    ("Verb", "verb_name", "verb_device"),
                ] {
                    if !f(name).is_empty() {
                        let _ = writeln!(o, "{p}      {label}: {} ({})", f(name), f(dev));
                    }
                }
            }
        }
    }
    if let Some(s) = &n.sriov {
        let vfs = s.vfs.as_deref().unwrap_or_default();
        sriov(o, p, s.current_vfs, s.maximum_vfs, vfs, nic);
    }
}

/// A card's SR-IOV lines, its virtual functions rendered as `render` renders the card.
fn sriov<T>(
    o: &mut String,
    p: &str,
    current: u64,
    maximum: u64,
    vfs: &[T],
    render: fn(&mut String, &T, &str, bool),
) {
    let _ = writeln!(o, "{p}SR-IOV information:");
    let _ = writeln!(o, "{p}  Current number of VFs: {current}");
    let _ = writeln!(o, "{p}  Maximum number of VFs: {maximum}");
    if !vfs.is_empty() {
        // `lxc` prints the maximum here, not the count.
        let _ = writeln!(o, "{p}  VFs: {maximum}");
        for vf in vfs {
            let _ = write!(o, "{p}  - ");
            render(o, vf, &format!("{p}    "), false);
        }
    }
}

fn disk(o: &mut String, d: &Disk, p: &str) {
    let _ = writeln!(o, "{p}NUMA node: {}", d.numa_node);
    let _ = writeln!(o, "{p}ID: {}", d.id);
    let _ = writeln!(o, "{p}Device: {}", d.device);
    if !d.model.is_empty() {
        let _ = writeln!(o, "{p}Model: {}", d.model);
    }
    if !d.kind.is_empty() {
        let _ = writeln!(o, "{p}Type: {}", d.kind);
    }
    let _ = writeln!(o, "{p}Size: {}", iec(d.size, 2));
    if !d.wwn.is_empty() {
        let _ = writeln!(o, "{p}WWN: {}", d.wwn);
    }
    let _ = writeln!(o, "{p}Read-Only: {}", d.read_only);
    let _ = writeln!(o, "{p}Removable: {}", d.removable);
    if !d.partitions.is_empty() {
        let _ = writeln!(o, "{p}Partitions:");
        for part in &d.partitions {
            let _ = writeln!(o, "{p}  - Partition {}", part.partition);
            let _ = writeln!(o, "{p}    ID: {}", part.id);
            let _ = writeln!(o, "{p}    Device: {}", part.device);
            let _ = writeln!(o, "{p}    Read-Only: {}", part.read_only);
            let _ = writeln!(o, "{p}    Size: {}", iec(part.size, 2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_as_lxc_info_resources() {
        let r: Resources = serde_json::from_value(json!({
            "cpu": {"architecture": "x86_64", "total": 2, "sockets": [{
                "vendor": "GenuineIntel", "name": "Xeon", "socket": 0,
                "cache": [{"level": 1, "type": "Data", "size": 49152}],
                "cores": [{"core": 0, "die": 0, "threads": [
                    {"id": 0, "numa_node": 0, "thread": 0, "online": true, "isolated": false},
                    {"id": 1, "numa_node": 0, "thread": 1, "online": false, "isolated": false}]}]}]},
            "memory": {"used": 536870912u64, "total": 2147483648u64,
                       "hugepages_total": 0, "hugepages_used": 0, "hugepages_size": 2097152},
            "gpu": {"cards": [], "total": 0},
            "network": {"cards": [{"numa_node": 0, "vendor": "Red Hat, Inc.", "vendor_id": "1af4",
                "pci_address": "0000:00:03.0", "driver": "virtio_net", "driver_version": "6.1",
                "ports": [{"id": "eth0", "address": "52:54:00:12:34:56", "port": 0,
                           "protocol": "ethernet", "auto_negotiation": false,
                           "link_detected": true}]}], "total": 1},
            "storage": {"disks": [
                {"id": "vda", "device": "254:0", "type": "virtio", "read_only": false,
                 "size": 10737418240u64, "removable": false, "numa_node": 0, "block_size": 512,
                 "rpm": 1, "device_id": "", "partitions": [{"id": "vda1", "device": "254:1",
                 "read_only": false, "size": 1048576, "partition": 1}]},
                {"id": "vdb", "device": "254:16", "read_only": true, "size": 512,
                 "removable": false, "numa_node": 0, "block_size": 512, "rpm": 0,
                 "device_id": "", "partitions": []}], "total": 3},
            "usb": {"devices": [], "total": 0},
            "pci": {"devices": [], "total": 0},
            "system": {"type": "physical", "firmware": null, "chassis": null, "motherboard": null}
        }))
        .unwrap();
        let want = "CPU (x86_64):
  Vendor: GenuineIntel
  Name: Xeon
  Caches:
    - Level 1 (type: Data): 48KiB
  Cores:
    - Core 0
      Frequency: 0Mhz
      Threads:
        - 0 (id: 0, online: true, NUMA node: 0)
        - 1 (id: 1, online: false, NUMA node: 0)

Memory:
  Free: 1.50GiB
  Used: 512.00MiB
  Total: 2.00GiB

NIC:
  NUMA node: 0
  Vendor: Red Hat, Inc. (1af4)
  PCI address: 0000:00:03.0
  Driver: virtio_net (6.1)
  Ports:
    - Port 0 (ethernet)
      ID: eth0
      Address: 52:54:00:12:34:56
      Auto negotiation: false
      Link detected: true

Disks:
  Disk 0:
    NUMA node: 0
    ID: vda
    Device: 254:0
    Type: virtio
    Size: 10.00GiB
    Read-Only: false
    Removable: false
    Partitions:
      - Partition 1
        ID: vda1
        Device: 254:1
        Read-Only: false
        Size: 1.00MiB
  Disk 1:
    NUMA node: 0
    ID: vdb
    Device: 254:16
    Size: 512B
    Read-Only: true
    Removable: false
";
        assert_eq!(render(&r), want);
    }
}
