//! One behaviour story for every `BlobStore`: each story below runs against the local directory
//! store (`mod local`) and against S3 (`mod s3`, a real S3-compatible server; start one with
//! `infra/s3.sh`). An unreachable S3 server fails the S3 tests; they are never skipped.
//!
//! Environment: `CUTTLE_TEST_S3_ENDPOINT` (default `http://127.0.0.1:9000`, keys `cuttle` /
//! `cuttle-secret`), and `CUTTLE_TEST_S3_DATA_DIR` (default `$HOME/.cache/cuttle/s3-data`), read
//! only when the server lacks ListMultipartUploads (s3s-fs), see [`Leftovers::unfinished`].

#![allow(clippy::unwrap_used, reason = "test code: unwrap is how a story fails")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use base64::Engine as _;
use bytes::Bytes;
use cuttle_blob::{
    BlobError, BlobReader, BlobStore, ByteStream, LocalBlobStore, MIN_PART_SIZE, ObjectInfo,
    S3BlobStore, S3Config, bytes_stream,
};
use futures::StreamExt;

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Stories. Each takes the store under test and a way to look for unfinished uploads.
// ---------------------------------------------------------------------------------------------

async fn put_then_get_round_trips_bytes_and_size(store: Arc<dyn BlobStore>, _: &Leftovers) {
    let info = store
        .put("packages/acme.web.1.0.0.zip", body_of(b"hello, cuttle"))
        .await
        .unwrap();
    assert_eq!(info, object("packages/acme.web.1.0.0.zip", 13));

    let reader = store
        .get("packages/acme.web.1.0.0.zip", None)
        .await
        .unwrap();
    assert_eq!((reader.size, reader.total_size), (13, 13));
    assert_eq!(read_all(reader).await, b"hello, cuttle");
    assert_eq!(
        store.head("packages/acme.web.1.0.0.zip").await.unwrap(),
        Some(object("packages/acme.web.1.0.0.zip", 13))
    );
}

async fn empty_objects_are_stored(store: Arc<dyn BlobStore>, _: &Leftovers) {
    let info = store.put("empty", body_of(b"")).await.unwrap();
    assert_eq!(info, object("empty", 0));
    let reader = store.get("empty", None).await.unwrap();
    assert_eq!((reader.size, reader.total_size), (0, 0));
    assert!(read_all(reader).await.is_empty());
}

async fn get_with_range_returns_exactly_those_bytes(store: Arc<dyn BlobStore>, _: &Leftovers) {
    store
        .put("logs/task-1.txt", body_of(b"0123456789"))
        .await
        .unwrap();

    let reader = store.get("logs/task-1.txt", Some(2..5)).await.unwrap();
    assert_eq!((reader.size, reader.total_size), (3, 10));
    assert_eq!(read_all(reader).await, b"234");

    // Like HTTP ranges, an end past the object stops at its end...
    let reader = store.get("logs/task-1.txt", Some(7..100)).await.unwrap();
    assert_eq!((reader.size, reader.total_size), (3, 10));
    assert_eq!(read_all(reader).await, b"789");

    // ...and a range starting at or past the end, or an empty one, reads nothing.
    for range in [10..20, 4..4] {
        let reader = store.get("logs/task-1.txt", Some(range)).await.unwrap();
        assert_eq!((reader.size, reader.total_size), (0, 10));
        assert!(read_all(reader).await.is_empty());
    }
}

async fn a_large_body_streams_through_multipart_and_round_trips(
    store: Arc<dyn BlobStore>,
    _: &Leftovers,
) {
    // 12 MiB and a bit, in 1 MiB chunks: with 5 MiB parts S3 needs three parts, the last short.
    let data = patterned(12 * MIB + 123);
    let info = store
        .put("artifacts/big.bin", chunked(&data, MIB))
        .await
        .unwrap();
    assert_eq!(info, object("artifacts/big.bin", data.len() as u64));

    let reader = store.get("artifacts/big.bin", None).await.unwrap();
    assert_eq!(reader.total_size, data.len() as u64);
    assert!(read_all(reader).await == data, "content differs");

    // A range across the first part boundary comes back intact.
    let range = (5 * MIB as u64 - 10)..(5 * MIB as u64 + 10);
    let reader = store
        .get("artifacts/big.bin", Some(range.clone()))
        .await
        .unwrap();
    assert_eq!(
        read_all(reader).await,
        &data[range.start as usize..range.end as usize]
    );

    // A range over several parts, starting and ending inside one (on S3: one GET for the first
    // part's worth, then ranged GETs fetched ahead), comes back whole and in order.
    let range = (MIB as u64 + 7)..(12 * MIB as u64 + 100);
    let reader = store
        .get("artifacts/big.bin", Some(range.clone()))
        .await
        .unwrap();
    assert_eq!(reader.size, range.end - range.start);
    assert_eq!(reader.total_size, data.len() as u64);
    assert!(
        read_all(reader).await == data[range.start as usize..range.end as usize],
        "content of the long range differs"
    );
}

