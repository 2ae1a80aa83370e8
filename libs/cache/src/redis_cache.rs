//! [`Cache`] on Redis, shared by every process of a distributed installation.
//!
//! Keys are `{prefix}cache:{key}` and `{prefix}lock:{name}`. Everything that must be atomic
//! (create-with-ttl increments, token-checked extend and release) runs as one Lua script, because
//! separate commands would let another client act between them.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, SetExpiry, SetOptions};

use crate::{Cache, CacheError, Lock};

/// Bounds how long a dead or unreachable server can stall a caller (per attempt).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Cache operations are tiny; a reply slower than this means the server is in trouble.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Increments and, only when this call created the key, starts its expiry window.
const INCREMENT_SCRIPT: &str = r"
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// Extends the lock only while it still holds the caller's token.
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lock only while it still holds the caller's token, so that a holder whose lease
/// expired cannot release the lock somebody else acquired since.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// A [`Cache`] backed by a Redis server; cheap to clone (clones share one connection).
#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    increment_script: Script,
    extend_script: Script,
    release_script: Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password, so it is deliberately not kept or shown.
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`); every key gets `prefix` in front (used
    /// verbatim, so include a separator, e.g. `cuttle:`), which keeps installations and tests
    /// that share a server apart.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url).map_err(|error| backend("parsing the URL", error))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        // ConnectionManager reconnects by itself after a dropped connection, so a Redis restart
        // costs the calls in flight, not the process.
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|error| backend("connecting", error))?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            increment_script: Script::new(INCREMENT_SCRIPT),
            extend_script: Script::new(EXTEND_SCRIPT),
            release_script: Script::new(RELEASE_SCRIPT),
        })
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}cache:{key}", self.prefix)
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }

    /// A handle to the shared connection; cloning is how ConnectionManager is meant to be used.
    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

/// `SET` options for an optional ttl, optionally only-if-absent.
fn set_options(ttl: Option<Duration>, only_if_absent: bool) -> SetOptions {
    let mut options = SetOptions::default();
    if only_if_absent {
        options = options.conditional_set(redis::ExistenceCheck::NX);
    }
    if let Some(ttl) = ttl {
        options = options.with_expiration(SetExpiry::PX(crate::ttl_millis(ttl)));
    }
    options
}

#[async_trait::async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.connection()
            .get(self.value_key(key))
            .await
            .map_err(|error| backend("GET", error))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CacheError> {
        let _: () = self
            .connection()
            .set_options(self.value_key(key), value, set_options(ttl, false))
            .await
            .map_err(|error| backend("SET", error))?;
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, CacheError> {
        // SET NX replies OK when it set the value and nil when the key already existed.
        let reply: Option<String> = self
            .connection()
            .set_options(self.value_key(key), value, set_options(ttl, true))
            .await
            .map_err(|error| backend("SET NX", error))?;
        Ok(reply.is_some())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let _: i64 = self
            .connection()
            .del(self.value_key(key))
            .await
            .map_err(|error| backend("DEL", error))?;
        Ok(())
    }

    async fn increment(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CacheError> {
        self.increment_script
            .key(self.value_key(key))
            .arg(by)
            .arg(crate::ttl_millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|error| backend("increment script", error))
    }

    async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, CacheError> {
        let token = crate::new_token();
        let reply: Option<String> = self
            .connection()
            .set_options(self.lock_key(name), &token, set_options(Some(ttl), true))
            .await
            .map_err(|error| backend("SET NX (lock)", error))?;
        Ok(reply.map(|_| Lock {
            name: name.to_owned(),
            token,
        }))
    }

    async fn extend_lock(&self, lock: &Lock, ttl: Duration) -> Result<bool, CacheError> {
        let extended: i64 = self
            .extend_script
            .key(self.lock_key(&lock.name))
            .arg(&lock.token)
            .arg(crate::ttl_millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(|error| backend("extend-lock script", error))?;
        Ok(extended == 1)
    }

    async fn release_lock(&self, lock: &Lock) -> Result<bool, CacheError> {
        let released: i64 = self
            .release_script
            .key(self.lock_key(&lock.name))
            .arg(&lock.token)
            .invoke_async(&mut self.connection())
            .await
            .map_err(|error| backend("release-lock script", error))?;
        Ok(released == 1)
    }

    async fn health(&self) -> Result<(), CacheError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(|error| backend("PING", error))?;
        Ok(())
    }
}

fn backend(operation: &str, error: redis::RedisError) -> CacheError {
    CacheError::Backend(format!("redis {operation}: {error}"))
}
