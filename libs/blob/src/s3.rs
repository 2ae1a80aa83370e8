//! [`BlobStore`] on an S3-compatible service (AWS S3, Garage, s3s-fs in development).
//!
//! Uploads stream with bounded memory: at most one part (plus one incoming chunk) is buffered.
//! A body that fits in one part is sent with a single PutObject; anything larger becomes a
//! multipart upload, which S3 only makes visible on CompleteMultipartUpload and which we abort on
//! any failure, so readers never see a partial object and no orphaned parts keep costing storage.

use std::ops::Range;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::{BlobError, BlobReader, BlobStore, ByteStream, ObjectInfo};

/// Default multipart part size: 8 MiB, the AWS CLI's default, a fair trade of memory for requests.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Smallest part size S3 accepts for every part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one upload in flight at once by default. One: on a 2-core machine with S3 on
/// loopback, four parts gained ~20% upload throughput for ~100 MB more peak memory, and two or
/// three gained nothing measurable (load-tests/RESULTS.md). Raise it for a distant S3, where
/// each part waits on the network.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 1;

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
    /// Parts of one multipart upload sent at once (default 1); each part in flight holds its
    /// buffer until S3 has it.
    pub upload_concurrency: usize,
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
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .body(SdkByteStream::from(data))
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
        buffer: BytesMut,
        body_ended: bool,
        body: &mut ByteStream,
    ) -> Result<(Vec<CompletedPart>, u64), BlobError> {
        let mut in_flight = tokio::task::JoinSet::new();
        let result = self
            .send_parts(key, upload_id, buffer, body_ended, body, &mut in_flight)
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
        mut buffer: BytesMut,
        mut body_ended: bool,
        body: &mut ByteStream,
        in_flight: &mut PartUploads,
    ) -> Result<(Vec<CompletedPart>, u64), BlobError> {
        let mut done: Vec<(usize, CompletedPart)> = Vec::new();
        let mut next_index = 0usize;
        let mut size: u64 = 0;
        loop {
            // Send full parts while more data follows, so that the last part is never empty.
            while buffer.len() > self.part_size || body_ended {
                let last = buffer.len() <= self.part_size;
                let part = if last {
                    buffer.split().freeze()
                } else {
                    buffer.split_to(self.part_size).freeze()
                };
                size += part.len() as u64;
                let store = self.clone();
                let (key, upload_id, index) = (key.to_owned(), upload_id.to_owned(), next_index);
                next_index += 1;
                in_flight.spawn(async move {
                    let part = store.upload_part(&key, &upload_id, index, part).await?;
                    Ok((index, part))
                });
                while in_flight.len() >= self.upload_concurrency.max(1) {
                    collect_part(in_flight, &mut done).await?;
                }
                if last {
                    while !in_flight.is_empty() {
                        collect_part(in_flight, &mut done).await?;
                    }
                    done.sort_by_key(|(index, _)| *index);
                    return Ok((done.into_iter().map(|(_, part)| part).collect(), size));
                }
            }
            body_ended = fill_buffer(body, &mut buffer, self.part_size).await?;
        }
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
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(data.len() as i64)
            .body(SdkByteStream::from(data))
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
        buffer: BytesMut,
        body_ended: bool,
        body: &mut ByteStream,
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
        let result = async {
            let (parts, size) = self
                .upload_parts(key, &upload_id, buffer, body_ended, body)
                .await?;
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

/// Reads body chunks into `buffer` until it holds more than `part_size` bytes or the body ends.
/// Returns true when the body has ended.
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

async fn fill_buffer(
    body: &mut ByteStream,
    buffer: &mut BytesMut,
    part_size: usize,
) -> Result<bool, BlobError> {
    while buffer.len() <= part_size {
        match body.next().await {
            Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
            Some(Err(error)) => {
                return Err(BlobError::Io(format!("reading the upload body: {error}")));
            }
            None => return Ok(true),
        }
    }
    Ok(false)
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, mut body: ByteStream) -> Result<ObjectInfo, BlobError> {
        crate::validate_key(key)?;
        let mut buffer = BytesMut::new();
        let body_ended = fill_buffer(&mut body, &mut buffer, self.part_size).await?;
        if body_ended && buffer.len() <= self.part_size {
            return self.put_single(key, buffer.freeze()).await;
        }
        self.put_multipart(key, buffer, body_ended, &mut body).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobReader, BlobError> {
        crate::validate_key(key)?;
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(range) = &range {
            // HTTP cannot express an empty range, and S3 answers 416 to one starting at or past
            // the end; both mean an empty body for an object that exists.
            if range.start >= range.end {
                return self.empty_reader(key).await;
            }
            request = request.range(format!("bytes={}-{}", range.start, range.end - 1));
        }
        let output = match request.send().await {
            Ok(output) => output,
            Err(error) if error.code() == Some("NoSuchKey") || status_of(&error) == Some(404) => {
                return Err(BlobError::NotFound(key.to_owned()));
            }
            Err(error) if status_of(&error) == Some(416) => return self.empty_reader(key).await,
            Err(error) => return Err(backend_error("downloading the object", error)),
        };
        let size = output
            .content_length()
            .and_then(|length| u64::try_from(length).ok())
            .ok_or_else(|| BlobError::Backend("GetObject response has no length".to_owned()))?;
        let total_size = match output.content_range() {
            Some(content_range) => total_from_content_range(content_range).ok_or_else(|| {
                BlobError::Backend(format!("unexpected Content-Range {content_range:?}"))
            })?,
            None => size,
        };
        let stream = futures::stream::unfold(output.body, |mut body| async move {
            body.try_next()
                .await
                .map_err(std::io::Error::other)
                .transpose()
                .map(|chunk| (chunk, body))
        });
        Ok(BlobReader {
            size,
            total_size,
            stream: Box::pin(stream),
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
}
