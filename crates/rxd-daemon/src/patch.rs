//! LXD's edit rule for a map an object holds (config keys, devices): PUT replaces it (absent:
//! empty, Go's zero value), PATCH merges what is sent into it by key (a device sent replaces
//! the whole device of that name) and keeps it when nothing is sent.

use std::collections::BTreeMap;

pub fn merged<V>(
    current: BTreeMap<String, V>,
    sent: Option<BTreeMap<String, V>>,
    replace: bool,
) -> BTreeMap<String, V> {
    match (sent, replace) {
        (Some(sent), true) => sent,
        (Some(sent), false) => {
            let mut merged = current;
            merged.extend(sent);
            merged
        }
        (None, true) => BTreeMap::new(),
        (None, false) => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_replaces_and_patch_merges() {
        let current: BTreeMap<String, u8> = [("a".into(), 1), ("b".into(), 2)].into();
        let sent: BTreeMap<String, u8> = [("b".into(), 3), ("c".into(), 4)].into();
        assert_eq!(merged(current.clone(), Some(sent.clone()), true), sent);
        assert_eq!(
            merged(current.clone(), Some(sent), false),
            [("a".into(), 1), ("b".into(), 3), ("c".into(), 4)].into()
        );
        assert!(merged(current.clone(), None, true).is_empty());
        assert_eq!(merged(current.clone(), None, false), current);
    }
}