async fn a_body_that_fails_midway_leaves_no_object(
    store: Arc<dyn BlobStore>,
    leftovers: &Leftovers,
) {
    // Fails inside the first part (S3: before anything was sent)...
    let result = store
        .put("small-failure", failing_after(&patterned(1000), 10))
        .await;
    assert!(result.is_err(), "a failed body must fail the put");
    assert_eq!(store.head("small-failure").await.unwrap(), None);

    // ...and after one whole part went up (S3: a multipart upload that must be aborted).
    let result = store
        .put("large-failure", failing_after(&patterned(7 * MIB), MIB))
        .await;
    assert!(result.is_err(), "a failed body must fail the put");
    assert_eq!(store.head("large-failure").await.unwrap(), None);
    assert!(matches!(
        store.get("large-failure", None).await,
        Err(BlobError::NotFound(_))
    ));
    assert_eq!(leftovers.unfinished().await, Vec::<String>::new());
}

async fn a_failed_overwrite_keeps_the_previous_object(
    store: Arc<dyn BlobStore>,
    leftovers: &Leftovers,
) {
    store.put("config.json", body_of(b"v1")).await.unwrap();
    let result = store
        .put("config.json", failing_after(&patterned(7 * MIB), MIB))
        .await;
    assert!(result.is_err());
    assert_eq!(
        read_all(store.get("config.json", None).await.unwrap()).await,
        b"v1"
    );
    assert_eq!(leftovers.unfinished().await, Vec::<String>::new());
}

async fn a_put_abandoned_midway_leaves_nothing_behind(
    store: Arc<dyn BlobStore>,
    leftovers: &Leftovers,
) {
    // The body hands over 6 MiB (S3: one 5 MiB part goes up), says so, then stalls forever;
    // the put future is then dropped, as when a client disconnects.
    let (reached_stall, stalled) = tokio::sync::oneshot::channel::<()>();
    let data = patterned(6 * MIB);
    let body: ByteStream = Box::pin(chunks(&data, MIB).chain(futures::stream::once(async move {
        // The receiver is gone only if the put already returned, which the select reports.
        let _ = reached_stall.send(());
        futures::future::pending::<std::io::Result<Bytes>>().await
    })));
    tokio::select! {
        result = store.put("abandoned", body) => panic!("the put cannot finish, got {result:?}"),
        _ = stalled => {}
    }

    assert_eq!(store.head("abandoned").await.unwrap(), None);
    // Cleanup after a drop may run as a background task (S3 abort), so wait for it, boundedly.
    let mut unfinished = leftovers.unfinished().await;
    for _ in 0..50 {
        if unfinished.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        unfinished = leftovers.unfinished().await;
    }
    assert_eq!(unfinished, Vec::<String>::new());
}

async fn put_overwrites_an_existing_object(store: Arc<dyn BlobStore>, _: &Leftovers) {
    store
        .put("a/b.txt", body_of(b"first version"))
        .await
        .unwrap();
    let info = store.put("a/b.txt", body_of(b"second")).await.unwrap();
    assert_eq!(info, object("a/b.txt", 6));
    assert_eq!(
        read_all(store.get("a/b.txt", None).await.unwrap()).await,
        b"second"
    );
    assert_eq!(store.list("a/").await.unwrap(), vec![object("a/b.txt", 6)]);
}

