//! The fast-path store contract, run against Redis and the in-process store.

use std::sync::Arc;
use std::time::Duration;

use latchkey::store::{Fast, FastStore, Keys};

use crate::each_cache;
use crate::helpers::{CacheKind, fast_store, unique_prefix};

async fn cleanup(store: &Fast, keys: &Keys) {
    if let Fast::Redis(redis) = store {
        redis.delete_prefix(keys.prefix()).await.expect("cleanup");
    }
}

async fn set_get_del_and_expiry(kind: CacheKind) {
    let store = fast_store(kind);
    let keys = Keys::new(unique_prefix());
    let key = keys.tagged("t", "a");
    assert_eq!(store.get(&key).await.expect("get"), None);
    store.set(&key, b"v1", Duration::from_secs(30)).await.expect("set");
    assert_eq!(store.get(&key).await.expect("get").as_deref(), Some(&b"v1"[..]));
    let ttl = store.ttl(&key).await.expect("ttl").expect("has ttl");
    assert!(ttl > Duration::from_secs(25) && ttl <= Duration::from_secs(30), "{ttl:?}");
    store.set(&key, b"v2", Duration::from_secs(30)).await.expect("overwrite");
    assert_eq!(store.get(&key).await.expect("get").as_deref(), Some(&b"v2"[..]));
    assert!(store.del(&key).await.expect("del"));
    assert!(!store.del(&key).await.expect("del again"));
    assert_eq!(store.get(&key).await.expect("get"), None);
    assert_eq!(store.ttl(&key).await.expect("ttl"), None);

    // Values are bytes, not strings.
    let binary = [0u8, 255, 10, 13, 0];
    store.set(&key, &binary, Duration::from_secs(30)).await.expect("set binary");
    assert_eq!(store.get(&key).await.expect("get").as_deref(), Some(&binary[..]));

    // Expiry.
    let short = keys.tagged("t", "short");
    store.set(&short, b"x", Duration::from_millis(150)).await.expect("set");
    assert!(store.get(&short).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get(&short).await.expect("get"), None, "expired values are gone");
    cleanup(&store, &keys).await;
}
each_cache!(set_get_del_and_expiry_on, set_get_del_and_expiry);

async fn set_nx_only_once(kind: CacheKind) {
    let store = fast_store(kind);
    let keys = Keys::new(unique_prefix());
    let key = keys.tagged("nx", "a");
    assert!(store.set_nx(&key, b"first", Duration::from_secs(30)).await.expect("nx"));
    assert!(!store.set_nx(&key, b"second", Duration::from_secs(30)).await.expect("nx"));
    assert_eq!(store.get(&key).await.expect("get").as_deref(), Some(&b"first"[..]));
    // An expired key can be claimed again.
    let short = keys.tagged("nx", "b");
    assert!(store.set_nx(&short, b"1", Duration::from_millis(100)).await.expect("nx"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.set_nx(&short, b"2", Duration::from_secs(30)).await.expect("nx after expiry"));
    cleanup(&store, &keys).await;
}
each_cache!(set_nx_only_once_on, set_nx_only_once);

async fn get_del_is_single_use_under_concurrency(kind: CacheKind) {
    let store = Arc::new(fast_store(kind));
    let keys = Keys::new(unique_prefix());
    let key = keys.login_state("race");
    store.set(&key, b"state", Duration::from_secs(30)).await.expect("set");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.get_del(&key).await.expect("getdel") })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if let Some(v) = task.await.expect("join") {
            assert_eq!(v, b"state");
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one reader gets the value");
    assert_eq!(store.get(&key).await.expect("get"), None);
    cleanup(&store, &keys).await;
}
each_cache!(get_del_is_single_use_under_concurrency_on, get_del_is_single_use_under_concurrency);

async fn counters_are_atomic_with_ttl(kind: CacheKind) {
    let store = Arc::new(fast_store(kind));
    let keys = Keys::new(unique_prefix());
    let key = keys.counter("hits", "subject");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.incr(&key, 1, Duration::from_secs(60)).await.expect("incr") })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.expect("join"));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=100).collect::<Vec<i64>>(), "every increment is seen exactly once");
    assert_eq!(store.incr(&key, 5, Duration::from_secs(1)).await.expect("incr"), 105);
    let ttl = store.ttl(&key).await.expect("ttl").expect("counter has a ttl");
    assert!(ttl > Duration::from_secs(50), "an existing counter keeps its expiry: {ttl:?}");
    assert_eq!(store.incr(&key, -105, Duration::from_secs(60)).await.expect("decrement"), 0);

    let short = keys.counter("short", "subject");
    assert_eq!(store.incr(&short, 3, Duration::from_millis(100)).await.expect("incr"), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.incr(&short, 1, Duration::from_secs(60)).await.expect("incr"), 1, "window restarted");

    // A non-integer value is an error, not a panic.
    let text = keys.tagged("t", "text");
    store.set(&text, b"abc", Duration::from_secs(30)).await.expect("set");
    assert!(store.incr(&text, 1, Duration::from_secs(30)).await.is_err());
    cleanup(&store, &keys).await;
}
each_cache!(counters_are_atomic_with_ttl_on, counters_are_atomic_with_ttl);

async fn ping_answers(kind: CacheKind) {
    fast_store(kind).ping().await.expect("ping");
}
each_cache!(ping_answers_on, ping_answers);

#[tokio::test]
async fn unreachable_redis_is_a_transient_error() {
    // Nothing listens on port 1.
    let store = latchkey::store::fast::RedisStore::connect("redis://127.0.0.1:1", 2, Duration::from_millis(500))
        .expect("pool builds lazily");
    let err = store.get("k").await.expect_err("no server");
    assert!(err.is_transient(), "{err}");
    assert!(store.ping().await.is_err());
}
