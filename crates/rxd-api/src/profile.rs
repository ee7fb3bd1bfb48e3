//! `/1.0/profiles`: the profile object, creation, edits and renames. Field order is LXD's
//! (`ProfilePut`'s fields, then `name` and `used_by`).

pub use crate::shared::Devices;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

go_struct! {
    /// A profile as `GET /1.0/profiles/<name>` and listings return it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Profile {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub devices: Devices,
        pub name: String,
        /// The instances using it (URLs), those the caller may see.
        pub used_by: Vec<String>,
    }
}

go_struct! {
    /// `POST /1.0/profiles`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProfilesPost {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub devices: Devices,
        pub name: String,
    }
}

go_struct! {
    /// `PUT /1.0/profiles/<name>`, and `PATCH` (an absent field keeps its value; for PUT,
    /// absent is LXD's zero value). Bodies from pylxd carry `name` and `used_by` too: ignored.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProfilePut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub config: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub devices: Option<Devices>,
    }
}

impl ProfilePut {
    /// The writable part of a profile, as `lxc profile edit` sends it back.
    pub fn from_profile(p: &Profile) -> ProfilePut {
        ProfilePut {
            config: Some(p.config.clone()),
            description: Some(p.description.clone()),
            devices: Some(p.devices.clone()),
        }
    }
}

go_struct! {
    /// `POST /1.0/profiles/<name>`: rename.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProfilePost {
        pub name: String,
    }
}