async fn delete_removes_the_object_and_tolerates_missing_keys(
    store: Arc<dyn BlobStore>,
    _: &Leftovers,
) {
    store.put("x/y/z.txt", body_of(b"z")).await.unwrap();
    store.put("x/keep.txt", body_of(b"k")).await.unwrap();

    store.delete("x/y/z.txt").await.unwrap();
    assert_eq!(store.head("x/y/z.txt").await.unwrap(), None);
    assert!(matches!(
        store.get("x/y/z.txt", None).await,
        Err(BlobError::NotFound(_))
    ));
    assert_eq!(store.list("").await.unwrap(), vec![object("x/keep.txt", 1)]);

    store.delete("x/y/z.txt").await.unwrap();
    store.delete("never/existed").await.unwrap();
    // The key is free again after a delete.
    store.put("x/y/z.txt", body_of(b"again")).await.unwrap();
    assert_eq!(
        store.head("x/y/z.txt").await.unwrap(),
        Some(object("x/y/z.txt", 5))
    );
}

async fn list_returns_objects_under_a_prefix_sorted_by_key(
    store: Arc<dyn BlobStore>,
    _: &Leftovers,
) {
    for key in [
        "packages/b/2.zip",
        "packages/a/1.zip",
        "packages/a/10.zip",
        "packagesX/other.zip",
        "logs/1.txt",
    ] {
        store.put(key, body_of(key.as_bytes())).await.unwrap();
    }
    let sized = |key: &str| object(key, key.len() as u64);

    assert_eq!(
        store.list("packages/").await.unwrap(),
        vec![
            sized("packages/a/1.zip"),
            sized("packages/a/10.zip"),
            sized("packages/b/2.zip")
        ]
    );
    // A prefix is a plain string prefix, not only whole path segments.
    assert_eq!(
        store.list("packages/a/1").await.unwrap(),
        vec![sized("packages/a/1.zip"), sized("packages/a/10.zip")]
    );
    assert_eq!(
        store.list("packages").await.unwrap(),
        vec![
            sized("packages/a/1.zip"),
            sized("packages/a/10.zip"),
            sized("packages/b/2.zip"),
            sized("packagesX/other.zip")
        ]
    );
    assert_eq!(store.list("").await.unwrap().len(), 5);
    assert_eq!(store.list("nothing/").await.unwrap(), vec![]);
}

async fn hostile_keys_are_rejected(store: Arc<dyn BlobStore>, _: &Leftovers) {
    for key in [
        "../x",
        "/abs",
        "a/../../b",
        "",
        "a//b",
        "./a",
        "a\\..\\b",
        "a\0b",
    ] {
        let invalid =
            |result: Result<(), BlobError>| matches!(result, Err(BlobError::InvalidKey(_)));
        assert!(
            invalid(store.put(key, body_of(b"evil")).await.map(drop)),
            "put {key:?}"
        );
        assert!(invalid(store.get(key, None).await.map(drop)), "get {key:?}");
        assert!(invalid(store.head(key).await.map(drop)), "head {key:?}");
        assert!(invalid(store.delete(key).await), "delete {key:?}");
    }
    for prefix in ["../", "/abs", "a/../"] {
        assert!(
            matches!(store.list(prefix).await, Err(BlobError::InvalidKey(_))),
            "list {prefix:?}"
        );
    }
    assert_eq!(store.list("").await.unwrap(), vec![]);
}

async fn get_of_a_missing_key_is_not_found(store: Arc<dyn BlobStore>, _: &Leftovers) {
    match store.get("missing/key", None).await {
        Err(BlobError::NotFound(key)) => assert_eq!(key, "missing/key"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.get("missing/key", Some(0..10)).await,
        Err(BlobError::NotFound(_))
    ));
    assert_eq!(store.head("missing/key").await.unwrap(), None);
}

async fn health_succeeds_on_a_working_store(store: Arc<dyn BlobStore>, _: &Leftovers) {
    store.health().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// One test per story and backend.
// ---------------------------------------------------------------------------------------------

macro_rules! conformance {
    ($($story:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $story() {
                    let fixture = super::LocalFixture::new();
                    super::$story(fixture.store.clone(), &fixture.leftovers).await;
                }
            )*
        }

        mod s3 {
            $(
                #[tokio::test]
                async fn $story() {
                    let fixture = super::S3Fixture::new(3).await;
                    super::$story(fixture.store.clone(), &fixture.leftovers).await;
                    fixture.remove_bucket().await;
                }
            )*
        }

        /// One part upload and one streamed GET at a time, not ranged reads fetched ahead.
        mod s3_one_request_at_a_time {
            $(
                #[tokio::test]
                async fn $story() {
                    let fixture = super::S3Fixture::new(1).await;
                    super::$story(fixture.store.clone(), &fixture.leftovers).await;
                    fixture.remove_bucket().await;
                }
            )*
        }
    };
}

