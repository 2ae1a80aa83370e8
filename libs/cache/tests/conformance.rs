//! One behaviour story for every `Cache`: each story below runs against the in-process cache
//! (`mod memory`) and against a real Redis (`mod redis`, from `CUTTLE_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; start one with `infra/redis.sh`). Each Redis test works under its
//! own key prefix. An unreachable Redis fails the Redis tests; they are never skipped.
//!
//! Expiry stories use ttls of a few hundred milliseconds and then wait clearly longer than the
//! ttl; nothing asserts how fast anything happens.

#![allow(clippy::unwrap_used, reason = "test code: unwrap is how a story fails")]

use std::sync::Arc;
use std::time::Duration;

use cuttle_cache::{Cache, Lock, MemoryCache, RedisCache};

const SHORT_TTL: Duration = Duration::from_millis(300);
/// Comfortably longer than SHORT_TTL, so "expired" does not depend on scheduling luck.
const PAST_SHORT_TTL: Duration = Duration::from_millis(700);
const LONG_TTL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Stories.
// ---------------------------------------------------------------------------------------------

async fn set_get_and_delete_round_trip_bytes(cache: Arc<dyn Cache>) {
    assert_eq!(cache.get("greeting").await.unwrap(), None);
    cache.set("greeting", b"hello", None).await.unwrap();
    assert_eq!(
        cache.get("greeting").await.unwrap(),
        Some(b"hello".to_vec())
    );

    // Values are opaque bytes, not text.
    cache.set("binary", &[0, 159, 255], None).await.unwrap();
    assert_eq!(cache.get("binary").await.unwrap(), Some(vec![0, 159, 255]));

    cache.set("greeting", b"replaced", None).await.unwrap();
    assert_eq!(
        cache.get("greeting").await.unwrap(),
        Some(b"replaced".to_vec())
    );

    cache.delete("greeting").await.unwrap();
    assert_eq!(cache.get("greeting").await.unwrap(), None);
    cache.delete("never-set").await.unwrap();
}

async fn values_expire_after_their_ttl(cache: Arc<dyn Cache>) {
    cache
        .set("session", b"short-lived", Some(SHORT_TTL))
        .await
        .unwrap();
    cache.set("forever", b"kept", None).await.unwrap();
    cache
        .set("long", b"long-lived", Some(LONG_TTL))
        .await
        .unwrap();
    assert_eq!(
        cache.get("session").await.unwrap(),
        Some(b"short-lived".to_vec())
    );

    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(cache.get("session").await.unwrap(), None);
    assert_eq!(cache.get("forever").await.unwrap(), Some(b"kept".to_vec()));
    assert_eq!(
        cache.get("long").await.unwrap(),
        Some(b"long-lived".to_vec())
    );
}

async fn set_without_ttl_clears_a_previous_ttl(cache: Arc<dyn Cache>) {
    cache.set("k", b"one", Some(SHORT_TTL)).await.unwrap();
    cache.set("k", b"two", None).await.unwrap();
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(cache.get("k").await.unwrap(), Some(b"two".to_vec()));
}

async fn set_if_absent_sets_only_once(cache: Arc<dyn Cache>) {
    assert!(cache.set_if_absent("once", b"first", None).await.unwrap());
    assert!(!cache.set_if_absent("once", b"second", None).await.unwrap());
    assert_eq!(cache.get("once").await.unwrap(), Some(b"first".to_vec()));

    // An expired value counts as absent.
    assert!(
        cache
            .set_if_absent("brief", b"first", Some(SHORT_TTL))
            .await
            .unwrap()
    );
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert!(cache.set_if_absent("brief", b"second", None).await.unwrap());
    assert_eq!(cache.get("brief").await.unwrap(), Some(b"second".to_vec()));

    // So does a deleted one.
    cache.delete("once").await.unwrap();
    assert!(cache.set_if_absent("once", b"third", None).await.unwrap());
}

async fn increment_counts_within_a_window_that_starts_at_creation(cache: Arc<dyn Cache>) {
    assert_eq!(cache.increment("hits", 1, SHORT_TTL).await.unwrap(), 1);
    assert_eq!(cache.increment("hits", 5, SHORT_TTL).await.unwrap(), 6);
    assert_eq!(cache.increment("hits", -2, SHORT_TTL).await.unwrap(), 4);
    assert_eq!(cache.get("hits").await.unwrap(), Some(b"4".to_vec()));

    // The window is fixed: increments do not push the expiry back, so after the ttl the count
    // starts over.
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(cache.get("hits").await.unwrap(), None);
    assert_eq!(cache.increment("hits", 1, SHORT_TTL).await.unwrap(), 1);
}

async fn increment_continues_from_a_value_that_was_set(cache: Arc<dyn Cache>) {
    cache.set("counter", b"41", None).await.unwrap();
    assert_eq!(cache.increment("counter", 1, SHORT_TTL).await.unwrap(), 42);
    // The key existed, so the increment did not give it a ttl.
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(cache.get("counter").await.unwrap(), Some(b"42".to_vec()));

    cache.set("text", b"not a number", None).await.unwrap();
    assert!(cache.increment("text", 1, SHORT_TTL).await.is_err());
}

async fn concurrent_increments_are_not_lost(cache: Arc<dyn Cache>) {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.increment("shared", 1, LONG_TTL).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results.sort_unstable();
    assert_eq!(results, (1..=20).collect::<Vec<i64>>());
}

