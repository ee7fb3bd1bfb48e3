//! What a grant gives on a project: LXD's permission names.

/// A permission on one project (LXD's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    View,
    OperateContainers,
    ManageContainers,
    ManageImages,
    ManageProfiles,
    ManageNetworks,
    ManageStorageVolumes,
    ManageProjects,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::View,
        Permission::OperateContainers,
        Permission::ManageContainers,
        Permission::ManageImages,
        Permission::ManageProfiles,
        Permission::ManageNetworks,
        Permission::ManageStorageVolumes,
        Permission::ManageProjects,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::OperateContainers => "operate-containers",
            Permission::ManageContainers => "manage-containers",
            Permission::ManageImages => "manage-images",
            Permission::ManageProfiles => "manage-profiles",
            Permission::ManageNetworks => "manage-networks",
            Permission::ManageStorageVolumes => "manage-storage-volumes",
            Permission::ManageProjects => "manage-projects",
        }
    }
}
