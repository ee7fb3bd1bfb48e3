//! `GET /1.0/resources`: the host's hardware as LXD 5.0 reports it (`api.Resources`). Field
//! order is LXD's declaration order, which is the order Go writes them; a Go `omitempty` field
//! is left out at its zero value, and a nil slice or pointer without it is written as `null`
//! (an `Option` here, `None` for nil).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn zero(n: &u64) -> bool {
    *n == 0
}

/// A float as Go's `encoding/json` writes one: a whole number without a fraction (`480`, not
/// serde's `480.0`).
fn go_float<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn usb_speeds_read_as_go_writes_them() {
        let d = |speed: f64| {
            serde_json::to_value(super::UsbDevice {
                speed,
                ..Default::default()
            })
            .unwrap()["speed"]
                .to_string()
        };
        assert_eq!(d(480.0), "480");
        assert_eq!(d(1.5), "1.5");
        assert_eq!(d(0.0), "0");
    }
}

go_struct! {
    /// The whole answer.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Resources {
        pub cpu: Cpu,
        pub memory: Memory,
        pub gpu: Gpu,
        pub network: Network,
        pub storage: Storage,
        pub usb: Usb,
        pub pci: Pci,
        pub system: System,
    }
}

go_struct! {
    /// Processors: `architecture` is the kernel's machine name (`x86_64`), `total` the number of
    /// threads.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Cpu {
        pub architecture: String,
        pub sockets: Vec<CpuSocket>,
        pub total: u64,
    }
}

go_struct! {
    /// One socket; frequencies in MHz.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct CpuSocket {
        #[serde(skip_serializing_if = "String::is_empty")]
        pub name: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub vendor: String,
        pub socket: u64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub cache: Vec<CpuCache>,
        pub cores: Vec<CpuCore>,
        #[serde(skip_serializing_if = "zero")]
        pub frequency: u64,
        #[serde(skip_serializing_if = "zero")]
        pub frequency_minimum: u64,
        #[serde(skip_serializing_if = "zero")]
        pub frequency_turbo: u64,
    }
}

go_struct! {
    /// A cache level; `size` in bytes.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct CpuCache {
        pub level: u64,
        #[serde(rename = "type")]
        pub kind: String,
        pub size: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct CpuCore {
        pub core: u64,
        pub die: u64,
        pub threads: Vec<CpuThread>,
        #[serde(skip_serializing_if = "zero")]
        pub frequency: u64,
    }
}

go_struct! {
    /// One hardware thread: `id` is N of `cpuN`, `thread` its index in the core.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct CpuThread {
        pub id: i64,
        pub numa_node: u64,
        pub thread: u64,
        pub online: bool,
        pub isolated: bool,
    }
}

