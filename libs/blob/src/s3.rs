//! [`BlobStore`] on an S3-compatible service (AWS S3, Garage, s3s-fs in development).
//!
//! Uploads stream with bounded memory: the part being filled plus the parts in flight
//! (`upload_concurrency`), each one allocation of at most `part_size` bytes.
//! A body that fits in one part is sent with a single PutObject; anything larger becomes a
//! multipart upload, which S3 only makes visible on CompleteMultipartUpload and which we abort on
//! any failure, so readers never see a partial object and no orphaned parts keep costing storage.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use bytes::Bytes;
use futures::StreamExt;

use crate::{BlobError, BlobReader, BlobStore, ByteStream, ObjectInfo};

/// Default multipart part size: 8 MiB, the AWS CLI's default, a fair trade of memory for requests.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Smallest part size S3 accepts for every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one upload in flight at once by default. Two: the next part fills from the
/// incoming body while the previous one is sent; with one, receiving stalls for every part's
/// round trip (on a 2-core machine with S3 on loopback, pushing a 1 GiB package took ~6.7 s
/// with one and ~5.4 s with two; more gained nothing and cost a part's memory each,
/// load-tests/RESULTS.md). Raise it for a distant S3, where each part waits on the network.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 2;

/// Ranges of one download fetched at once by default, each [`DOWNLOAD_RANGE_SIZE`] bytes held in
/// memory until the client has taken the ones before it. Parallel ranged GETs are how S3 serves
/// one object fast; on a 2-core machine with S3 on loopback, four 4 MiB ranges downloaded a
/// 1 GiB package ~1.4x as fast as one streamed GET, for ~45 MB more peak memory
/// (load-tests/RESULTS.md).
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 4;

/// Size of the ranged GETs a download is split into when `download_concurrency` is above one.
pub const DOWNLOAD_RANGE_SIZE: u64 = 4 * 1024 * 1024;

/// Largest part size S3 accepts.
const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// S3 allows at most this many parts in one multipart upload.
const MAX_PARTS: i32 = 10_000;

/// Region used when none is configured; S3-compatible servers accept any region.
const DEFAULT_REGION: &str = "us-east-1";

/// Where and how to reach the S3 bucket.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible services (e.g. `http://127.0.0.1:9000`); None for AWS.
    pub endpoint: Option<String>,
    /// Signing region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Bucket holding the objects; created on connect if missing.
    pub bucket: String,
    /// Static access key id; None to use the AWS default credential chain.
    pub access_key_id: Option<String>,
    /// Static secret access key; must be given together with `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub force_path_style: bool,
    /// Multipart part size in bytes (default 8 MiB, at least 5 MiB per S3 rules).
    pub part_size: usize,
    /// Parts of one multipart upload sent at once (default 2); each part in flight holds its
    /// buffer until S3 has it.
    pub upload_concurrency: usize,
    /// Ranges of one download fetched at once (default 4). Above one, a download larger than
    /// [`DOWNLOAD_RANGE_SIZE`] becomes ranged GETs of that size, pinned to the first response's
    /// ETag; one means a single streamed GET.
    pub download_concurrency: usize,
}

impl S3Config {
    /// A configuration for `bucket` with the defaults: AWS endpoint, `us-east-1`, the default
    /// credential chain, virtual-hosted addressing and 8 MiB parts.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            endpoint: None,
            region: DEFAULT_REGION.to_owned(),
            bucket: bucket.into(),
            access_key_id: None,
            secret_access_key: None,
            force_path_style: false,
            part_size: DEFAULT_PART_SIZE,
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret must never reach logs, so Debug shows only whether it is set.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("force_path_style", &self.force_path_style)
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("download_concurrency", &self.download_concurrency)
            .finish()
    }
}

/// A [`BlobStore`] backed by one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    part_size: usize,
    upload_concurrency: usize,
    download_concurrency: usize,
    /// Whether uploads sign their bodies (see [`signs_payload`]).
    sign_payload: bool,
}

/// Whether uploads to `endpoint` (None: AWS) include their body in the request signature, as
/// the AWS CLI and boto3 decide: over plain HTTP yes, since nothing else protects the bytes;
/// over HTTPS no, since TLS already does and the SDK still sends a CRC32 checksum S3 verifies.
/// Signing costs a SHA-256 pass over every byte on both sides.
fn signs_payload(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|endpoint| {
        !endpoint
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    })
}

