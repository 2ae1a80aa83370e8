//! Package installations on this agent, as a Tentacle makes them: a package from the cache
//! (`packages.rs`) extracted safely (`libs/archive`) into a fresh
//! `<home>/Applications/<environment>/<package id>/<version>[_N]`, and the file features
//! (`libs/conventions`) run on that folder with the job's variables. The worker drives the
//! steps and runs the convention scripts there with `start_script` (see
//! `services/worker/src/target.rs`).

use crate::packages::PackageCache;
use cuttle_agent_link::messages::{
    ExtractPackage, Note, NoteLevel, PackageExtracted, RelativeFilePath, RewriteFiles,
};
use cuttle_agent_link::{RemoteError, RemoteErrorKind, Responder, Response};
use cuttle_archive::{ArchiveFormat, Limits};
use cuttle_conventions::install::{folder_name, reserve_fresh_dir, top_level_files};
use cuttle_domain::LogCategory;
use std::path::PathBuf;

/// The installations this agent holds.
pub struct Installations {
    root: PathBuf,
}

impl Installations {
    /// Installations under `root` (`<home>/Applications`).
    pub fn new(root: PathBuf) -> Installations {
        Installations { root }
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
        let file = packages.path_of_hash(&extract.sha256);
        if !tokio::fs::try_exists(&file).await.unwrap_or(false) {
            return Err(RemoteError::new(
                RemoteErrorKind::NotFound,
                format!(
                    "this agent does not hold the package {} {} (SHA-256 {}); upload it first",
                    extract.package_id, extract.version, extract.sha256
                ),
            ));
        }
        let name = format!("package{}", extract.extension);
        let format = ArchiveFormat::from_file_name(&name).ok_or_else(|| {
            RemoteError::new(
                RemoteErrorKind::BadRequest,
                format!(
                    "the extension '{}' of package {} {} is not an archive the agent can extract",
                    extract.extension, extract.package_id, extract.version
                ),
            )
        })?;
        let parts = [
            folder_name(&extract.environment_name),
            folder_name(&extract.package_id),
        ];
        let parent = self.root.join(&parts[0]).join(&parts[1]);
        let install_dir = reserve_fresh_dir(&parent, &folder_name(&extract.version))
            .await
            .map_err(|reason| RemoteError::new(RemoteErrorKind::Failed, reason))?;
        let target = install_dir.clone();
        let extracted = tokio::task::spawn_blocking(move || {
            cuttle_archive::extract(&file, format, &target, &Limits::default())
        })
        .await
        .map_err(|err| {
            RemoteError::new(
                RemoteErrorKind::Failed,
                format!("the extraction stopped abnormally: {err}"),
            )
        })
        .and_then(|result| {
            result.map_err(|err| {
                RemoteError::new(
                    RemoteErrorKind::Failed,
                    format!(
                        "the package {} {} could not be extracted: {err}",
                        extract.package_id, extract.version
                    ),
                )
            })
        });
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

    /// The folder of an installation named by a worker, checked to be one of this agent's.
    pub async fn resolve(&self, directory: &RelativeFilePath) -> Result<PathBuf, RemoteError> {
        let not_found = || {
            RemoteError::new(
                RemoteErrorKind::NotFound,
                format!("this agent has no installation '{}'", directory.as_str()),
            )
        };
        // `RelativeFilePath` has no `..`; the folders on the way are the agent's own, yet a
        // link put there by hand must not lead out.
        let path = tokio::fs::canonicalize(self.root.join(directory.as_str()))
            .await
            .map_err(|_| not_found())?;
        let root = tokio::fs::canonicalize(&self.root)
            .await
            .map_err(|_| not_found())?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_dir() && path.starts_with(&root) => Ok(path),
            _ => Err(not_found()),
        }
    }

    /// Answers `rewrite_files`.
    pub async fn serve_rewrite(&self, rewrite: RewriteFiles, responder: Responder) {
        let response = match self.resolve(&rewrite.directory).await {
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
