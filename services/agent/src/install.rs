//! Package installations on this agent, as a Tentacle makes them: a package from the cache
//! (`packages.rs`) extracted safely (`libs/archive`) into a fresh
//! `<home>/Applications/<environment>/<package id>/<version>[_N]`, and the file features
//! (`libs/conventions`) run on that folder with the job's variables. The worker drives the
//! steps and runs the convention scripts there with `start_script` (see
//! `services/worker/src/target.rs`).

use crate::packages::PackageCache;
use crate::script::check_job_id;
use cuttle_agent_link::messages::{
    ExtractPackage, Folder, JobId, Note, NoteLevel, PackageExtracted, RelativeFilePath,
    RewriteFiles, Sha256Digest, StagePackage,
};
use cuttle_agent_link::{RemoteError, RemoteErrorKind, Responder, Response};
use cuttle_archive::{ArchiveFormat, Limits};
use cuttle_conventions::install::{folder_name, reserve_fresh_dir, top_level_files};
use cuttle_domain::LogCategory;
use std::path::{Path, PathBuf};

/// The installations this agent holds, and the staging folders of jobs whose scripts use
/// packages.
pub struct Installations {
    root: PathBuf,
    staging: PathBuf,
}

impl Installations {
    /// Installations under `root` (`<home>/Applications`), staging folders under `staging`
    /// (`<home>/staging`), emptied now: what is there belonged to scripts of an earlier agent
    /// process, which are over.
    pub fn new(root: PathBuf, staging: PathBuf) -> Installations {
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for entry in entries.flatten() {
                if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(dir = %entry.path().display(), error = %err, "could not remove an old staging folder");
                }
            }
        }
        Installations { root, staging }
    }

    /// A job's staging folder.
    fn staging_of(&self, job_id: &JobId) -> Result<PathBuf, RemoteError> {
        check_job_id(job_id)?;
        Ok(self.staging.join(&job_id.0))
    }

    /// Removes a job's staging folder, once its script ended.
    pub async fn remove_staging(&self, job_id: &JobId) {
        let Ok(dir) = self.staging_of(job_id) else {
            return;
        };
        if let Err(err) = tokio::fs::remove_dir_all(&dir).await
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %err, "could not remove a staging folder");
        }
    }

    /// Answers `stage_package`.
    pub async fn serve_stage(
        &self,
        stage: StagePackage,
        packages: &PackageCache,
        responder: Responder,
    ) {
        let response = match self.stage(&stage, packages).await {
            Ok(path) => Response::PackageStaged { path },
            Err(error) => {
                tracing::warn!(package.id = %stage.package_id, job.id = %stage.job_id.0, error = %error, "package not staged");
                Response::Error(error)
            }
        };
        answer(responder, response).await;
    }

    async fn stage(
        &self,
        stage: &StagePackage,
        packages: &PackageCache,
    ) -> Result<String, RemoteError> {
        let dir = self.staging_of(&stage.job_id)?;
        let file = held(packages, &stage.sha256, &stage.package_id, &stage.version).await?;
        let failed = |what: &Path, err: std::io::Error| {
            RemoteError::new(
                RemoteErrorKind::Failed,
                format!("the agent could not write {}: {err}", what.display()),
            )
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|err| failed(&dir, err))?;
        // `RelativeFilePath` has no root and no `..`, so these stay inside the folder.
        let target = match &stage.name {
            Some(name) => dir.join(name.as_str()),
            None => dir.clone(),
        };
        if !stage.extract {
            let Some(parent) = target.parent().filter(|_| stage.name.is_some()) else {
                return Err(RemoteError::new(
                    RemoteErrorKind::BadRequest,
                    "a package placed without extracting needs a file name",
                ));
            };
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|err| failed(parent, err))?;
            tokio::fs::copy(&file, &target)
                .await
                .map_err(|err| failed(&target, err))?;
            return Ok(dir.display().to_string());
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|err| failed(parent, err))?;
        }
        let format = format_of(&stage.extension, &stage.package_id, &stage.version)?;
        extract_blocking(
            file,
            format,
            target.clone(),
            &stage.package_id,
            &stage.version,
        )
        .await?;
        if let Some(expected) = &stage.expect_file {
            let path = target.join(expected.as_str());
            let is_file = tokio::fs::symlink_metadata(&path)
                .await
                .is_ok_and(|meta| meta.is_file());
            if !is_file {
                return Err(RemoteError::new(
                    RemoteErrorKind::BadRequest,
                    format!(
                        "The package {} {} has no script file '{}'.",
                        stage.package_id,
                        stage.version,
                        expected.as_str()
                    ),
                ));
            }
        }
        Ok(dir.display().to_string())
    }

    /// Answers `extract_package`.
    pub async fn serve_extract(
        &self,
        extract: ExtractPackage,
        packages: &PackageCache,
        responder: Responder,
    ) {
        let response = match self.extract(&extract, packages).await {
            Ok(extracted) => {
                tracing::info!(
                    package.id = %extract.package_id,
                    package.version = %extract.version,
                    install.path = %extracted.path,
                    "package extracted"
                );
                Response::PackageExtracted(extracted)
            }
            Err(error) => {
                tracing::warn!(package.id = %extract.package_id, error = %error, "package not extracted");
                Response::Error(error)
            }
        };
        answer(responder, response).await;
    }

    async fn extract(
        &self,
        extract: &ExtractPackage,
        packages: &PackageCache,
    ) -> Result<PackageExtracted, RemoteError> {
        let file = held(
            packages,
            &extract.sha256,
            &extract.package_id,
            &extract.version,
        )
        .await?;
        let format = format_of(&extract.extension, &extract.package_id, &extract.version)?;
        let parts = [
            folder_name(&extract.environment_name),
            folder_name(&extract.package_id),
        ];
        let parent = self.root.join(&parts[0]).join(&parts[1]);
        let install_dir = reserve_fresh_dir(&parent, &folder_name(&extract.version))
            .await
            .map_err(|reason| RemoteError::new(RemoteErrorKind::Failed, reason))?;
        let extracted = extract_blocking(
            file,
            format,
            install_dir.clone(),
            &extract.package_id,
            &extract.version,
        )
        .await;
        let extracted = match extracted {
            Ok(extracted) => extracted,
            Err(error) => {
                if let Err(err) = tokio::fs::remove_dir_all(&install_dir).await {
                    tracing::warn!(dir = %install_dir.display(), error = %err, "could not remove the folder of a failed extraction");
                }
                return Err(error);
            }
        };
        let leaf = install_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let directory = RelativeFilePath::parse(&format!("{}/{}/{leaf}", parts[0], parts[1]))
            .map_err(|err| RemoteError::new(RemoteErrorKind::Failed, err.to_string()))?;
        Ok(PackageExtracted {
            directory,
            path: install_dir.display().to_string(),
            top_level_files: top_level_files(&install_dir).await.map_err(|err| {
                RemoteError::new(
                    RemoteErrorKind::Failed,
                    format!("the agent could not read {}: {err}", install_dir.display()),
                )
            })?,
            files: extracted.files,
            bytes: extracted.bytes,
        })
    }

    /// A folder named by a worker, checked to be one of this agent's.
    pub async fn resolve(&self, folder: &Folder) -> Result<PathBuf, RemoteError> {
        let (root, path, what) = match folder {
            Folder::Installation { directory } => (
                &self.root,
                self.root.join(directory.as_str()),
                format!("installation '{}'", directory.as_str()),
            ),
            Folder::Staging { job_id } => (
                &self.staging,
                self.staging_of(job_id)?,
                format!("staging folder for job {}", job_id.0),
            ),
        };
        let not_found = || {
            RemoteError::new(
                RemoteErrorKind::NotFound,
                format!("this agent has no {what}"),
            )
        };
        // `RelativeFilePath` and job ids have no `..`; the folders on the way are the agent's
        // own, yet a link put there by hand must not lead out.
        let path = tokio::fs::canonicalize(path)
            .await
            .map_err(|_| not_found())?;
        let root = tokio::fs::canonicalize(root)
            .await
            .map_err(|_| not_found())?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_dir() && path.starts_with(&root) => Ok(path),
            _ => Err(not_found()),
        }
    }

    /// Answers `rewrite_files`.
    pub async fn serve_rewrite(&self, rewrite: RewriteFiles, responder: Responder) {
        let response = match self.resolve(&rewrite.folder).await {
            Ok(dir) => {
                let features = cuttle_conventions::FileFeatures {
                    substitute_in_files: rewrite.substitute_in_files,
                    structured_variables: rewrite.structured_variables,
                };
                let variables = cuttle_conventions::Variables::from_pairs(rewrite.variables);
                let notes = cuttle_conventions::Notes::default();
                let result = cuttle_conventions::apply(&features, &dir, &variables, &notes).await;
                Response::FilesRewritten {
                    notes: notes
                        .take()
                        .into_iter()
                        .map(|(category, text)| Note {
                            level: level_of(category),
                            text,
                        })
                        .collect(),
                    failure: result.err(),
                }
            }
            Err(error) => Response::Error(error),
        };
        answer(responder, response).await;
    }
}