impl S3BlobStore {
    /// Builds the client from `config`, then creates the bucket if it is missing.
    pub async fn connect(config: S3Config) -> Result<Self, BlobError> {
        if config.bucket.is_empty() {
            return Err(BlobError::Backend("S3 bucket name is empty".to_owned()));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&config.part_size) {
            return Err(BlobError::Backend(format!(
                "S3 part_size {} is outside the {MIN_PART_SIZE}..={MAX_PART_SIZE} bytes S3 accepts",
                config.part_size
            )));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => {
                loader = loader.credentials_provider(Credentials::new(
                    access_key_id,
                    secret_access_key,
                    None,
                    None,
                    "cuttle-config",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(BlobError::Backend(
                    "S3 access_key_id and secret_access_key must be set together".to_owned(),
                ));
            }
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared_config = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared_config)
            .force_path_style(config.force_path_style)
            .build();
        let store = Self {
            client: Client::from_conf(s3_config),
            bucket: config.bucket,
            part_size: config.part_size,
            upload_concurrency: config.upload_concurrency.max(1),
            download_concurrency: config.download_concurrency.max(1),
            sign_payload: signs_payload(config.endpoint.as_deref()),
        };
        store.ensure_bucket(&config.region).await?;
        Ok(store)
    }

    async fn ensure_bucket(&self, region: &str) -> Result<(), BlobError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(error) if status_of(&error) == Some(404) => {}
            Err(error) => return Err(backend_error("checking the bucket", error)),
        }
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region S3 rejects as an explicit location constraint.
        if region != DEFAULT_REGION {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => {
                tracing::info!(s3.bucket = %self.bucket, "created the S3 bucket");
                Ok(())
            }
            // Another process connecting at the same time created it first: that is success.
            Err(error) if error.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            // Some servers (s3s-fs among them) answer a lost creation race with
            // BucketAlreadyExists, which AWS uses for a bucket of another account: the bucket is
            // ours only if we can reach it now.
            Err(error) if error.code() == Some("BucketAlreadyExists") => {
                match self.client.head_bucket().bucket(&self.bucket).send().await {
                    Ok(_) => Ok(()),
                    Err(_) => Err(backend_error("creating the bucket", error)),
                }
            }
            Err(error) => Err(backend_error("creating the bucket", error)),
        }
    }