go_struct! {
    /// Memory in bytes.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Memory {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub nodes: Vec<MemoryNode>,
        pub hugepages_total: u64,
        pub hugepages_used: u64,
        pub hugepages_size: u64,
        pub used: u64,
        pub total: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct MemoryNode {
        pub numa_node: u64,
        pub hugepages_used: u64,
        pub hugepages_total: u64,
        pub used: u64,
        pub total: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Gpu {
        pub cards: Vec<GpuCard>,
        pub total: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct GpuCard {
        #[serde(skip_serializing_if = "String::is_empty")]
        pub driver: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub driver_version: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub drm: Option<GpuDrm>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sriov: Option<GpuSriov>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub nvidia: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub mdev: BTreeMap<String, serde_json::Value>,
        pub numa_node: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub pci_address: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub vendor: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub vendor_id: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub product: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub product_id: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub usb_address: String,
    }
}

go_struct! {
    /// A card's DRM nodes: names (`card0`, `controlD64`, `renderD128`) and their `major:minor`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct GpuDrm {
        pub id: u64,
        pub card_name: String,
        pub card_device: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub control_name: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub control_device: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub render_name: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub render_device: String,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct GpuSriov {
        pub current_vfs: u64,
        pub maximum_vfs: u64,
        pub vfs: Option<Vec<GpuCard>>,
    }
}

go_struct! {
    /// Network cards: host interfaces backed by a device (not bridges, veths or loopback).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Network {
        pub cards: Vec<NetworkCard>,
        pub total: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkCard {
        #[serde(skip_serializing_if = "String::is_empty")]
        pub driver: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub driver_version: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub ports: Vec<NetworkPort>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub sriov: Option<NetworkSriov>,
        pub numa_node: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub pci_address: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub vendor: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub vendor_id: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub product: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub product_id: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub firmware_version: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub usb_address: String,
    }
}

go_struct! {
    /// One port of a card: `id` is the interface name, `link_speed` in Mbit/s.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkPort {
        pub id: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub address: String,
        pub port: u64,
        pub protocol: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub supported_modes: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub supported_ports: Option<Vec<String>>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub port_type: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub transceiver_type: String,
        pub auto_negotiation: bool,
        pub link_detected: bool,
        #[serde(skip_serializing_if = "zero")]
        pub link_speed: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub link_duplex: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub infiniband: Option<serde_json::Value>,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct NetworkSriov {
        pub current_vfs: u64,
        pub maximum_vfs: u64,
        pub vfs: Option<Vec<NetworkCard>>,
    }
}

go_struct! {
    /// Disks; `total` counts disks and their partitions.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Storage {
        pub disks: Vec<Disk>,
        pub total: u64,
    }
}

go_struct! {
    /// A whole disk: `id` its kernel name, `device` its `major:minor`, sizes in bytes.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Disk {
        pub id: String,
        pub device: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub model: String,
        #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
        pub kind: String,
        pub read_only: bool,
        pub size: u64,
        pub removable: bool,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub wwn: String,
        pub numa_node: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub device_path: String,
        pub block_size: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub firmware_version: String,
        pub rpm: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub serial: String,
        pub device_id: String,
        pub partitions: Vec<Partition>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub pci_address: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub usb_address: String,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Partition {
        pub id: String,
        pub device: String,
        pub read_only: bool,
        pub size: u64,
        pub partition: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Usb {
        pub devices: Vec<UsbDevice>,
        pub total: u64,
    }
}

go_struct! {
    /// A USB device (hubs left out); `speed` in Mbit/s.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct UsbDevice {
        pub bus_address: u64,
        pub device_address: u64,
        pub interfaces: Option<Vec<UsbInterface>>,
        pub vendor: String,
        pub vendor_id: String,
        pub product: String,
        pub product_id: String,
        #[serde(serialize_with = "go_float")]
        pub speed: f64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct UsbInterface {
        pub class: String,
        pub class_id: u64,
        pub driver: String,
        pub driver_version: String,
        pub number: u64,
        pub subclass: String,
        pub subclass_id: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Pci {
        pub devices: Vec<PciDevice>,
        pub total: u64,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct PciDevice {
        pub driver: String,
        pub driver_version: String,
        pub numa_node: u64,
        pub pci_address: String,
        pub vendor: String,
        pub vendor_id: String,
        pub product: String,
        pub product_id: String,
        pub iommu_group: u64,
        pub vpd: PciVpd,
    }
}

go_struct! {
    /// Vital product data; rxd does not read it, so this is always `{}`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct PciVpd {
        #[serde(skip_serializing_if = "String::is_empty")]
        pub product_name: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub entries: BTreeMap<String, String>,
    }
}

go_struct! {
    /// The machine, from DMI; `type` is `physical`, `container`, `virtual-machine` or
    /// `unknown`. Without DMI the three parts are `null`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct System {
        pub uuid: String,
        pub vendor: String,
        pub product: String,
        pub family: String,
        pub version: String,
        pub sku: String,
        pub serial: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub firmware: Option<Firmware>,
        pub chassis: Option<Chassis>,
        pub motherboard: Option<Motherboard>,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Firmware {
        pub vendor: String,
        pub date: String,
        pub version: String,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Chassis {
        pub vendor: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub serial: String,
        pub version: String,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Motherboard {
        pub vendor: String,
        pub product: String,
        pub serial: String,
        pub version: String,
    }
}

impl Resources {
    /// What a caller who is not a server administrator sees: the same, less what identifies
    /// this very machine (its DMI UUID, serial numbers, disks' WWNs and ids, its network ports'
    /// MAC addresses). LXD shows those to any trusted client; a restricted client has no use
    /// for them.
    pub fn without_identifiers(mut self) -> Resources {
        let s = &mut self.system;
        s.uuid.clear();
        s.serial.clear();
        if let Some(c) = &mut s.chassis {
            c.serial.clear();
        }
        if let Some(m) = &mut s.motherboard {
            m.serial.clear();
        }
        for d in &mut self.storage.disks {
            d.serial.clear();
            d.wwn.clear();
            d.device_id.clear();
        }
        for port in self
            .network
            .cards
            .iter_mut()
            .flat_map(|c| c.ports.iter_mut())
        {
            port.address.clear();
        }
        self
    }
}
