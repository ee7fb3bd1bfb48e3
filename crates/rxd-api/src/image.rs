//! `/1.0/images` and `/1.0/images/aliases`: image objects, their aliases, and the bodies that
//! create and change them. (rxd imports images uploaded directly: the tarball is the body of
//! `POST /1.0/images`, described by `X-LXD-*` headers, so [`ImagesPost`] is decoded only to
//! refuse remote sources clearly.)

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

go_struct! {
    /// An image as `GET /1.0/images/<fingerprint>` returns it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Image {
        pub auto_update: bool,
        pub properties: BTreeMap<String, String>,
        pub public: bool,
        pub expires_at: String,
        pub profiles: Vec<String>,
        pub aliases: Vec<ImageAlias>,
        pub architecture: String,
        pub cached: bool,
        pub filename: String,
        pub fingerprint: String,
        pub size: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub update_source: Option<ImageSource>,
        #[serde(rename = "type")]
        pub kind: String,
        pub created_at: String,
        pub last_used_at: String,
        pub uploaded_at: String,
        /// rxd only: LXD 5.0's image has no project.
        pub project: String,
    }
}

go_struct! {
    /// An alias as listed inside an image.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImageAlias {
        pub name: String,
        pub description: String,
    }
}

go_struct! {
    /// Where a cached image came from (rxd caches none).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImageSource {
        pub alias: String,
        pub certificate: String,
        pub protocol: String,
        pub server: String,
        pub image_type: String,
    }
}

go_struct! {
    /// `PUT /1.0/images/<fingerprint>` (`lxc image edit`); `PATCH` takes any of them, so
    /// every field is optional. rxd stores `properties` and `public`, and refuses what it would
    /// not honour in the others.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImagePut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub auto_update: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub properties: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub public: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub expires_at: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub profiles: Option<Vec<String>>,
    }
}

go_struct! {
    /// `POST /1.0/images` with a JSON body: an image from another server or from an instance.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImagesPost {
        pub auto_update: bool,
        pub properties: BTreeMap<String, String>,
        pub public: bool,
        pub expires_at: String,
        pub profiles: Vec<String>,
        pub filename: String,
        pub source: Option<ImagesPostSource>,
        pub compression_algorithm: String,
        pub aliases: Vec<ImageAlias>,
    }
}

go_struct! {
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImagesPostSource {
        pub alias: String,
        pub certificate: String,
        pub protocol: String,
        pub server: String,
        pub image_type: String,
        pub mode: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub url: String,
        pub name: String,
        pub fingerprint: String,
        pub secret: String,
        pub project: String,
    }
}

go_struct! {
    /// An upload's operation metadata once it is done.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImageUploadMetadata {
        pub fingerprint: String,
        pub size: i64,
    }
}

go_struct! {
    /// An alias as `GET /1.0/images/aliases/<name>` returns it; also the body of
    /// `POST /1.0/images/aliases` (LXD's `ImageAliasesPost`), where `type` is ignored.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImageAliasesEntry {
        pub description: String,
        /// The image's fingerprint (a unique prefix is accepted in requests).
        pub target: String,
        pub name: String,
        #[serde(rename = "type")]
        pub kind: String,
    }
}

/// `POST /1.0/images/aliases`.
pub type ImageAliasesPost = ImageAliasesEntry;

go_struct! {
    /// `PUT /1.0/images/aliases/<name>`; `PATCH` takes either field, so both are optional.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImageAliasesEntryPut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub target: Option<String>,
    }
}

go_struct! {
    /// `POST /1.0/images/aliases/<name>`: rename.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ImageAliasesEntryPost {
        pub name: String,
    }
}
