//! Cache and distributed-lock port for Cuttle.
//!
//! Two adapters implement [`Cache`]: [`MemoryCache`] (one process: the embedded single-node mode
//! and tests) and [`RedisCache`] (shared by every process of the distributed mode). Both are held
//! to the same behaviour by `tests/conformance.rs`, which runs one set of stories against each.
//!
//! Locks are leases, not Redlock: one Redis server decides, and a lock expires after its ttl so
//! that a crashed holder cannot block others forever. Holders of long work must `extend_lock`
//! before the ttl runs out and must treat a failed extend as having lost the lock.

#![warn(missing_docs)]

use std::time::Duration;

mod memory;
mod redis_cache;

pub use memory::MemoryCache;
pub use redis_cache::RedisCache;

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend failed or rejected the operation (unreachable, or e.g. incrementing a value
    /// that is not an integer).
    #[error("cache backend error: {0}")]
    Backend(String),
}

/// A held lock: its name and the random token that proves who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// The name passed to [`Cache::try_lock`].
    pub name: String,
    /// A random token unique to this acquisition; only its holder can extend or release it.
    pub token: String,
}

/// Key-value cache with expiry, counters and expiring locks.
///
/// Values are opaque bytes. Cache keys and lock names live in separate namespaces, so a lock
/// named `x` never collides with a cache key `x`. A ttl is rounded up to whole milliseconds
/// (Redis's resolution), so a zero ttl means "expires in one millisecond".
#[async_trait::async_trait]
pub trait Cache: Send + Sync + 'static {
    /// Returns the value of `key`, or None if absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Sets `key` to `value`, replacing any previous value and ttl; None keeps it until deleted.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError>;

    /// Sets only if absent; true when set.
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError>;

    /// Deletes `key`; deleting a missing key is Ok.
    async fn delete(&self, key: &str) -> Result<(), CacheError>;

    /// Atomic increment; sets ttl when the key is created (fixed-window rate limits). Returns
    /// the new value. The value is stored as a decimal string, so `get` returns e.g. `b"3"`;
    /// incrementing a value that is not an integer fails.
    async fn increment(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CacheError>;

    /// Mutual exclusion across processes: Some(lock) if acquired, None if held by someone else.
    /// Expires after ttl.
    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, CacheError>;

    /// Extends only if still held with this token; false otherwise. The new ttl counts from now.
    async fn extend_lock(&self, lock: &Lock, ttl: Duration) -> Result<bool, CacheError>;

    /// Releases only if still held with this token (Lua compare-and-delete in Redis); false
    /// otherwise.
    async fn release_lock(&self, lock: &Lock) -> Result<bool, CacheError>;

    /// Checks that the cache is reachable (readiness probes).
    async fn health(&self) -> Result<(), CacheError>;
}

/// A ttl in whole milliseconds, rounded up and at least 1, because Redis rejects `PX 0` and
/// truncating would turn a sub-millisecond ttl into "never expires".
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    let millis = ttl.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// A fresh random lock token.
pub(crate) fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_secs(1)), 1000);
        assert_eq!(ttl_millis(Duration::MAX), u64::MAX);
    }
}