    async fn put_single(&self, key: &str, data: Bytes) -> Result<ObjectInfo, BlobError> {
        let size = data.len() as u64;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .body(SdkByteStream::from(data))
            .customize();
        let request = if self.sign_payload {
            request
        } else {
            request.disable_payload_signing()
        };
        request
            .send()
            .await
            .map_err(|error| backend_error("uploading the object", error))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size,
        })
    }

    /// Uploads the parts of a multipart upload, up to `upload_concurrency` at once while the
    /// body is still being read; the caller completes or aborts it. Parts come back in order.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        parts: &mut Parts<'_>,
    ) -> Result<(Vec<CompletedPart>, u64), BlobError> {
        let mut in_flight = tokio::task::JoinSet::new();
        let result = self
            .send_parts(key, upload_id, first, parts, &mut in_flight)
            .await;
        if result.is_err() {
            // Let parts already sent settle before the caller aborts the upload, so none lands
            // after the abort and leaves an upload behind.
            while in_flight.join_next().await.is_some() {}
        }
        result
    }

    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        parts: &mut Parts<'_>,
        in_flight: &mut PartUploads,
    ) -> Result<(Vec<CompletedPart>, u64), BlobError> {
        let mut done: Vec<(usize, CompletedPart)> = Vec::new();
        let mut size: u64 = 0;
        let mut next = Some((first, false));
        for index in 0usize.. {
            let (part, last) = match next.take() {
                Some(first) => first,
                None => parts.next().await?,
            };
            size += part.len() as u64;
            let store = self.clone();
            let (key, upload_id) = (key.to_owned(), upload_id.to_owned());
            in_flight.spawn(async move {
                let part = store.upload_part(&key, &upload_id, index, part).await?;
                Ok((index, part))
            });
            while in_flight.len() >= self.upload_concurrency.max(1) {
                collect_part(in_flight, &mut done).await?;
            }
            if last {
                break;
            }
        }
        while !in_flight.is_empty() {
            collect_part(in_flight, &mut done).await?;
        }
        done.sort_by_key(|(index, _)| *index);
        Ok((done.into_iter().map(|(_, part)| part).collect(), size))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        index: usize,
        data: Bytes,
    ) -> Result<CompletedPart, BlobError> {
        let part_number = i32::try_from(index + 1)
            .ok()
            .filter(|number| *number <= MAX_PARTS)
            .ok_or_else(|| {
                BlobError::Backend(format!(
                    "object exceeds {MAX_PARTS} parts of {} bytes; raise part_size",
                    self.part_size
                ))
            })?;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(data.len() as i64)
            .body(SdkByteStream::from(data))
            .customize();
        let request = if self.sign_payload {
            request
        } else {
            request.disable_payload_signing()
        };
        let output = request
            .send()
            .await
            .map_err(|error| backend_error("uploading a part", error))?;
        Ok(CompletedPart::builder()
            .part_number(part_number)
            .set_e_tag(output.e_tag().map(str::to_owned))
            .set_checksum_crc32(output.checksum_crc32().map(str::to_owned))
            .set_checksum_crc32_c(output.checksum_crc32_c().map(str::to_owned))
            .set_checksum_crc64_nvme(output.checksum_crc64_nvme().map(str::to_owned))
            .set_checksum_sha1(output.checksum_sha1().map(str::to_owned))
            .set_checksum_sha256(output.checksum_sha256().map(str::to_owned))
            .build())
    }

    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        parts: &mut Parts<'_>,
    ) -> Result<ObjectInfo, BlobError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| backend_error("starting a multipart upload", error))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BlobError::Backend("multipart upload has no upload id".to_owned()))?
            .to_owned();
        // From here on every exit that is not a completed upload must abort it, including the
        // caller dropping this future; the guard covers the drop case.
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        let started = std::time::Instant::now();
        let result = async {
            let (parts, size) = self.upload_parts(key, &upload_id, first, parts).await?;
            let parts_sent = started.elapsed();
            let count = parts.len();
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|error| backend_error("completing the multipart upload", error))?;
            tracing::debug!(
                s3.key = %key,
                s3.parts = count,
                size,
                parts_ms = parts_sent.as_millis() as u64,
                complete_ms = (started.elapsed() - parts_sent).as_millis() as u64,
                "multipart upload complete"
            );
            Ok(size)
        }
        .await;
        match result {
            Ok(size) => {
                guard.upload_id = None;
                Ok(ObjectInfo {
                    key: key.to_owned(),
                    size,
                })
            }
            Err(error) => {
                // Abort inline (not in the guard) so that when put returns, the upload is gone.
                guard.upload_id = None;
                abort_upload(&self.client, &self.bucket, key, &upload_id).await;
                Err(error)
            }
        }
    }
}

/// Aborts a multipart upload if the put future is dropped before it finishes.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        // Drop cannot await, so the abort runs as its own task on the current runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let client = self.client.clone();
                let bucket = self.bucket.clone();
                let key = std::mem::take(&mut self.key);
                runtime.spawn(async move {
                    abort_upload(&client, &bucket, &key, &upload_id).await;
                });
            }
            Err(_) => tracing::warn!(
                s3.bucket = %self.bucket,
                s3.key = %self.key,
                s3.upload_id = %upload_id,
                "multipart upload dropped outside a runtime; its parts stay until a bucket \
                 lifecycle rule removes them"
            ),
        }
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let outcome = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    // The put already fails with the original error; a failed abort is logged, not returned,
    // because it must not hide why the upload failed.
    if let Err(error) = outcome {
        tracing::warn!(
            s3.bucket = %bucket,
            s3.key = %key,
            s3.upload_id = %upload_id,
            error = %DisplayErrorContext(&error),
            "could not abort a failed multipart upload; its parts stay until a bucket \
             lifecycle rule removes them"
        );
    }
}

/// Part uploads in flight, each answering its index and the completed part.
type PartUploads = tokio::task::JoinSet<Result<(usize, CompletedPart), BlobError>>;

