//! LXD's listing rules on made-up sysfs trees (the real host's answer is checked against
//! the daemon in `crates/rxc/tests/cli_parity.rs`).

use super::*;
use std::os::unix::fs::symlink;

struct Tree(tempfile::TempDir);

impl Tree {
    fn new() -> Tree {
        Tree(tempfile::tempdir().unwrap())
    }
    fn host(&self) -> Host {
        Host::at(self.0.path())
    }
    fn file(&self, path: &str, body: &str) -> &Tree {
        let p = self.0.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        self
    }
    fn dir(&self, path: &str) -> &Tree {
        std::fs::create_dir_all(self.0.path().join(path)).unwrap();
        self
    }
    fn link(&self, path: &str, target: &str) -> &Tree {
        let p = self.0.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
        self
    }
    /// `cpuN` in a socket, core and die.
    fn cpu(&self, n: u32, socket: u32, core: u32, online: &str) -> &Tree {
        let d = format!("sys/devices/system/cpu/cpu{n}");
        self.file(
            &format!("{d}/topology/physical_package_id"),
            &socket.to_string(),
        )
        .file(&format!("{d}/topology/core_id"), &core.to_string())
        .file(&format!("{d}/topology/die_id"), "0")
        .file(&format!("{d}/online"), online)
        .dir(&format!("{d}/node{socket}"))
    }
}

#[test]
fn cpus_group_by_socket_and_core_and_walk_in_name_order() {
    let t = Tree::new();
    // cpu0..cpu11: sockets 0 and 1, two threads per core; cpu10 comes before cpu2 by name.
    for n in 0..12u32 {
        t.cpu(n, n / 6, (n % 6) / 2, if n == 11 { "0" } else { "1" });
    }
    t.file("sys/devices/system/cpu/isolated", "3,10-11")
        .file("sys/devices/system/cpu/online", "0-10")
        .file("sys/devices/system/cpu/cpu0/cache/index0/level", "1")
        .file("sys/devices/system/cpu/cpu0/cache/index0/type", "Data")
        .file("sys/devices/system/cpu/cpu0/cache/index0/size", "48K")
        .file("sys/devices/system/cpu/cpu0/cache/index3/level", "3")
        .file("sys/devices/system/cpu/cpu0/cache/index3/size", "32768K")
        .file(
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "2000000",
        )
        .file(
            "sys/devices/system/cpu/cpu2/cpufreq/scaling_cur_freq",
            "3000000",
        )
        .file(
            "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_min_freq",
            "800000",
        )
        .file(
            "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
            "4000000",
        )
        .file(
            "proc/cpuinfo",
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon A\n\n\
             processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: Epyc B\n",
        );
    let cpu = t.host().cpu();
    assert_eq!(cpu.total, 12);
    assert_eq!(cpu.sockets.len(), 2);
    let s0 = &cpu.sockets[0];
    assert_eq!(
        (s0.socket, s0.vendor.as_str(), s0.name.as_str()),
        (0, "GenuineIntel", "Xeon A")
    );
    // processor N's block names socket N (LXD's reading of /proc/cpuinfo).
    assert_eq!(cpu.sockets[1].name, "Epyc B");
    assert_eq!(
        s0.cache,
        vec![
            CpuCache {
                level: 1,
                kind: "Data".into(),
                size: 48 << 10
            },
            CpuCache {
                level: 3,
                kind: "Unknown".into(),
                size: 32 << 20
            },
        ]
    );
    assert_eq!(s0.cores.len(), 3);
    assert_eq!(
        s0.cores.iter().map(|c| c.core).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // Core 0: cpu0 then cpu1; core 1: cpu2 and cpu3 (isolated).
    let ids = |c: &CpuCore| c.threads.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&s0.cores[0]), vec![0, 1]);
    assert_eq!(s0.cores[1].threads[1].thread, 1);
    assert!(s0.cores[1].threads[1].isolated && !s0.cores[1].threads[0].isolated);
    assert_eq!((s0.cores[0].frequency, s0.cores[1].frequency), (2000, 3000));
    assert_eq!(s0.frequency, 2500, "the mean of the cores that report one");
    assert_eq!((s0.frequency_minimum, s0.frequency_turbo), (800, 4000));
    // Socket 1: cpu10 and cpu11 in core 2, listed after cpu1 by name but sorted by core.
    let s1 = &cpu.sockets[1];
    assert_eq!(ids(&s1.cores[2]), vec![10, 11]);
    assert!(!s1.cores[2].threads[1].online);
    assert_eq!(s1.cores[2].threads[0].numa_node, 1);
}

