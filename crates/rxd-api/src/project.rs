//! `/1.0/projects`: the project object and the bodies that create, change and rename one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

go_struct! {
    /// A project as `GET /1.0/projects/<name>` returns it.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Project {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
        /// URLs of what the project holds (instances, images).
        pub used_by: Vec<String>,
    }
}

go_struct! {
    /// `POST /1.0/projects`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProjectsPost {
        pub config: BTreeMap<String, String>,
        pub description: String,
        pub name: String,
    }
}

go_struct! {
    /// `PUT /1.0/projects/<name>`; `PATCH` takes either field, so both are optional. Clients
    /// that send back what they read also send `name` and `used_by`: ignored, as in LXD.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProjectPut {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub config: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
    }
}

go_struct! {
    /// `POST /1.0/projects/<name>`: rename.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProjectPost {
        pub name: String,
    }
}

go_struct! {
    /// `GET /1.0/projects/<name>/state` (extension `project_usage`): each resource's limit and
    /// usage, keyed `cpu`, `disk`, `memory`, `networks`, `processes`, `instances`,
    /// `containers` and `virtual-machines`.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProjectState {
        pub resources: BTreeMap<String, ProjectStateResource>,
    }
}

go_struct! {
    /// One resource of a [`ProjectState`]; `limit` is -1 when there is none. (LXD's struct has
    /// no JSON tags: the keys are Go's field names.)
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct ProjectStateResource {
        #[serde(rename = "Limit")]
        pub limit: i64,
        #[serde(rename = "Usage")]
        pub usage: i64,
    }
}