/// Waits for one part upload to end; a failed or panicked part fails the whole upload (the
/// caller aborts it, and dropping the set stops the parts still in flight).
async fn collect_part(
    in_flight: &mut PartUploads,
    done: &mut Vec<(usize, CompletedPart)>,
) -> Result<(), BlobError> {
    match in_flight.join_next().await {
        Some(Ok(Ok(part))) => {
            done.push(part);
            Ok(())
        }
        Some(Ok(Err(error))) => Err(error),
        Some(Err(error)) => Err(BlobError::Backend(format!(
            "a part upload stopped: {error}"
        ))),
        None => Ok(()),
    }
}

/// Cuts a body into parts of exactly `part_size` bytes (the last one shorter), each in one
/// allocation of at most `part_size` bytes, so a part in flight holds no more memory than its
/// own data and frees it as soon as S3 has it.
struct Parts<'a> {
    body: &'a mut ByteStream,
    /// The unread rest of the last chunk received.
    leftover: Bytes,
    ended: bool,
    part_size: usize,
}

impl<'a> Parts<'a> {
    fn new(body: &'a mut ByteStream, part_size: usize) -> Self {
        Self {
            body,
            leftover: Bytes::new(),
            ended: false,
            part_size,
        }
    }

    /// Reads the next chunk into `leftover`; false once the body has ended.
    async fn receive(&mut self) -> Result<bool, BlobError> {
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.leftover = chunk;
                Ok(true)
            }
            Some(Err(error)) => Err(BlobError::Io(format!("reading the upload body: {error}"))),
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    /// The next part, and whether it is the last: a full part is only called last once the
    /// body is known to end after it, so the last part is never empty unless the body is.
    async fn next(&mut self) -> Result<(Bytes, bool), BlobError> {
        let mut part: Vec<u8> = Vec::new();
        loop {
            if !self.leftover.is_empty() {
                let take = self.leftover.len().min(self.part_size - part.len());
                if part.capacity() - part.len() < take {
                    // Grow by doubling, but never past one part, so small bodies stay small.
                    let wanted = (part.capacity() * 2)
                        .max(part.len() + take)
                        .min(self.part_size);
                    part.reserve_exact(wanted - part.len());
                }
                part.extend_from_slice(&self.leftover.split_to(take));
            }
            if part.len() == self.part_size || self.ended || !self.receive().await? {
                break;
            }
        }
        while !self.ended && self.leftover.is_empty() {
            self.receive().await?;
        }
        Ok((Bytes::from(part), self.ended && self.leftover.is_empty()))
    }
}

/// Streams a GetObject body.
fn body_stream(body: SdkByteStream) -> ByteStream {
    Box::pin(futures::stream::unfold(body, |mut body| async move {
        body.try_next()
            .await
            .map_err(std::io::Error::other)
            .transpose()
            .map(|chunk| (chunk, body))
    }))
}

/// Ranges of one object fetched ahead, `download_concurrency` at a time, and handed out in
/// order. Fetches run as their own tasks, so they progress while the client is still taking
/// earlier bytes; dropping the prefetch (the client went away) stops them.
struct Prefetch {
    store: S3BlobStore,
    key: String,
    e_tag: Option<String>,
    /// Ranges not started yet, in order.
    waiting: VecDeque<Range<u64>>,
    /// Index of the next range to start, and of the next one to hand out.
    started: usize,
    handed_out: usize,
    running: tokio::task::JoinSet<(usize, Result<Vec<Bytes>, BlobError>)>,
    /// Fetched ranges (as received, not copied together) waiting for the ones before them.
    ready: BTreeMap<usize, Vec<Bytes>>,
}

impl Prefetch {
    fn start(
        store: S3BlobStore,
        key: &str,
        e_tag: Option<String>,
        waiting: VecDeque<Range<u64>>,
    ) -> Self {
        let mut prefetch = Self {
            store,
            key: key.to_owned(),
            e_tag,
            waiting,
            started: 0,
            handed_out: 0,
            running: tokio::task::JoinSet::new(),
            ready: BTreeMap::new(),
        };
        prefetch.fill();
        prefetch
    }

    /// Starts ranges until `download_concurrency` are fetched or fetching.
    fn fill(&mut self) {
        while self.running.len() + self.ready.len() < self.store.download_concurrency {
            let Some(range) = self.waiting.pop_front() else {
                return;
            };
            let (store, key, e_tag, index) = (
                self.store.clone(),
                self.key.clone(),
                self.e_tag.clone(),
                self.started,
            );
            self.started += 1;
            self.running.spawn(async move {
                let fetched = store.fetch_range(&key, range, e_tag).await;
                (index, fetched)
            });
        }
    }

