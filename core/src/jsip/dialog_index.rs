//! An SLP instance's dialogs, by DialogueID: how a message from the instance, which
//! names a dialog by its DialogueID alone, finds the dialog's key (its peer).
//!
//! Nearly every instance has one dialog (an out-of-dialog MESSAGE's, a call's), so one
//! key lives inline and only a second moves them into a map. A map for each instance
//! allocated its table when the instance began and freed it when it ended, and hashed
//! the DialogueID three times in between: some 350 instructions a MESSAGE.

use std::borrow::Borrow;
use std::hash::Hash;

use crate::hash::Map;

/// What the index needs of a key: the DialogueID it is filed under.
pub(super) trait Named: Clone {
    type Name: Hash + Eq + Clone + Borrow<str>;
    fn name(&self) -> &Self::Name;
}

#[derive(Debug, Default)]
pub(super) enum DialogIndex<K: Named> {
    #[default]
    None,
    One(K),
    /// Two or more at once; back to `None` when the last one goes.
    Many(Map<K::Name, K>),
}

/// The stack removes a dialog by its key's own id, the same allocation: asked first,
/// that saves the string compare.
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

impl<K: Named> DialogIndex<K> {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            DialogIndex::None => true,
            DialogIndex::One(_) => false,
            DialogIndex::Many(map) => map.is_empty(),
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&K> {
        match self {
            DialogIndex::One(k) if same(k.name().borrow(), id) => Some(k),
            DialogIndex::Many(map) => map.get(id),
            _ => None,
        }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Files `key` under its name, replacing a key of the same name.
    pub(super) fn insert(&mut self, key: K) {
        match std::mem::take(self) {
            DialogIndex::None => *self = DialogIndex::One(key),
            DialogIndex::One(old) if old.name() == key.name() => *self = DialogIndex::One(key),
            DialogIndex::One(old) => {
                let mut map = Map::with_capacity_and_hasher(2, Default::default());
                map.insert(old.name().clone(), old);
                map.insert(key.name().clone(), key);
                *self = DialogIndex::Many(map);
            }
            DialogIndex::Many(mut map) => {
                map.insert(key.name().clone(), key);
                *self = DialogIndex::Many(map);
            }
        }
    }

    pub(super) fn remove(&mut self, id: &str) {
        match self {
            DialogIndex::One(k) if same(k.name().borrow(), id) => *self = DialogIndex::None,
            DialogIndex::Many(map) => {
                map.remove(id);
                if map.is_empty() {
                    *self = DialogIndex::None;
                }
            }
            _ => {}
        }
    }

    /// Every key, in no particular order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        let (one, many) = match self {
            DialogIndex::None => (None, None),
            DialogIndex::One(k) => (Some(k), None),
            DialogIndex::Many(map) => (None, Some(map.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    /// A key with a payload, to tell a replaced key from its replacement.
    #[derive(Debug, Clone, PartialEq)]
    struct Key(Arc<str>, u32);

    impl Named for Key {
        type Name = Arc<str>;
        fn name(&self) -> &Arc<str> {
            &self.0
        }
    }

    fn key(name: &str, v: u32) -> Key {
        Key(name.into(), v)
    }

    #[test]
    fn one_lives_inline_and_a_second_moves_both_into_a_map() {
        let mut i = DialogIndex::default();
        i.insert(key("a", 1));
        assert!(matches!(i, DialogIndex::One(_)));
        i.insert(key("a", 2));
        assert_eq!(i.get("a"), Some(&key("a", 2)), "the same name replaces");
        i.insert(key("b", 3));
        assert!(matches!(i, DialogIndex::Many(_)));
        i.remove("a");
        i.remove("b");
        assert!(matches!(i, DialogIndex::None), "empty again, the map freed");
    }

    proptest! {
        /// Against a `HashMap`, over random inserts, removes and lookups.
        #[test]
        fn it_agrees_with_a_hash_map(ops in proptest::collection::vec((0u8..3, 0u8..5, any::<u32>()), 1..100)) {
            let mut index = DialogIndex::default();
            let mut model: HashMap<String, Key> = HashMap::new();
            for (op, n, v) in ops {
                let name = format!("d{n}");
                match op {
                    0 | 1 => {
                        index.insert(key(&name, v));
                        model.insert(name.clone(), key(&name, v));
                    }
                    _ => {
                        index.remove(&name);
                        model.remove(&name);
                    }
                }
                prop_assert_eq!(index.is_empty(), model.is_empty());
                prop_assert_eq!(index.get(&name), model.get(&name));
                prop_assert_eq!(index.contains(&name), model.contains_key(&name));
                let mut got: Vec<Key> = index.keys().cloned().collect();
                let mut want: Vec<Key> = model.values().cloned().collect();
                got.sort_by_key(|k| (k.0.clone(), k.1));
                want.sort_by_key(|k| (k.0.clone(), k.1));
                prop_assert_eq!(got, want);
            }
        }
    }
}
