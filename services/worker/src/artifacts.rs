//! Artifacts: files a job's scripts publish with `new_octopusartifact`, copied into the blob
//! store under `artifacts/<space>/<task>/` before the job directory is removed, and listed on
//! the task by the orchestrator. These are the only blobs a worker writes. Files on an agent are
//! read through the link in chunks, while the agent keeps the job's files.

use crate::script::JobLog;
use crate::service_messages::ArtifactRequest;
use crate::target::AgentSession;
use cuttle_agent_link::messages::MAX_FILE_CHUNK;
use cuttle_blob::BlobStore;
use cuttle_contracts::{JobArtifact, StepJob};
use cuttle_domain::LogCategory;
use futures::StreamExt;
use std::path::Path;

/// The largest file kept as an artifact.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Stores each requested file and returns what was stored; every file that is not kept gets a
/// warning that says why.
pub async fn collect(
    blob: &dyn BlobStore,
    job: &StepJob,
    requests: Vec<ArtifactRequest>,
    log: &JobLog,
) -> Vec<JobArtifact> {
    let mut stored = Vec::new();
    for request in requests {
        let result = store(blob, job, &request).await;
        record(result, &request, log, &mut stored).await;
    }
    stored
}

/// As [`collect`], for files on the agent a job ran on: read through the link in chunks.
pub async fn collect_from_agent(
    blob: &dyn BlobStore,
    job: &StepJob,
    requests: Vec<ArtifactRequest>,
    log: &JobLog,
    agent: &AgentSession<'_>,
) -> Vec<JobArtifact> {
    let mut stored = Vec::new();
    for request in requests {
        let result = store_from_agent(blob, job, &request, agent).await;
        record(result, &request, log, &mut stored).await;
    }
    stored
}

/// Logs what became of one artifact and keeps it when stored.
async fn record(
    result: Result<JobArtifact, String>,
    request: &ArtifactRequest,
    log: &JobLog,
    stored: &mut Vec<JobArtifact>,
) {
    match result {
        Ok(artifact) => {
            log.line(
                LogCategory::Info,
                format!(
                    "Collected the artifact '{}' ({} bytes)",
                    artifact.name, artifact.size_bytes
                ),
            )
            .await;
            stored.push(artifact);
        }
        Err(why) => {
            log.line(
                LogCategory::Warning,
                format!("The artifact '{}' was not collected: {why}.", request.name),
            )
            .await;
        }
    }
}

/// Streams one file from the agent into the blob store.
async fn store_from_agent(
    blob: &dyn BlobStore,
    job: &StepJob,
    request: &ArtifactRequest,
    agent: &AgentSession<'_>,
) -> Result<JobArtifact, String> {
    // The first chunk also tells the size, so an oversized file is refused before storing.
    let (first, size) = agent.read_file(&request.path, 0, MAX_FILE_CHUNK).await?;
    if size > MAX_ARTIFACT_BYTES {
        return Err(format!(
            "'{}' is {size} bytes, more than the {MAX_ARTIFACT_BYTES} bytes an artifact may have",
            request.path
        ));
    }
    let requester = agent.requester();
    let path = request.path.clone();
    let first_len = first.len() as u64;
    let rest = futures::stream::unfold(first_len, move |offset| {
        let (requester, path) = (requester.clone(), path.clone());
        async move {
            if offset >= size {
                return None;
            }
            match requester.read_file(&path, offset, MAX_FILE_CHUNK).await {
                Ok((data, _)) if data.is_empty() => Some((
                    Err(std::io::Error::other(format!(
                        "'{path}' became shorter while it was read"
                    ))),
                    size,
                )),
                Ok((data, _)) => {
                    let next = offset + data.len() as u64;
                    Some((Ok(bytes::Bytes::from(data)), next))
                }
                Err(err) => Some((Err(std::io::Error::other(err.to_string())), size)),
            }
        }
    });
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(first)) })
        .chain(rest)
        .boxed();
    put(blob, job, request, body).await
}

/// Where an artifact of `job` named `name` is kept.
fn artifact_key(job: &StepJob, name: &str) -> String {
    format!(
        "artifacts/{}/{}/{}-{}",
        job.space_id,
        job.task_id,
        uuid::Uuid::new_v4().simple(),
        key_safe(name)
    )
}

async fn store(
    blob: &dyn BlobStore,
    job: &StepJob,
    request: &ArtifactRequest,
) -> Result<JobArtifact, String> {
    let path = Path::new(&request.path);
    if !path.is_absolute() {
        return Err(format!("'{}' is not an absolute path", request.path));
    }
    // Not through a link: the file the script names is the file kept.
    let meta = tokio::fs::symlink_metadata(path)
        .await
        .map_err(|err| format!("'{}' cannot be read: {err}", request.path))?;
    if !meta.is_file() {
        return Err(format!("'{}' is not a regular file", request.path));
    }
    if meta.len() > MAX_ARTIFACT_BYTES {
        return Err(format!(
            "'{}' is {} bytes, more than the {} bytes an artifact may have",
            request.path,
            meta.len(),
            MAX_ARTIFACT_BYTES
        ));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|err| format!("'{}' cannot be read: {err}", request.path))?;
    put(
        blob,
        job,
        request,
        tokio_util::io::ReaderStream::new(file).boxed(),
    )
    .await
}

/// Stores `body` as the artifact `request` of `job`.
async fn put(
    blob: &dyn BlobStore,
    job: &StepJob,
    request: &ArtifactRequest,
    body: cuttle_blob::ByteStream,
) -> Result<JobArtifact, String> {
    let key = artifact_key(job, &request.name);
    let info = blob
        .put(&key, body)
        .await
        .map_err(|err| format!("it could not be stored: {err}"))?;
    Ok(JobArtifact {
        name: request.name.clone(),
        blob_key: key,
        size_bytes: info.size,
    })
}

/// The name as a blob key segment: letters, digits, `.`, `-` and `_`; anything else is `_`.
fn key_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = safe.trim_start_matches('.');
    if trimmed.is_empty() {
        "artifact".into()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_key_segments() {
        assert_eq!(key_safe("report.html"), "report.html");
        assert_eq!(key_safe("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(key_safe("a b/c"), "a_b_c");
        assert_eq!(key_safe(".."), "artifact");
        assert_eq!(key_safe(""), "artifact");
    }
}
