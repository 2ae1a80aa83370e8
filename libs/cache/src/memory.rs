//! [`Cache`] in process memory, for the embedded single-node mode and for tests.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{Cache, CacheError, Lock};

/// After this many writes, expired entries are swept, so that keys nobody reads again (expired
/// rate-limit windows, for instance) do not pile up; expiry is otherwise checked on read.
const SWEEP_EVERY_N_WRITES: u64 = 1024;

/// A [`Cache`] for a single process; locks exclude other tasks of this process only.
#[derive(Debug, Default)]
pub struct MemoryCache {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    values: HashMap<String, Entry>,
    locks: HashMap<String, Entry>,
    writes_since_sweep: u64,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    /// None: never expires.
    expires_at: Option<Instant>,
}

impl Entry {
    fn new(value: Vec<u8>, ttl: Option<Duration>, now: Instant) -> Self {
        Self {
            value,
            expires_at: ttl.and_then(|ttl| expiry(now, ttl)),
        }
    }

    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// The instant a ttl ends, rounded like Redis (see [`crate::ttl_millis`]); None if so far away
/// that `Instant` cannot represent it, which in practice means never.
fn expiry(now: Instant, ttl: Duration) -> Option<Instant> {
    now.checked_add(Duration::from_millis(crate::ttl_millis(ttl)))
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section below leaves the maps consistent before anything can panic, so
        // the data behind a poisoned lock is still valid and the cache stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The live entry for `key` in `map`, removing it if it has expired.
    fn live<'a>(
        map: &'a mut HashMap<String, Entry>,
        key: &str,
        now: Instant,
    ) -> Option<&'a mut Entry> {
        if map.get(key).is_some_and(|entry| !entry.is_live(now)) {
            map.remove(key);
        }
        map.get_mut(key)
    }

    fn note_write(&mut self, now: Instant) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= SWEEP_EVERY_N_WRITES {
            self.writes_since_sweep = 0;
            self.values.retain(|_, entry| entry.is_live(now));
            self.locks.retain(|_, entry| entry.is_live(now));
        }
    }

    /// The live lock entry named `lock.name` if `lock.token` still holds it.
    fn held_lock(&mut self, lock: &Lock, now: Instant) -> Option<&mut Entry> {
        Self::live(&mut self.locks, &lock.name, now)
            .filter(|entry| entry.value == lock.token.as_bytes())
    }
}

#[async_trait::async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut state = self.state();
        Ok(State::live(&mut state.values, key, Instant::now()).map(|entry| entry.value.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut state = self.state();
        state
            .values
            .insert(key.to_owned(), Entry::new(value.to_vec(), ttl, now));
        state.note_write(now);
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut state = self.state();
        if State::live(&mut state.values, key, now).is_some() {
            return Ok(false);
        }
        state
            .values
            .insert(key.to_owned(), Entry::new(value.to_vec(), ttl, now));
        state.note_write(now);
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.state().values.remove(key);
        Ok(())
    }

    async fn increment(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CacheError> {
        let now = Instant::now();
        let mut state = self.state();
        let new_value = match State::live(&mut state.values, key, now) {
            Some(entry) => {
                // Same rules as Redis INCRBY: the stored value must be a decimal i64.
                let current = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or_else(|| {
                        CacheError::Backend(format!("value of {key:?} is not an integer"))
                    })?;
                let new_value = current.checked_add(by).ok_or_else(|| {
                    CacheError::Backend(format!("incrementing {key:?} would overflow"))
                })?;
                // An existing key keeps its expiry: the window started when it was created.
                entry.value = new_value.to_string().into_bytes();
                new_value
            }
            None => {
                state.values.insert(
                    key.to_owned(),
                    Entry::new(by.to_string().into_bytes(), Some(ttl), now),
                );
                by
            }
        };
        state.note_write(now);
        Ok(new_value)
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, CacheError> {
        let now = Instant::now();
        let mut state = self.state();
        if State::live(&mut state.locks, name, now).is_some() {
            return Ok(None);
        }
        let lock = Lock {
            name: name.to_owned(),
            token: crate::new_token(),
        };
        state.locks.insert(
            name.to_owned(),
            Entry::new(lock.token.clone().into_bytes(), Some(ttl), now),
        );
        state.note_write(now);
        Ok(Some(lock))
    }

    async fn extend_lock(&self, lock: &Lock, ttl: Duration) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut state = self.state();
        match state.held_lock(lock, now) {
            Some(entry) => {
                entry.expires_at = expiry(now, ttl);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release_lock(&self, lock: &Lock) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut state = self.state();
        if state.held_lock(lock, now).is_none() {
            return Ok(false);
        }
        state.locks.remove(&lock.name);
        Ok(true)
    }

    async fn health(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
