//! The hash maps on the per-message path.
//!
//! The stack, the registry and the runners look up a DialogueID, a peer name or an
//! instance several times per message; with std's SipHash that was about 2% of the
//! server's CPU per round trip. foldhash is several times faster on short keys, and its
//! per-process random seed still keeps the keys peers choose from being predictable.

pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