async fn a_held_lock_excludes_a_second_locker(cache: Arc<dyn Cache>) {
    let lock = cache.try_lock("deploy:Projects-1", LONG_TTL).await.unwrap();
    let lock = lock.expect("a free lock is acquired");
    assert_eq!(lock.name, "deploy:Projects-1");
    assert!(
        cache
            .try_lock("deploy:Projects-1", LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    // Other names are independent, and so are cache keys of the same name.
    assert!(
        cache
            .try_lock("deploy:Projects-2", LONG_TTL)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(cache.get("deploy:Projects-1").await.unwrap(), None);

    assert!(cache.release_lock(&lock).await.unwrap());
    let again = cache.try_lock("deploy:Projects-1", LONG_TTL).await.unwrap();
    assert!(again.is_some_and(|again| again.token != lock.token));
}

async fn only_one_of_many_concurrent_lockers_wins(cache: Arc<dyn Cache>) {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.try_lock("contended", LONG_TTL).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn release_with_a_wrong_token_fails(cache: Arc<dyn Cache>) {
    let lock = cache.try_lock("job", LONG_TTL).await.unwrap().unwrap();
    let impostor = Lock {
        name: lock.name.clone(),
        token: "not-the-token".to_owned(),
    };
    assert!(!cache.release_lock(&impostor).await.unwrap());
    assert!(!cache.extend_lock(&impostor, LONG_TTL).await.unwrap());
    // The real holder still holds it.
    assert!(cache.try_lock("job", LONG_TTL).await.unwrap().is_none());
    assert!(cache.release_lock(&lock).await.unwrap());
    // Releasing twice, or releasing a lock that was never taken, fails.
    assert!(!cache.release_lock(&lock).await.unwrap());
    let never_taken = Lock {
        name: "never-taken".to_owned(),
        token: "t".to_owned(),
    };
    assert!(!cache.release_lock(&never_taken).await.unwrap());
}

async fn an_expired_lock_can_be_reacquired(cache: Arc<dyn Cache>) {
    let stale = cache.try_lock("lease", SHORT_TTL).await.unwrap().unwrap();
    tokio::time::sleep(PAST_SHORT_TTL).await;
    let fresh = cache
        .try_lock("lease", LONG_TTL)
        .await
        .unwrap()
        .expect("an expired lock is free");
    // The previous holder lost it: it can neither extend nor release the new holder's lock.
    assert!(!cache.extend_lock(&stale, LONG_TTL).await.unwrap());
    assert!(!cache.release_lock(&stale).await.unwrap());
    assert!(cache.try_lock("lease", LONG_TTL).await.unwrap().is_none());
    assert!(cache.release_lock(&fresh).await.unwrap());
}

async fn extending_a_held_lock_keeps_it_past_the_first_ttl(cache: Arc<dyn Cache>) {
    let lock = cache
        .try_lock("extended", SHORT_TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(cache.extend_lock(&lock, LONG_TTL).await.unwrap());
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert!(
        cache
            .try_lock("extended", LONG_TTL)
            .await
            .unwrap()
            .is_none(),
        "the extended lock is still held"
    );
    assert!(cache.release_lock(&lock).await.unwrap());

    // Extending can also shorten, and an expired lock cannot be extended.
    let lock = cache
        .try_lock("shortened", LONG_TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(cache.extend_lock(&lock, SHORT_TTL).await.unwrap());
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert!(!cache.extend_lock(&lock, LONG_TTL).await.unwrap());
}

async fn health_succeeds_on_a_working_cache(cache: Arc<dyn Cache>) {
    cache.health().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// One test per story and backend.
// ---------------------------------------------------------------------------------------------

macro_rules! conformance {
    ($($story:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $story() {
                    super::$story(std::sync::Arc::new(cuttle_cache::MemoryCache::new())).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $story() {
                    let (cache, prefix) = super::redis_cache().await;
                    super::$story(cache).await;
                    super::remove_keys(&prefix).await;
                }
            )*
        }
    };
}

conformance!(
    set_get_and_delete_round_trip_bytes,
    values_expire_after_their_ttl,
    set_without_ttl_clears_a_previous_ttl,
    set_if_absent_sets_only_once,
    increment_counts_within_a_window_that_starts_at_creation,
    increment_continues_from_a_value_that_was_set,
    concurrent_increments_are_not_lost,
    a_held_lock_excludes_a_second_locker,
    only_one_of_many_concurrent_lockers_wins,
    release_with_a_wrong_token_fails,
    an_expired_lock_can_be_reacquired,
    extending_a_held_lock_keeps_it_past_the_first_ttl,
    health_succeeds_on_a_working_cache,
);

#[tokio::test]
async fn redis_prefixes_keep_caches_apart() {
    let (first, first_prefix) = redis_cache().await;
    let (second, second_prefix) = redis_cache().await;
    first.set("shared-name", b"first", None).await.unwrap();
    assert_eq!(second.get("shared-name").await.unwrap(), None);
    assert!(
        second
            .try_lock("shared-lock", LONG_TTL)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        first
            .try_lock("shared-lock", LONG_TTL)
            .await
            .unwrap()
            .is_some()
    );
    remove_keys(&first_prefix).await;
    remove_keys(&second_prefix).await;
}

#[tokio::test]
async fn memory_cache_default_is_empty() {
    let cache = MemoryCache::default();
    assert_eq!(cache.get("anything").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------------------------

fn redis_url() -> String {
    std::env::var("CUTTLE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis cache under a fresh prefix; panics (fails the test) when Redis is unreachable.
async fn redis_cache() -> (Arc<dyn Cache>, String) {
    let prefix = format!("cuttle-test:{}:", uuid::Uuid::new_v4().simple());
    let cache = RedisCache::connect(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "Redis at {} is unreachable ({error}); start it with infra/redis.sh",
                redis_url()
            )
        });
    (Arc::new(cache), prefix)
}

/// Deletes a passed test's keys so that repeated runs do not fill the shared server.
async fn remove_keys(prefix: &str) {
    let client = ::redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = ::redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}
