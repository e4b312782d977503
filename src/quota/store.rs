//! The store seam: the shared-data operations a quota needs ([`SharedStore`]; the
//! real one, over proxy-wasm shared data, is in `host.rs`), and [`MemoryStore`], the
//! same semantics in memory for unit tests and benchmarks.

use std::collections::HashMap;
use std::fmt;

/// Why a shared-data operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The CAS token no longer matches (another worker wrote the key); also what
    /// [`super::QuotaPolicy::check`] reports once its retries are exhausted.
    CasMismatch,
    /// Any other host failure.
    Unavailable,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => f.write_str("shared data CAS retries exhausted"),
            StoreError::Unavailable => f.write_str("shared data unavailable"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The shared-data operations the quota needs, mirroring proxy-wasm's
/// `get_shared_data` / `set_shared_data`.
///
/// Implementations must keep proxy-wasm-cpp-host's semantics, on which exact
/// counting relies: every successful `set` gives the key a new CAS token, unique
/// across all keys; `set` with `Some(cas)` fails with [`StoreError::CasMismatch`] if
/// the key exists with another token and *creates* the key if it is missing; `set`
/// with `None` writes unconditionally.
pub trait SharedStore {
    /// The value and CAS token of `key`; `(None, None)` if the key does not exist.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Writes `value`, conditionally on `cas` (see the trait docs).
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Hook run by [`MemoryStore`] just before a `set` reaches the map: it sees the store
/// and the key being written, and may write to the store (a concurrent worker).
pub type BeforeSetHook = Box<dyn FnMut(&mut MemoryStore, &str)>;

/// In-memory [`SharedStore`] with proxy-wasm-cpp-host's semantics (one CAS counter
/// for all keys, `set` with a token creates a missing key), for unit tests and
/// benchmarks. It can fail on demand and run a hook between a read and the
/// following write, to simulate other workers interleaving.
pub struct MemoryStore {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    unavailable: bool,
    before_set: Option<BeforeSetHook>,
    sets: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.entries.len())
            .field("unavailable", &self.unavailable)
            .field("sets", &self.sets)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            entries: HashMap::new(),
            next_cas: 1,
            unavailable: false,
            before_set: None,
            sets: 0,
        }
    }

    /// Makes every following operation fail with [`StoreError::Unavailable`] (or
    /// work again).
    #[cfg(test)]
    pub(crate) fn set_unavailable(&mut self, unavailable: bool) {
        self.unavailable = unavailable;
    }

    /// Installs (or removes) the hook run before each `set`. The hook is not run
    /// for writes made from inside itself.
    #[cfg(test)]
    pub(crate) fn set_before_set(&mut self, hook: Option<BeforeSetHook>) {
        self.before_set = hook;
    }

    /// Writes raw bytes unconditionally (e.g. a corrupt value), bypassing the hook.
    #[cfg(test)]
    pub(crate) fn put_raw(&mut self, key: &str, value: &[u8]) {
        let cas = self.next_cas();
        self.entries.insert(key.to_string(), (value.to_vec(), cas));
    }

    /// The stored bytes of `key`, if any.
    pub fn raw(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(|(v, _)| v.as_slice())
    }

    /// Number of keys in the store.
    pub fn key_count(&self) -> usize {
        self.entries.len()
    }

    /// The keys, in no particular order.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of `set` calls that reached the map (successful or not).
    #[cfg(test)]
    pub(crate) fn set_calls(&self) -> u64 {
        self.sets
    }

    fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1; // 0 means "no CAS" in the ABI
        }
        cas
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        if self.unavailable {
            return Err(StoreError::Unavailable);
        }
        Ok(match self.entries.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if let Some(mut hook) = self.before_set.take() {
            hook(self, key);
            if self.before_set.is_none() {
                self.before_set = Some(hook);
            }
        }
        if self.unavailable {
            return Err(StoreError::Unavailable);
        }
        self.sets += 1;
        if let (Some(expected), Some((_, current))) = (cas, self.entries.get(key)) {
            if expected != 0 && expected != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = self.next_cas();
        self.entries.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}