#[test]
fn memory_uses_online_blocks_and_numa_nodes() {
    let t = Tree::new();
    t.file(
        "proc/meminfo",
        "MemTotal:        8000000 kB\nMemFree:           10000 kB\nBuffers:            1000 kB\n\
         Cached:            20000 kB\nHugePages_Total:       4\nHugePages_Free:        1\n\
         Hugepagesize:       2048 kB\n",
    )
    .file("sys/devices/system/memory/block_size_bytes", "8000000")
    .file("sys/devices/system/memory/memory0/online", "1")
    .file("sys/devices/system/memory/memory1/online", "1")
    .file("sys/devices/system/memory/memory2/online", "0")
    .file(
        "sys/devices/system/node/node0/meminfo",
        "Node 0 MemTotal:       4000000 kB\nNode 0 MemUsed:        3000000 kB\n\
         Node 0 HugePages_Total:     2\nNode 0 HugePages_Free:      2\n",
    )
    .file("sys/devices/system/node/node0/memory0/online", "1");
    let m = t.host().memory().unwrap();
    let block = 0x800_0000u64;
    assert_eq!(m.total, 2 * block, "two online blocks override MemTotal");
    assert_eq!(m.used, 2 * block - (10_000 + 1_000 + 20_000) * 1024);
    assert_eq!(
        (m.hugepages_total, m.hugepages_used, m.hugepages_size),
        (4 * 2048 * 1024, 3 * 2048 * 1024, 2048 * 1024)
    );
    assert_eq!(
        m.nodes,
        vec![MemoryNode {
            numa_node: 0,
            hugepages_used: 0,
            hugepages_total: 2 * 2048 * 1024,
            used: 3_000_000 * 1024,
            total: block,
        }]
    );
    // Without the blocks, MemTotal; without node directories, no nodes.
    let t = Tree::new();
    t.file("proc/meminfo", "MemTotal: 1024 kB\nMemFree: 512 kB\n");
    let m = t.host().memory().unwrap();
    assert_eq!((m.total, m.used, m.nodes.len()), (1 << 20, 1 << 19, 0));
    assert!(Tree::new().host().memory().is_err(), "no /proc/meminfo");
}

#[test]
fn disks_are_devices_with_numbers_and_carry_their_partitions() {
    let t = Tree::new();
    t.dir("sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda")
        .dir("sys/bus/virtio")
        .dir("sys/bus/pci")
        .link(
            "sys/devices/pci0000:00/0000:00:04.0/virtio1/subsystem",
            "../../../../bus/virtio",
        )
        .link(
            "sys/devices/pci0000:00/0000:00:04.0/subsystem",
            "../../../bus/pci",
        )
        .link(
            "sys/class/block/vda/device",
            "../../../devices/pci0000:00/0000:00:04.0/virtio1",
        )
        .file("sys/class/block/vda/dev", "254:0")
        .file("sys/class/block/vda/size", "2048")
        .file("sys/class/block/vda/ro", "0")
        .file("sys/class/block/vda/removable", "0")
        .file("sys/class/block/vda/serial", "disk-serial")
        .file("sys/class/block/vda/queue/rotational", "1")
        .file("sys/class/block/vda/queue/physical_block_size", "4096")
        .file("sys/class/block/vda/vda1/dev", "254:1")
        .file("sys/class/block/vda/vda1/size", "1024")
        .file("sys/class/block/vda/vda1/ro", "1")
        .file("sys/class/block/vda/vda1/partition", "1")
        // A disk whose name `vda` prefixes: its partition is not vda's.
        .link(
            "sys/class/block/vdaa/device",
            "../../../devices/pci0000:00/0000:00:04.0/virtio1",
        )
        .file("sys/class/block/vdaa/dev", "254:32")
        .file("sys/class/block/vdaa/vdaa1/dev", "254:33")
        .file("sys/class/block/vdaa/vdaa1/partition", "1")
        // No `device` link: a loop device is not a disk.
        .file("sys/class/block/loop0/dev", "7:0")
        .file(
            "run/udev/data/b254:0",
            "S:disk/by-id/x\nE:ID_MODEL_ENC=QEMU\\x20HARDDISK\\x20\nE:ID_ATA_SATA=1\n",
        )
        .link("dev/disk/by-id/virtio-a", "../../vda")
        .link("dev/disk/by-id/virtio-b", "../../vda")
        .link("dev/disk/by-id/virtio-c-part1", "../../vda1");
    let s = t.host().storage();
    assert_eq!(s.total, 4, "vda, vda1, vdaa, vdaa1");
    assert_eq!(s.disks.len(), 2);
    let d = &s.disks[0];
    assert_eq!(
        (d.id.as_str(), d.device.as_str(), d.size, d.block_size),
        ("vda", "254:0", 2048 * 512, 4096)
    );
    assert_eq!(
        (d.kind.as_str(), d.model.as_str()),
        ("sata", "QEMU HARDDISK")
    );
    assert_eq!((d.rpm, d.serial.as_str()), (1, "disk-serial"));
    assert_eq!(d.device_id, "virtio-b", "the last link by name");
    assert_eq!(d.pci_address, "0000:00:04.0", "through the virtio parent");
    assert_eq!(
        d.partitions,
        vec![Partition {
            id: "vda1".into(),
            device: "254:1".into(),
            read_only: true,
            size: 1024 * 512,
            partition: 1,
        }]
    );
    let json = serde_json::to_value(d).unwrap();
    assert_eq!(json["device_id"], "virtio-b");
    assert!(
        json.get("wwn").is_none(),
        "omitted when empty, as Go's omitempty"
    );
}

