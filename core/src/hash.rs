//! The maps on the per-message path.
//!
//! The stack, the registry and the runners look up a DialogueID, a peer name or an
//! instance several times per message; with std's SipHash that was about 2% of the
//! server's CPU per round trip. foldhash is several times faster on short keys, and its
//! per-process random seed still keeps the keys peers choose from being predictable.

use std::sync::Arc;

pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A few values by `Arc<str>` key, in the order they were added, found by pointer
/// before by text.
///
/// It holds the SLP runners: a handful, looked up twice per message (an event, then
/// its instance's end) by the key the stack hands back, which is the very `Arc` filed
/// here. A hash map hashed and compared the key's text each time; here the first
/// entry's pointer usually answers, about 80 instructions a message less under
/// callgrind. Lookups by a text that is not one of these `Arc`s (the management API's)
/// compare texts, each at most once.
pub struct ShortMap<V> {
    entries: Vec<(Arc<str>, V)>,
}

impl<V> Default for ShortMap<V> {
    fn default() -> Self {
        ShortMap {
            entries: Vec::new(),
        }
    }
}

impl<V> ShortMap<V> {
    fn position(&self, key: &str) -> Option<usize> {
        let same = |k: &Arc<str>| std::ptr::eq(k.as_ptr(), key.as_ptr()) && k.len() == key.len();
        self.entries
            .iter()
            .position(|(k, _)| same(k))
            .or_else(|| self.entries.iter().position(|(k, _)| **k == *key))
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Files `value` under `key`; an entry already there with the same text is
    /// replaced, keeping its place, and given back.
    pub fn insert(&mut self, key: Arc<str>, value: V) -> Option<V> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i], (key, value)).1),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.position(key).map(|i| self.entries.remove(i).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_map_finds_by_its_own_arc_and_by_any_equal_text() {
        let mut m = ShortMap::default();
        let echo: Arc<str> = "echo".into();
        assert!(m.insert(echo.clone(), 1).is_none());
        assert!(m.insert("chat#2".into(), 2).is_none());
        assert_eq!(m.get(&echo), Some(&1));
        // Another allocation of the same text, and a slice of a longer one that starts
        // at the same byte as nothing here: both found by their text.
        assert_eq!(m.get(&String::from("chat#2")), Some(&2));
        assert_eq!(m.get(&"echo-not"[..4]), Some(&1));
        // A prefix of a key sharing its pointer is not that key.
        assert_eq!(m.get(&echo[..3]), None);
        assert_eq!(
            m.insert("echo".into(), 3),
            Some(1),
            "the same text replaces"
        );
        assert_eq!(
            m.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["echo", "chat#2"]
        );
        *m.get_mut("chat#2").unwrap() += 10;
        assert_eq!(m.remove("echo"), Some(3));
        assert_eq!(m.remove("echo"), None);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), [12]);
    }
}
