//! [`Extra`]: a message's keys that JSIP gives no meaning, kept to be sent on unchanged.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// The keys of a message that are none of JSIP's, with their values, in key order (the
/// order serde_json's `Map` kept them in, and the order they are written in).
///
/// A short sorted list, not a map: a message has none or one or two such keys, and an
/// SLP that adds one to each answer (the echo's marker) paid for a `BTreeMap`'s node,
/// insertion and teardown; a list costs one allocation and a copy (`bench/callgrind.sh`:
/// some 200 instructions a round trip less). It offers what plugins use of
/// `serde_json::Map` (`get`, `insert`, `remove`, `entry`, iteration, indexing,
/// `extend`, `append`, `collect`), so their code reads the same.
#[derive(Clone, Default, PartialEq)]
pub struct Extra(Vec<(String, Value)>);

impl Extra {
    pub const fn new() -> Extra {
        Extra(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where `key` is, or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key`; gives back the value it replaced, as a map does.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        if self.0.capacity() == 0 {
            // The usual first and only key: room for it alone, made at once, where
            // growing an empty list took the general path for room for four
            // (callgrind: about 45 instructions of the echo's round trip).
            self.0 = vec![(key, value)];
            return None;
        }
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut Value) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    /// The entries with their values changeable, in key order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Value)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// Moves every entry of `other` in, a repeated key taking `other`'s value.
    pub fn append(&mut self, other: &mut Extra) {
        self.extend(std::mem::take(&mut other.0));
    }

    /// `key`'s place, to fill if it is empty (`or_insert`), as a map's `entry`.
    pub fn entry(&mut self, key: impl Into<String>) -> Entry<'_> {
        let key = key.into();
        let at = self.find(&key);
        Entry {
            extra: self,
            key,
            at,
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().map(|(_, v)| v)
    }
}

/// A key's place in an [`Extra`] ([`Extra::entry`]).
pub struct Entry<'a> {
    extra: &'a mut Extra,
    key: String,
    /// Where the key is, or where it would go.
    at: Result<usize, usize>,
}

impl<'a> Entry<'a> {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key's value, `value` put there first if it had none.
    pub fn or_insert(self, value: Value) -> &'a mut Value {
        self.or_insert_with(|| value)
    }

    /// The key's value, `make`'s put there first if it had none.
    pub fn or_insert_with(self, make: impl FnOnce() -> Value) -> &'a mut Value {
        let list = &mut self.extra.0;
        let at = match self.at {
            Ok(at) => at,
            Err(at) => {
                list.insert(at, (self.key, make()));
                at
            }
        };
        &mut list[at].1
    }
}

/// The entries of an [`Extra`], in key order.
pub struct Iter<'a>(std::slice::Iter<'a, (String, Value)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a String, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Extra {
    type Item = (&'a String, &'a Value);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Extra {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Extend<(String, Value)> for Extra {
    /// A repeated key keeps its last value, as a map's `extend` does.
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, entries: I) {
        for (k, v) in entries {
            self.insert(k, v);
        }
    }
}

impl FromIterator<(String, Value)> for Extra {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(entries: I) -> Extra {
        let mut extra = Extra::new();
        extra.extend(entries);
        extra
    }
}

impl From<Map<String, Value>> for Extra {
    /// The map's keys are in order already.
    fn from(map: Map<String, Value>) -> Extra {
        Extra(map.into_iter().collect())
    }
}

impl From<Extra> for Map<String, Value> {
    fn from(extra: Extra) -> Map<String, Value> {
        extra.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Extra {
    type Output = Value;

    /// Panics if `key` is not there, as `serde_json::Map`'s indexing does.
    fn index(&self, key: &str) -> &Value {
        self.get(key)
            .unwrap_or_else(|| panic!("no key {key:?} in the message's extra keys"))
    }
}

impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Extra {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every operation against serde_json's `Map`, which `Extra` replaced: the same
    /// answers and the same order, for keys inserted in any order and repeated.
    #[test]
    fn behaves_as_the_map_it_replaced() {
        let keys = ["b", "a", "X-Tag", "a", "c", "", "b", "Z"];
        let mut extra = Extra::new();
        let mut map = Map::new();
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(
                extra.insert(k.to_string(), json!(n)),
                map.insert(k.to_string(), json!(n)),
                "insert {k}"
            );
            assert_eq!(extra.len(), map.len());
            let ours: Vec<_> = extra.iter().collect();
            let theirs: Vec<_> = map.iter().collect();
            assert_eq!(ours, theirs);
        }
        for k in ["a", "b", "nope", "Z", ""] {
            assert_eq!(extra.get(k), map.get(k), "get {k}");
            assert_eq!(extra.contains_key(k), map.contains_key(k));
        }
        assert_eq!(extra["X-Tag"], map["X-Tag"]);
        *extra.get_mut("c").unwrap() = json!("changed");
        assert_eq!(extra["c"], "changed");
        assert_eq!(extra.remove("a"), map.remove("a"));
        assert_eq!(extra.remove("a"), None);
        assert!(!extra.contains_key("a"));
        extra.retain(|k, _| k != "b");
        assert_eq!(
            extra.keys().map(String::as_str).collect::<Vec<_>>(),
            ["", "X-Tag", "Z", "c"]
        );
        assert_eq!(
            serde_json::to_string(&extra).unwrap(),
            r#"{"":5,"X-Tag":2,"Z":7,"c":"changed"}"#
        );
        let back: Map<String, Value> = extra.clone().into();
        assert_eq!(Extra::from(back), extra);

        // The rest of what a map offers, against the map again.
        let mut map: Map<String, Value> = extra.clone().into();
        *extra.entry("c").or_insert(json!(0)) = json!("entered");
        *map.entry("c").or_insert(json!(0)) = json!("entered");
        assert_eq!(extra.entry("new").key(), "new");
        assert_eq!(
            extra.entry("new").or_insert(json!(1)),
            map.entry("new").or_insert(json!(1))
        );
        assert_eq!(extra.entry("new").or_insert_with(|| json!(2)), &json!(1));
        for (_, v) in extra.iter_mut() {
            *v = json!([v.clone()]);
        }
        for (_, v) in map.iter_mut() {
            *v = json!([v.clone()]);
        }
        extra.values_mut().for_each(|v| v[0] = json!(null));
        map.values_mut().for_each(|v| v[0] = json!(null));
        let mut more: Extra = [("Z".to_string(), json!(9)), ("zz".to_string(), json!(8))]
            .into_iter()
            .collect();
        let mut more_map: Map<String, Value> = more.clone().into();
        extra.append(&mut more);
        map.append(&mut more_map);
        assert!(more.is_empty());
        assert_eq!(
            extra.iter().collect::<Vec<_>>(),
            map.iter().collect::<Vec<_>>()
        );
    }
}
