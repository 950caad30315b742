//! A dialog's open transactions in one direction, by CSeq.
//!
//! Nearly every dialog has at most one transaction open each way at a time: a MESSAGE
//! until its answer, an INVITE until its ACK, then a BYE. So the first one lives inline
//! and only a second one at the same time moves them into a map. A `BTreeMap` alone
//! allocated a node for every out-of-dialog MESSAGE and freed it at the answer, some 600
//! instructions a MESSAGE with their lookups.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(super) enum Transactions<T> {
    #[default]
    None,
    One(u64, T),
    /// Two or more at once; back to `None` when the last one goes.
    Many(BTreeMap<u64, T>),
}

impl<T> Transactions<T> {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Transactions::None => true,
            Transactions::One(..) => false,
            Transactions::Many(map) => map.is_empty(),
        }
    }

    pub(super) fn get(&self, cseq: u64) -> Option<&T> {
        match self {
            Transactions::One(c, t) if *c == cseq => Some(t),
            Transactions::Many(map) => map.get(&cseq),
            _ => None,
        }
    }

    pub(super) fn get_mut(&mut self, cseq: u64) -> Option<&mut T> {
        match self {
            Transactions::One(c, t) if *c == cseq => Some(t),
            Transactions::Many(map) => map.get_mut(&cseq),
            _ => None,
        }
    }

    pub(super) fn contains(&self, cseq: u64) -> bool {
        self.get(cseq).is_some()
    }

    /// Adds or replaces the transaction of `cseq`; returns the one it replaced.
    pub(super) fn insert(&mut self, cseq: u64, t: T) -> Option<T> {
        match std::mem::take(self) {
            Transactions::None => {
                *self = Transactions::One(cseq, t);
                None
            }
            Transactions::One(c, old) if c == cseq => {
                *self = Transactions::One(cseq, t);
                Some(old)
            }
            Transactions::One(c, other) => {
                *self = Transactions::Many(BTreeMap::from([(c, other), (cseq, t)]));
                None
            }
            Transactions::Many(mut map) => {
                let old = map.insert(cseq, t);
                *self = Transactions::Many(map);
                old
            }
        }
    }

    pub(super) fn remove(&mut self, cseq: u64) -> Option<T> {
        match self {
            Transactions::One(c, _) if *c == cseq => match std::mem::take(self) {
                Transactions::One(_, t) => Some(t),
                _ => unreachable!("matched above"),
            },
            Transactions::Many(map) => {
                let t = map.remove(&cseq);
                if map.is_empty() {
                    *self = Transactions::None;
                }
                t
            }
            _ => None,
        }
    }

    /// In CSeq order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let (one, many) = match self {
            Transactions::None => (None, None),
            Transactions::One(c, t) => (Some((*c, t)), None),
            Transactions::Many(map) => (None, Some(map.iter().map(|(c, t)| (*c, t)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_lives_inline_and_a_second_moves_both_into_a_map() {
        let mut t = Transactions::default();
        assert!(t.is_empty());
        assert_eq!(t.insert(5, 'a'), None);
        assert!(matches!(t, Transactions::One(5, 'a')));
        assert_eq!(t.insert(5, 'b'), Some('a'), "the same CSeq replaces");
        assert_eq!(t.insert(3, 'c'), None);
        assert!(matches!(t, Transactions::Many(_)));
        assert_eq!(t.iter().collect::<Vec<_>>(), [(3, &'c'), (5, &'b')]);
        assert_eq!(t.remove(5), Some('b'));
        assert_eq!(t.remove(3), Some('c'));
        assert!(
            matches!(t, Transactions::None),
            "empty again, the map freed"
        );
        assert_eq!(t.remove(3), None);
    }

    proptest! {
        /// Against a `BTreeMap`, over random inserts, removes and lookups.
        #[test]
        fn it_agrees_with_a_btree_map(ops in proptest::collection::vec((0u8..4, 0u64..6, any::<u32>()), 1..100)) {
            let mut t = Transactions::default();
            let mut model = BTreeMap::new();
            for (op, cseq, v) in ops {
                match op {
                    0 | 1 => prop_assert_eq!(t.insert(cseq, v), model.insert(cseq, v)),
                    2 => prop_assert_eq!(t.remove(cseq), model.remove(&cseq)),
                    _ => {
                        if let Some(x) = t.get_mut(cseq) {
                            *x = x.wrapping_add(1);
                        }
                        if let Some(x) = model.get_mut(&cseq) {
                            *x = x.wrapping_add(1);
                        }
                    }
                }
                prop_assert_eq!(t.is_empty(), model.is_empty());
                prop_assert_eq!(t.contains(cseq), model.contains_key(&cseq));
                prop_assert_eq!(t.get(cseq), model.get(&cseq));
                let got: Vec<(u64, u32)> = t.iter().map(|(c, v)| (c, *v)).collect();
                let want: Vec<(u64, u32)> = model.iter().map(|(c, v)| (*c, *v)).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