    /// The next range's bytes, in order; None after the last.
    async fn next(&mut self) -> Option<Result<Vec<Bytes>, BlobError>> {
        loop {
            if let Some(bytes) = self.ready.remove(&self.handed_out) {
                self.handed_out += 1;
                self.fill();
                return Some(Ok(bytes));
            }
            match self.running.join_next().await? {
                Ok((index, Ok(bytes))) => {
                    self.ready.insert(index, bytes);
                }
                Ok((_, Err(error))) => return Some(Err(error)),
                Err(error) => {
                    return Some(Err(BlobError::Backend(format!(
                        "a ranged download stopped: {error}"
                    ))));
                }
            }
        }
    }
}

impl S3BlobStore {
    /// Reads one range of `key` into memory, only if the object still has `e_tag`.
    async fn fetch_range(
        &self,
        key: &str,
        range: Range<u64>,
        e_tag: Option<String>,
    ) -> Result<Vec<Bytes>, BlobError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(e_tag)
            .send()
            .await
            .map_err(|error| backend_error("downloading part of the object", error))?;
        let chunks: Vec<Bytes> = output
            .body
            .collect()
            .await
            .map_err(|error| BlobError::Io(format!("downloading part of the object: {error}")))?
            .into_segments()
            .collect();
        let received: usize = chunks.iter().map(Bytes::len).sum();
        if received as u64 != range.end - range.start {
            return Err(BlobError::Backend(format!(
                "S3 sent {received} bytes for the range {}..{} of {key}",
                range.start, range.end
            )));
        }
        Ok(chunks)
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, mut body: ByteStream) -> Result<ObjectInfo, BlobError> {
        crate::validate_key(key)?;
        let mut parts = Parts::new(&mut body, self.part_size);
        let (first, last) = parts.next().await?;
        if last {
            return self.put_single(key, first).await;
        }
        self.put_multipart(key, first, &mut parts).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobReader, BlobError> {
        crate::validate_key(key)?;
        // HTTP cannot express an empty range, and S3 answers 416 to one starting at or past the
        // end; both mean an empty body for an object that exists.
        if range.as_ref().is_some_and(|range| range.start >= range.end) {
            return self.empty_reader(key).await;
        }
        // With ranged reads, the first request asks for at most one range; its answer gives the
        // object's size. Without, it asks for everything wanted.
        let start = range.as_ref().map_or(0, |range| range.start);
        let step = if self.download_concurrency > 1 {
            DOWNLOAD_RANGE_SIZE
        } else {
            u64::MAX
        };
        let first_end = range.as_ref().map_or(start.saturating_add(step), |range| {
            range.end.min(start.saturating_add(step))
        });
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if range.is_some() || first_end != u64::MAX {
            request = request.range(format!("bytes={start}-{}", first_end - 1));
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(error) if error.code() == Some("NoSuchKey") || status_of(&error) == Some(404) => {
                return Err(BlobError::NotFound(key.to_owned()));
            }
            Err(error) if status_of(&error) == Some(416) => return self.empty_reader(key).await,
            Err(error) => return Err(backend_error("downloading the object", error)),
        };
        let first_size = output
            .content_length()
            .and_then(|length| u64::try_from(length).ok())
            .ok_or_else(|| BlobError::Backend("GetObject response has no length".to_owned()))?;
        let total_size = match output.content_range() {
            Some(content_range) => total_from_content_range(content_range).ok_or_else(|| {
                BlobError::Backend(format!("unexpected Content-Range {content_range:?}"))
            })?,
            // A server that ignores ranges sends the whole object.
            None => {
                return Ok(BlobReader {
                    size: first_size,
                    total_size: first_size,
                    stream: body_stream(output.body),
                });
            }
        };
        let end = range
            .as_ref()
            .map_or(total_size, |range| range.end.min(total_size));
        let rest: VecDeque<Range<u64>> =
            std::iter::successors(Some(start + first_size), |from| from.checked_add(step))
                .take_while(|from| *from < end)
                .map(|from| from..from.saturating_add(step).min(end))
                .collect();
        let size = end.saturating_sub(start);
        let first = body_stream(output.body);
        if rest.is_empty() {
            return Ok(BlobReader {
                size: first_size,
                total_size,
                stream: first,
            });
        }
        // The rest comes as ranged GETs fetched ahead while the first part streams, each pinned
        // to the ETag just seen so that an object replaced meanwhile fails the read instead of
        // mixing two versions.
        let prefetch = Prefetch::start(self.clone(), key, output.e_tag, rest);
        let later = futures::stream::unfold(Some(prefetch), |state| async move {
            let mut prefetch = state?;
            match prefetch.next().await? {
                Ok(chunks) => Some((
                    futures::stream::iter(chunks.into_iter().map(Ok)).left_stream(),
                    Some(prefetch),
                )),
                Err(error) => Some((
                    futures::stream::once(async move { Err(std::io::Error::other(error)) })
                        .right_stream(),
                    None,
                )),
            }
        })
        .flatten();
        Ok(BlobReader {
            size,
            total_size,
            stream: Box::pin(first.chain(later)),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BlobError> {
        crate::validate_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: output
                    .content_length()
                    .and_then(|length| u64::try_from(length).ok())
                    .unwrap_or(0),
            })),
            Err(error) if status_of(&error) == Some(404) => Ok(None),
            Err(error) => Err(backend_error("reading object metadata", error)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        crate::validate_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // AWS answers 204 for a missing key; some compatible servers answer NoSuchKey.
            Err(error) if error.code() == Some("NoSuchKey") || status_of(&error) == Some(404) => {
                Ok(())
            }
            Err(error) => Err(backend_error("deleting the object", error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BlobError> {
        crate::validate_prefix(prefix)?;
        let mut objects = Vec::new();
        let mut continuation_token: Option<String> = None;
        loop {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(continuation_token.take())
                .send()
                .await
                .map_err(|error| backend_error("listing objects", error))?;
            for object in output.contents() {
                if let Some(key) = object.key() {
                    objects.push(ObjectInfo {
                        key: key.to_owned(),
                        size: object
                            .size()
                            .and_then(|size| u64::try_from(size).ok())
                            .unwrap_or(0),
                    });
                }
            }
            match output.next_continuation_token() {
                Some(token) if output.is_truncated() == Some(true) => {
                    continuation_token = Some(token.to_owned());
                }
                _ => break,
            }
        }
        // S3 already sorts by key; sorting again keeps the contract independent of the server.
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    async fn health(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|error| backend_error("checking the bucket", error))?;
        Ok(())
    }
}

impl S3BlobStore {
    /// An empty body for `key`, after checking that the object exists.
    async fn empty_reader(&self, key: &str) -> Result<BlobReader, BlobError> {
        let info = self
            .head(key)
            .await?
            .ok_or_else(|| BlobError::NotFound(key.to_owned()))?;
        Ok(BlobReader {
            size: 0,
            total_size: info.size,
            stream: Box::pin(futures::stream::empty()),
        })
    }
}

/// The total size from a `Content-Range: bytes 0-9/100` header.
fn total_from_content_range(content_range: &str) -> Option<u64> {
    content_range.rsplit_once('/')?.1.trim().parse().ok()
}

/// The HTTP status of a failed request, when the service answered at all.
fn status_of<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error
        .raw_response()
        .map(|response| response.status().as_u16())
}

fn backend_error<E>(context: &str, error: SdkError<E, HttpResponse>) -> BlobError
where
    E: std::error::Error + 'static,
{
    // DisplayErrorContext prints the whole source chain (e.g. "connection refused"), which the
    // plain Display of SdkError ("dispatch failure") hides.
    BlobError::Backend(format!("{context}: {}", DisplayErrorContext(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret() {
        let mut config = S3Config::new("packages");
        config.access_key_id = Some("cuttle".to_owned());
        config.secret_access_key = Some("very-secret-value".to_owned());
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret-value"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn total_size_is_read_from_content_range() {
        assert_eq!(total_from_content_range("bytes 0-9/100"), Some(100));
        assert_eq!(total_from_content_range("bytes 0-9/*"), None);
    }

    #[test]
    fn payloads_are_signed_only_where_tls_does_not_protect_them() {
        assert!(signs_payload(Some("http://127.0.0.1:9000")));
        assert!(signs_payload(Some("minio.internal:9000")));
        assert!(!signs_payload(Some("https://s3.example.com")));
        assert!(!signs_payload(Some("HTTPS://s3.example.com")));
        assert!(!signs_payload(None));
    }
}