conformance!(
    put_then_get_round_trips_bytes_and_size,
    empty_objects_are_stored,
    get_with_range_returns_exactly_those_bytes,
    a_large_body_streams_through_multipart_and_round_trips,
    a_body_that_fails_midway_leaves_no_object,
    a_failed_overwrite_keeps_the_previous_object,
    a_put_abandoned_midway_leaves_nothing_behind,
    put_overwrites_an_existing_object,
    delete_removes_the_object_and_tolerates_missing_keys,
    list_returns_objects_under_a_prefix_sorted_by_key,
    hostile_keys_are_rejected,
    get_of_a_missing_key_is_not_found,
    health_succeeds_on_a_working_store,
);

#[tokio::test]
async fn local_store_never_writes_outside_its_root() {
    let parent = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(parent.path().join("root")).unwrap();
    for key in ["../escaped", "a/../../escaped", "/tmp/escaped"] {
        assert!(store.put(key, body_of(b"x")).await.is_err());
    }
    let mut names: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec!["root"]);
}

#[tokio::test]
async fn s3_connect_rejects_a_part_size_below_the_s3_minimum() {
    let mut config = s3_config(&unique_bucket());
    config.part_size = MIN_PART_SIZE - 1;
    assert!(matches!(
        S3BlobStore::connect(config).await,
        Err(BlobError::Backend(_))
    ));
}

/// Services of one installation start at the same moment (pods, or the test harness) and each
/// creates the bucket if it is missing: the losers of that race must connect too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stores_connecting_at_once_to_a_new_bucket_all_succeed() {
    let bucket = unique_bucket();
    let connects = (0..4).map(|_| S3BlobStore::connect(s3_config(&bucket)));
    for result in futures::future::join_all(connects).await {
        assert!(result.is_ok(), "{:?}", result.err());
    }
}