/// The cached file of a package, or why the agent does not hold it.
async fn held(
    packages: &PackageCache,
    sha256: &Sha256Digest,
    package_id: &str,
    version: &str,
) -> Result<PathBuf, RemoteError> {
    let file = packages.path_of_hash(sha256);
    if tokio::fs::try_exists(&file).await.unwrap_or(false) {
        Ok(file)
    } else {
        Err(RemoteError::new(
            RemoteErrorKind::NotFound,
            format!(
                "this agent does not hold the package {package_id} {version} (SHA-256 {sha256}); upload it first"
            ),
        ))
    }
}

fn format_of(
    extension: &str,
    package_id: &str,
    version: &str,
) -> Result<ArchiveFormat, RemoteError> {
    ArchiveFormat::from_file_name(&format!("package{extension}")).ok_or_else(|| {
        RemoteError::new(
            RemoteErrorKind::BadRequest,
            format!(
                "the extension '{extension}' of package {package_id} {version} is not an archive the agent can extract"
            ),
        )
    })
}

/// Extracts `file` into `target` (new or empty) off the async threads.
async fn extract_blocking(
    file: PathBuf,
    format: ArchiveFormat,
    target: PathBuf,
    package_id: &str,
    version: &str,
) -> Result<cuttle_archive::Extracted, RemoteError> {
    tokio::task::spawn_blocking(move || {
        cuttle_archive::extract(&file, format, &target, &Limits::default())
    })
    .await
    .map_err(|err| {
        RemoteError::new(
            RemoteErrorKind::Failed,
            format!("the extraction stopped abnormally: {err}"),
        )
    })?
    .map_err(|err| {
        RemoteError::new(
            RemoteErrorKind::Failed,
            format!("the package {package_id} {version} could not be extracted: {err}"),
        )
    })
}

fn level_of(category: LogCategory) -> NoteLevel {
    match category {
        LogCategory::Verbose => NoteLevel::Verbose,
        LogCategory::Warning => NoteLevel::Warning,
        LogCategory::Error | LogCategory::Fatal => NoteLevel::Error,
        LogCategory::Info | LogCategory::Highlight => NoteLevel::Info,
    }
}

async fn answer(responder: Responder, response: Response) {
    if let Err(err) = responder.respond(response).await {
        tracing::debug!(error = %err, "could not answer a request; the worker is gone");
    }
}