#[test]
fn network_cards_are_interfaces_with_devices_and_a_port_each() {
    let t = Tree::new();
    let pci = "sys/devices/pci0000:00/0000:00:03.0";
    t.dir("sys/bus/virtio")
        .dir("sys/bus/pci")
        .dir("sys/bus/pci/drivers/virtio-pci")
        .dir(&format!("{pci}/virtio2"))
        .link(&format!("{pci}/virtio2/subsystem"), "../../../../bus/virtio")
        .link(&format!("{pci}/subsystem"), "../../../bus/pci")
        .dir("sys/bus/virtio/drivers/virtio_net")
        .link(
            &format!("{pci}/virtio2/driver"),
            "../../../../bus/virtio/drivers/virtio_net",
        )
        .file(&format!("{pci}/vendor"), "0x1af4")
        .file(&format!("{pci}/device"), "0x1000")
        .file(&format!("{pci}/class"), "0x020000")
        .link("sys/bus/pci/devices/0000:00:03.0", "../../../devices/pci0000:00/0000:00:03.0")
        .link("sys/class/net/eth0/device", &format!("../../../{}/virtio2", pci.trim_start_matches("sys/")))
        .file("sys/class/net/eth0/address", "52:54:00:12:34:56")
        .file("sys/class/net/eth0/type", "1")
        .file("sys/class/net/eth0/carrier", "1")
        .file("sys/class/net/eth0/speed", "-1")
        .file("sys/class/net/eth0/dev_port", "0")
        // A bridge has no device: not a card.
        .file("sys/class/net/br0/address", "00:16:3e:00:00:01")
        .file(
            "usr/share/misc/pci.ids",
            "# comment\n1af4  Red Hat, Inc.\n\t1000  Virtio network device\n\t\t1af4 0001  sub\n1b00  Other\n",
        );
    let n = t.host().network();
    assert_eq!(n.total, 1, "{n:?}");
    let c = &n.cards[0];
    assert_eq!(c.pci_address, "0000:00:03.0");
    assert_eq!(
        (c.vendor_id.as_str(), c.product_id.as_str()),
        ("1af4", "1000")
    );
    assert_eq!(
        (c.vendor.as_str(), c.product.as_str()),
        ("Red Hat, Inc.", "Virtio network device")
    );
    assert_eq!(c.driver, "virtio_net", "the interface's device's driver");
    assert_eq!(c.ports.len(), 1);
    let p = &c.ports[0];
    assert_eq!((p.id.as_str(), p.protocol.as_str()), ("eth0", "ethernet"));
    assert!(p.link_detected);
    assert_eq!(p.link_speed, 0, "an unknown speed is left out");
}

#[test]
fn system_without_dmi_has_null_parts() {
    let s = Tree::new().host().system();
    assert!(s.firmware.is_none() && s.chassis.is_none() && s.motherboard.is_none());
    let json = serde_json::to_value(&s).unwrap();
    assert!(json["firmware"].is_null() && json["chassis"].is_null());
    assert!(["unknown", "container", "virtual-machine", "physical"].contains(&s.kind.as_str()));

    let t = Tree::new();
    t.file("sys/class/dmi/id/sys_vendor", "QEMU\n")
        .file("sys/class/dmi/id/chassis_type", "1")
        .file("sys/class/dmi/id/product_serial", "S123");
    let s = t.host().system();
    assert_eq!(s.vendor, "QEMU");
    assert_eq!(s.chassis.as_ref().unwrap().kind, "Other");
    let redacted = Resources {
        system: s,
        ..Resources::default()
    }
    .without_identifiers();
    assert_eq!(redacted.system.serial, "");
    assert_eq!(redacted.system.vendor, "QEMU");
}

#[test]
fn sizes_and_lists_parse_as_the_kernel_writes_them() {
    assert_eq!(byte_size("48K"), Some(48 << 10));
    assert_eq!(byte_size("1024 kB"), Some(1 << 20));
    assert_eq!(byte_size("12"), Some(12));
    assert_eq!(byte_size("x"), None);
    assert_eq!(cpu_list("0-2,5"), vec![0, 1, 2, 5]);
    assert_eq!(cpu_list(""), Vec::<u64>::new());
    assert_eq!(cpu_list("0-99999999"), Vec::<u64>::new(), "bounded");
    assert_eq!(unescape_udev("a\\x20b\\x2"), "a b\\x2");
}