#[tokio::test]
async fn s3_connect_with_a_wrong_secret_is_refused() {
    let mut config = s3_config(&unique_bucket());
    config.secret_access_key = Some("not-the-secret".to_owned());
    assert!(matches!(
        S3BlobStore::connect(config).await,
        Err(BlobError::Backend(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Fixtures.
// ---------------------------------------------------------------------------------------------

/// Where a backend would keep traces of an unfinished upload.
enum Leftovers {
    /// The local store's `tmp/` directory.
    LocalTempDir(PathBuf),
    /// The S3 bucket's in-progress multipart uploads.
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

impl Leftovers {
    /// Names of unfinished uploads; empty when nothing is left behind.
    async fn unfinished(&self) -> Vec<String> {
        match self {
            Leftovers::LocalTempDir(directory) => std::fs::read_dir(directory)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Leftovers::S3 { client, bucket } => {
                match client.list_multipart_uploads().bucket(bucket).send().await {
                    Ok(output) => output
                        .uploads()
                        .iter()
                        .map(|upload| format!("{:?} {:?}", upload.key(), upload.upload_id()))
                        .collect(),
                    // s3s-fs does not implement ListMultipartUploads. It keeps one metadata
                    // file per open upload in its data directory, named after the bucket, and
                    // AbortMultipartUpload deletes it, so look there instead.
                    Err(error) if error.code() == Some("NotImplemented") => {
                        s3s_fs_open_uploads(bucket)
                    }
                    Err(error) => panic!("ListMultipartUploads failed: {error:?}"),
                }
            }
        }
    }
}

/// Open multipart uploads of `bucket` according to s3s-fs's data directory, which holds
/// `.bucket-<base64url(bucket)>.object-<base64url(key)>.upload-<id>.metadata.json` per upload.
fn s3s_fs_open_uploads(bucket: &str) -> Vec<String> {
    let data_dir = std::env::var_os("CUTTLE_TEST_S3_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/cuttle/s3-data")
        });
    let bucket_marker = format!(
        ".bucket-{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bucket)
    );
    std::fs::read_dir(&data_dir)
        .unwrap_or_else(|error| {
            panic!(
                "the S3 server lacks ListMultipartUploads and its data directory {} is not \
                 readable ({error}); set CUTTLE_TEST_S3_DATA_DIR",
                data_dir.display()
            )
        })
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&bucket_marker) && name.contains(".upload-"))
        .collect()
}

struct LocalFixture {
    store: Arc<dyn BlobStore>,
    leftovers: Leftovers,
    _root: tempfile::TempDir,
}

impl LocalFixture {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::new(root.path()).unwrap();
        Self {
            store: Arc::new(store),
            leftovers: Leftovers::LocalTempDir(root.path().join("tmp")),
            _root: root,
        }
    }
}

struct S3Fixture {
    store: Arc<dyn BlobStore>,
    leftovers: Leftovers,
}

impl S3Fixture {
    /// Connects to a fresh bucket with `concurrency` part uploads and ranged reads at once;
    /// panics (fails the test) when the server is unreachable.
    async fn new(concurrency: usize) -> Self {
        let bucket = unique_bucket();
        let config = S3Config {
            upload_concurrency: concurrency,
            download_concurrency: concurrency,
            ..s3_config(&bucket)
        };
        let store = S3BlobStore::connect(config).await.unwrap_or_else(|error| {
            panic!(
                "S3 at {} is unreachable or refused us ({error}); start it with infra/s3.sh",
                s3_endpoint()
            )
        });
        Self {
            store: Arc::new(store),
            leftovers: Leftovers::S3 {
                client: raw_s3_client(),
                bucket,
            },
        }
    }

    /// Deletes the test bucket and its objects once a story has passed.
    async fn remove_bucket(self) {
        let Leftovers::S3 { client, bucket } = &self.leftovers else {
            unreachable!("an S3 fixture has S3 leftovers")
        };
        for object in self.store.list("").await.unwrap() {
            self.store.delete(&object.key).await.unwrap();
        }
        client.delete_bucket().bucket(bucket).send().await.unwrap();
    }
}

fn s3_endpoint() -> String {
    std::env::var("CUTTLE_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".to_owned())
}

fn s3_config(bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(s3_endpoint()),
        region: "us-east-1".to_owned(),
        bucket: bucket.to_owned(),
        access_key_id: Some("cuttle".to_owned()),
        secret_access_key: Some("cuttle-secret".to_owned()),
        force_path_style: true,
        // The smallest part S3 allows, so that the 12 MiB story needs several parts.
        part_size: MIN_PART_SIZE,
        upload_concurrency: 3,
        download_concurrency: 3,
    }
}

/// A plain SDK client for what the port does not expose (listing multipart uploads, buckets).
fn raw_s3_client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(s3_endpoint())
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            "cuttle",
            "cuttle-secret",
            None,
            None,
            "tests",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn unique_bucket() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Bodies and readers.
// ---------------------------------------------------------------------------------------------

fn object(key: &str, size: u64) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        size,
    }
}

fn body_of(data: &[u8]) -> ByteStream {
    bytes_stream(Bytes::copy_from_slice(data))
}

/// Bytes that differ from position to position, so a misplaced part shows up as a mismatch.
fn patterned(length: usize) -> Vec<u8> {
    (0..length).map(|index| (index % 251) as u8).collect()
}

fn chunks(
    data: &[u8],
    chunk_size: usize,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + use<> {
    let pieces: Vec<_> = data
        .chunks(chunk_size)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    futures::stream::iter(pieces)
}

fn chunked(data: &[u8], chunk_size: usize) -> ByteStream {
    Box::pin(chunks(data, chunk_size))
}

/// Yields `data` in chunks, then fails as a dropped client connection would.
fn failing_after(data: &[u8], chunk_size: usize) -> ByteStream {
    Box::pin(chunks(data, chunk_size).chain(futures::stream::once(async {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        ))
    })))
}

async fn read_all(mut reader: BlobReader) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(chunk) = reader.stream.next().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        data.len() as u64,
        reader.size,
        "reader.size matches the body"
    );
    data
}
