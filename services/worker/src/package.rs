//! Package jobs: fetching a release's package from the feed's blob store into a cache keyed by
//! its SHA-256, extracting it safely (libs/archive) into a fresh folder, and the conventions of
//! Octopus's "Deploy a Package" step (PreDeploy scripts, then the file features of
//! `conventions.rs`, then Deploy and PostDeploy scripts, DeployFailed on failure).
//!
//! Folders under the worker's work directory:
//! - `.packages/<sha256><ext>`: downloaded package files, shared by every job;
//! - `Applications/<environment>/<PackageId>/<Version>[_N]`: installations, kept after the job
//!   (like a Tentacle's `Applications` folder); a redeployment gets a fresh `_1`, `_2`, ...;
//! - `<job id>/`: a job's scratch directory, removed when the job ends.

use crate::script::{self, Ended, JobLog, ScriptContext, ScriptRun};
use crate::target;
use crate::variables::JobVariables;
use cuttle_agent_link::messages::Folder;
use cuttle_archive::{ArchiveFormat, Limits};
use cuttle_blob::BlobStore;
use cuttle_contracts::{FileSubstitution, JobOutcome, JobPackage};
use cuttle_conventions::install;
use cuttle_domain::LogCategory;
use cuttle_domain::script::ScriptSyntax;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Name of the package cache folder in the work directory.
pub const CACHE_DIR: &str = ".packages";
/// Name of the installations folder in the work directory.
pub const APPLICATIONS_DIR: &str = "Applications";

/// The output variable naming where a package was installed, as Octopus names it.
pub const INSTALLATION_DIRECTORY_OUTPUT: &str = "Package.InstallationDirectoryPath";

/// The script stages of a package deployment, in the order they run.
const STAGES: [&str; 3] = ["PreDeploy", "Deploy", "PostDeploy"];
/// The stage the file features (`conventions.rs`) run before, as in Octopus.
const FILES_BEFORE: &str = "Deploy";
/// The stage that runs when one of [`STAGES`] fails.
const FAILED_STAGE: &str = "DeployFailed";

/// Where package jobs put things, and what they read from.
pub struct PackageJobs<'a> {
    /// The feed's blob store (read only).
    pub blob: &'a dyn BlobStore,
    /// The worker's work directory.
    pub work_dir: &'a Path,
    /// This job's scratch directory.
    pub job_dir: &'a Path,
    /// This job's id.
    pub job_id: &'a str,
    /// Who runs scripts, and the cancel signal.
    pub context: &'a ScriptContext,
    /// The job's output.
    pub log: &'a JobLog,
    /// The job's variables, for substitution and the script helpers.
    pub variables: &'a JobVariables,
}

/// A job's end plus the output variables it set.
pub type JobEnd = (Ended, BTreeMap<String, String>);

/// Where a package step installs its package and runs its scripts.
pub enum Host<'a> {
    /// This worker.
    Here,
    /// A deployment target's agent, over an open connection.
    Agent(&'a target::AgentSession<'a>),
}

/// An installed package.
pub struct Installation {
    /// Its folder, as its host names it.
    pub path: PathBuf,
    /// The agent's name for the folder (agents only).
    pub folder: Option<Folder>,
    /// The regular files at the folder's top, where convention scripts are found.
    pub top_level_files: Vec<String>,
}

impl PackageJobs<'_> {
    /// `Octopus.TentaclePackage`: install the package into a fresh folder on `host` and run
    /// its conventions there.
    pub async fn deploy(
        &self,
        host: &Host<'_>,
        package: &JobPackage,
        environment_name: &str,
        files: &FileSubstitution,
    ) -> JobEnd {
        let no_outputs = BTreeMap::new;
        if let Err(reason) = make_dir(self.job_dir).await {
            return (script::failed(reason), no_outputs());
        }
        let installed = match host {
            Host::Here => self.install_here(package, environment_name).await,
            Host::Agent(agent) => agent.install(self, package, environment_name).await,
        };
        let installation = match installed {
            Ok(installation) => installation,
            Err(_) if self.context.cancel.is_cancelled() => {
                return ((JobOutcome::Canceled, None), no_outputs());
            }
            Err(reason) => return (script::failed(reason), no_outputs()),
        };
        let mut outputs = BTreeMap::new();
        outputs.insert(
            INSTALLATION_DIRECTORY_OUTPUT.to_owned(),
            installation.path.display().to_string(),
        );
        let mut ran_any = false;
        for stage in STAGES {
            let (outcome, code) = if stage == FILES_BEFORE
                && let Err(reason) = self.rewrite(host, &installation, files).await
            {
                script::failed(reason)
            } else {
                self.run_stage(host, &installation, stage, &mut ran_any)
                    .await
            };
            if !matches!(outcome, JobOutcome::Succeeded) {
                if matches!(outcome, JobOutcome::Failed { .. }) {
                    // Octopus runs DeployFailed when a stage fails, to let the package undo
                    // what it did; its own result does not change the step's.
                    let (after_failure, _) = self
                        .run_stage(host, &installation, FAILED_STAGE, &mut ran_any)
                        .await;
                    if let JobOutcome::Failed { reason } = after_failure {
                        self.log.line(LogCategory::Warning, reason).await;
                    }
                }
                return ((outcome, code), outputs);
            }
        }
        if !ran_any {
            self.log
                .line(
                    LogCategory::Verbose,
                    "The package has no PreDeploy, Deploy or PostDeploy script.",
                )
                .await;
        }
        self.log
            .line(
                LogCategory::Info,
                format!(
                    "Successfully deployed package {} {} to {}",
                    package.package_id,
                    package.version,
                    installation.path.display()
                ),
            )
            .await;
        ((JobOutcome::Succeeded, Some(0)), outputs)
    }

    /// Installs the package on this worker.
    async fn install_here(
        &self,
        package: &JobPackage,
        environment_name: &str,
    ) -> Result<Installation, String> {
        let file = self.acquire(package).await?;
        let parent = self
            .work_dir
            .join(APPLICATIONS_DIR)
            .join(install::folder_name(environment_name))
            .join(install::folder_name(&package.package_id));
        let install_dir =
            install::reserve_fresh_dir(&parent, &install::folder_name(&package.version)).await?;
        if let Err(reason) = self.extract(package, &file, &install_dir).await {
            if let Err(err) = tokio::fs::remove_dir(&install_dir).await {
                tracing::warn!(dir = %install_dir.display(), error = %err, "could not remove the folder of a failed extraction");
            }
            return Err(reason);
        }
        let top_level_files = install::top_level_files(&install_dir)
            .await
            .map_err(|err| format!("The worker could not read {}: {err}", install_dir.display()))?;
        Ok(Installation {
            path: install_dir,
            folder: None,
            top_level_files,
        })
    }

    /// Runs the file features on an installation.
    async fn rewrite(
        &self,
        host: &Host<'_>,
        installation: &Installation,
        files: &FileSubstitution,
    ) -> Result<(), String> {
        match host {
            Host::Here => self.file_features(files, &installation.path).await,
            Host::Agent(agent) => {
                agent
                    .rewrite(self, agent_folder(installation)?, files)
                    .await
            }
        }
    }

    /// `Octopus.Script` with the script inside the primary package: extract it (and the other
    /// packages) into the job's folder on `host`, run the file features there, and run the
    /// named file.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one PackageScript job, plus where it runs"
    )]
    pub async fn package_script(
        &self,
        host: &Host<'_>,
        syntax: ScriptSyntax,
        package: &JobPackage,
        file_name: &str,
        parameters: &[String],
        others: &[JobPackage],
        files: &FileSubstitution,
    ) -> Ended {
        // The name may hold variables (`scripts/#{Tool}.sh`); it is checked once evaluated.
        let file_name = &self.variables.substitute(file_name);
        let Some(relative) = safe_relative_path(file_name) else {
            return script::failed(format!(
                "The script file name '{file_name}' must be a relative path inside the package."
            ));
        };
        if let Err(reason) = make_dir(self.job_dir).await {
            return script::failed(reason);
        }
        let parameters: Vec<String> = parameters
            .iter()
            .map(|p| self.variables.substitute(p))
            .collect();
        let agent = match host {
            Host::Here => {
                return self
                    .package_script_here(syntax, package, &relative, &parameters, others, files)
                    .await;
            }
            Host::Agent(agent) => agent,
        };
        // Normalized to `/` parts, as the agent names files.
        let relative_text = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .filter(|part| part != ".")
            .collect::<Vec<_>>()
            .join("/");
        let staged = match agent.stage(self, package, None, Some(&relative_text)).await {
            Ok(staged) => staged,
            Err(_) if self.context.cancel.is_cancelled() => return (JobOutcome::Canceled, None),
            Err(reason) => return script::failed(reason),
        };
        if let Err(reason) = self.stage_on_agent(agent, others).await {
            return script::failed(reason);
        }
        if let Err(reason) = agent.rewrite(self, agent.staging(self), files).await {
            return script::failed(reason);
        }
        agent
            .run_file(
                self,
                agent.staging(self),
                syntax,
                &staged.join(&relative_text),
                &parameters,
            )
            .await
    }

    async fn package_script_here(
        &self,
        syntax: ScriptSyntax,
        package: &JobPackage,
        relative: &Path,
        parameters: &[String],
        others: &[JobPackage],
        files: &FileSubstitution,
    ) -> Ended {
        let work = self.job_dir.join("work");
        let file = match self.acquire(package).await {
            Ok(file) => file,
            Err(reason) => return script::failed(reason),
        };
        if let Err(reason) = self.extract(package, &file, &work).await {
            return script::failed(reason);
        }
        if let Err(reason) = self.stage_referenced(others, &work).await {
            return script::failed(reason);
        }
        if let Err(reason) = self.file_features(files, &work).await {
            return script::failed(reason);
        }
        let script_path = work.join(relative);
        match tokio::fs::symlink_metadata(&script_path).await {
            Ok(meta) if meta.is_file() => {}
            _ => {
                return script::failed(format!(
                    "The package {} {} has no script file '{}'.",
                    package.package_id,
                    package.version,
                    relative.display()
                ));
            }
        }
        let script = match self.with_helpers(syntax, &script_path).await {
            Ok(script) => script,
            Err(reason) => return script::failed(reason),
        };
        script::run_script(
            &ScriptRun {
                job_dir: self.job_dir,
                cwd: &work,
                syntax,
                script: &script,
                args: parameters,
            },
            self.context,
            self.log,
        )
        .await
    }

    /// An inline script whose step references packages: each is extracted into a folder named
    /// after its reference (or placed as a file when `Extract` is false) in the job's folder on
    /// `host`, then the script runs there.
    pub async fn inline_script(
        &self,
        host: &Host<'_>,
        syntax: ScriptSyntax,
        body: &str,
        packages: &[JobPackage],
        files: &FileSubstitution,
    ) -> Ended {
        if let Err(reason) = make_dir(self.job_dir).await {
            return script::failed(reason);
        }
        let body = self.variables.inline_script(syntax, body);
        match host {
            Host::Here => {
                if let Err(reason) = self.stage_referenced(packages, self.job_dir).await {
                    return script::failed(reason);
                }
                if let Err(reason) = self.file_features(files, self.job_dir).await {
                    return script::failed(reason);
                }
                script::run_inline(self.job_dir, syntax, &body, self.context, self.log).await
            }
            Host::Agent(agent) => {
                if let Err(reason) = self.stage_on_agent(agent, packages).await {
                    if self.context.cancel.is_cancelled() {
                        return (JobOutcome::Canceled, None);
                    }
                    return script::failed(reason);
                }
                if let Err(reason) = agent.rewrite(self, agent.staging(self), files).await {
                    return script::failed(reason);
                }
                agent
                    .run_body(self, Some(agent.staging(self)), syntax, body, &[])
                    .await
            }
        }
    }

    /// Puts referenced packages into the job's staging folder on an agent.
    async fn stage_on_agent(
        &self,
        agent: &target::AgentSession<'_>,
        packages: &[JobPackage],
    ) -> Result<(), String> {
        for package in packages {
            let name = reference_folder(package)?;
            let name = if package.extract {
                name
            } else {
                package.file_name()
            };
            agent.stage(self, package, Some(&name), None).await?;
        }
        Ok(())
    }

    /// Runs the file features (`libs/conventions`) on the files under `root`, logging what they
    /// say.
    async fn file_features(&self, files: &FileSubstitution, root: &Path) -> Result<(), String> {
        let notes = cuttle_conventions::Notes::default();
        let result = cuttle_conventions::apply(
            &features_of(files),
            root,
            self.variables.as_conventions(),
            &notes,
        )
        .await;
        for (category, text) in notes.take() {
            self.log.line(category, text).await;
        }
        result
    }

    /// The file to run for the script at `path`: a bootstrap in the job directory that defines
    /// the script helpers and then runs it.
    pub(crate) async fn with_helpers(
        &self,
        syntax: ScriptSyntax,
        path: &Path,
    ) -> Result<PathBuf, String> {
        // The bootstrap runs the script by absolute path, whatever the work directory's form.
        let path = tokio::fs::canonicalize(path)
            .await
            .map_err(|err| format!("The script {} cannot be read: {err}", path.display()))?;
        let bootstrap = self.variables.bootstrap(syntax, &path);
        let file = self
            .job_dir
            .join(format!("bootstrap.{}", syntax.extension()));
        script::write_private(&file, &bootstrap)
            .await
            .map_err(|err| format!("The worker could not write the script bootstrap: {err}"))?;
        Ok(file)
    }

    /// Puts referenced packages into `dir`.
    async fn stage_referenced(&self, packages: &[JobPackage], dir: &Path) -> Result<(), String> {
        for package in packages {
            let file = self.acquire(package).await?;
            let name = reference_folder(package)?;
            if package.extract {
                self.extract(package, &file, &dir.join(&name)).await?;
            } else {
                let target = dir.join(package.file_name());
                tokio::fs::copy(&file, &target).await.map_err(|err| {
                    format!(
                        "The worker could not place the package file {}: {err}",
                        target.display()
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Runs every script of one convention stage found at the top of the installation.
    async fn run_stage(
        &self,
        host: &Host<'_>,
        installation: &Installation,
        stage: &str,
        ran_any: &mut bool,
    ) -> Ended {
        let scripts = stage_scripts(&installation.top_level_files, stage);
        let (have_pwsh, place) = match host {
            Host::Here => (script::find_on_path("pwsh").is_some(), "this worker"),
            Host::Agent(agent) => (agent.has_pwsh(), "this deployment target"),
        };
        let runnable = scripts
            .iter()
            .filter(|(syntax, _)| *syntax != ScriptSyntax::PowerShell || have_pwsh)
            .count();
        for (syntax, name) in &scripts {
            // A package that ships Deploy.ps1 beside Deploy.sh is meant for both platforms: on
            // a machine without pwsh, the .ps1 is skipped. A lone .ps1 still runs, and fails
            // with the reason.
            if *syntax == ScriptSyntax::PowerShell && !have_pwsh && runnable > 0 {
                self.log
                    .line(
                        LogCategory::Warning,
                        format!("Skipping {name}: pwsh is not installed on {place}."),
                    )
                    .await;
                continue;
            }
            *ran_any = true;
            self.log
                .line(
                    LogCategory::Info,
                    format!("Running the {stage} script {name}"),
                )
                .await;
            let path = installation.path.join(name);
            let (outcome, code) = match host {
                Host::Here => self.run_here(*syntax, &path, &installation.path).await,
                Host::Agent(agent) => match agent_folder(installation) {
                    Ok(folder) => agent.run_file(self, folder, *syntax, &path, &[]).await,
                    Err(reason) => script::failed(reason),
                },
            };
            match outcome {
                JobOutcome::Succeeded => {}
                JobOutcome::Failed { reason } => {
                    return (
                        JobOutcome::Failed {
                            reason: format!("The {stage} script {name}: {reason}"),
                        },
                        code,
                    );
                }
                JobOutcome::Canceled => return (JobOutcome::Canceled, code),
            }
        }
        (JobOutcome::Succeeded, Some(0))
    }

    /// Runs the script file at `path` on this worker, in `cwd`, with the helpers.
    async fn run_here(&self, syntax: ScriptSyntax, path: &Path, cwd: &Path) -> Ended {
        let script = match self.with_helpers(syntax, path).await {
            Ok(script) => script,
            Err(reason) => return script::failed(reason),
        };
        script::run_script(
            &ScriptRun {
                job_dir: self.job_dir,
                cwd,
                syntax,
                script: &script,
                args: &[],
            },
            self.context,
            self.log,
        )
        .await
    }

    /// The package file in the local cache, downloading it when missing. The SHA-256 and size
    /// are checked on the way in, so a cached file is always the one the release pinned.
    pub(crate) async fn acquire(&self, package: &JobPackage) -> Result<PathBuf, String> {
        let cache = self.work_dir.join(CACHE_DIR);
        make_dir(&cache).await?;
        if !is_hex_sha256(&package.sha256) {
            return Err(format!(
                "The package {} {} has no valid SHA-256 in the job.",
                package.package_id, package.version
            ));
        }
        let path = cache.join(format!("{}{}", package.sha256, package.extension));
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.len() == package.size_bytes
        {
            self.log
                .line(
                    LogCategory::Info,
                    format!(
                        "Package {} {} was found in the worker's cache; no need to download it.",
                        package.package_id, package.version
                    ),
                )
                .await;
            return Ok(path);
        }
        self.log
            .line(
                LogCategory::Info,
                format!(
                    "Downloading package {} {} ({} bytes) from the built-in feed",
                    package.package_id, package.version, package.size_bytes
                ),
            )
            .await;
        let partial = cache.join(format!(".{}.{}", package.sha256, uuid::Uuid::new_v4()));
        let result = download(self.blob, package, &partial).await;
        if let Err(reason) = result {
            if let Err(err) = tokio::fs::remove_file(&partial).await
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %partial.display(), error = %err, "could not remove a partial download");
            }
            return Err(reason);
        }
        // Two jobs may download the same package at once; both files are identical, and the
        // rename makes whichever lands last the cached copy.
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|err| format!("The worker could not store the package in its cache: {err}"))?;
        Ok(path)
    }

    /// Extracts `file` into `target` (which must not exist, or be empty).
    async fn extract(
        &self,
        package: &JobPackage,
        file: &Path,
        target: &Path,
    ) -> Result<(), String> {
        let format = ArchiveFormat::from_file_name(&package.file_name()).ok_or_else(|| {
            format!(
                "The package {} {} has the extension '{}', which is not an archive the worker can extract.",
                package.package_id, package.version, package.extension
            )
        })?;
        let (file, target_owned) = (file.to_path_buf(), target.to_path_buf());
        let extracted = tokio::task::spawn_blocking(move || {
            cuttle_archive::extract(&file, format, &target_owned, &Limits::default())
        })
        .await
        .map_err(|err| format!("The extraction stopped abnormally: {err}"))?
        .map_err(|err| {
            format!(
                "The package {} {} could not be extracted: {err}",
                package.package_id, package.version
            )
        })?;
        self.log
            .line(
                LogCategory::Info,
                format!(
                    "Extracted package {} {} to {} ({} files, {} bytes)",
                    package.package_id,
                    package.version,
                    target.display(),
                    extracted.files,
                    extracted.bytes
                ),
            )
            .await;
        Ok(())
    }
}

/// The folder a referenced package goes into: its reference's name, else its id.
fn reference_folder(package: &JobPackage) -> Result<String, String> {
    let name = if package.reference_name.is_empty() {
        package.package_id.clone()
    } else {
        package.reference_name.clone()
    };
    if safe_relative_path(&name).is_none_or(|p| p.components().count() != 1) {
        return Err(format!(
            "The package reference name '{name}' cannot be used as a folder name."
        ));
    }
    Ok(name)
}

/// The agent's name for an installation's folder.
fn agent_folder(installation: &Installation) -> Result<Folder, String> {
    installation.folder.clone().ok_or_else(|| {
        format!(
            "The installation at {} is not on a deployment target.",
            installation.path.display()
        )
    })
}

/// The file features a job asks for, as `libs/conventions` takes them.
pub fn features_of(files: &FileSubstitution) -> cuttle_conventions::FileFeatures {
    cuttle_conventions::FileFeatures {
        substitute_in_files: files.substitute_in_files.clone(),
        structured_variables: files.structured_variables.clone(),
    }
}

/// Streams the package's blob into `partial`, checking its size and SHA-256.
async fn download(
    blob: &dyn BlobStore,
    package: &JobPackage,
    partial: &Path,
) -> Result<(), String> {
    let unreadable = |err: &dyn std::fmt::Display| {
        format!(
            "The package {} {} could not be read from the built-in feed: {err}",
            package.package_id, package.version
        )
    };
    let mut reader = blob
        .get(&package.blob_key, None)
        .await
        .map_err(|err| unreadable(&err))?;
    let mut file = tokio::fs::File::create(partial)
        .await
        .map_err(|err| format!("The worker could not write to its package cache: {err}"))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = reader.stream.next().await {
        let chunk = chunk.map_err(|err| unreadable(&err))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|err| format!("The worker could not write to its package cache: {err}"))?;
    }
    file.flush()
        .await
        .map_err(|err| format!("The worker could not write to its package cache: {err}"))?;
    let digest = hex::encode(hasher.finalize());
    if size != package.size_bytes || !digest.eq_ignore_ascii_case(&package.sha256) {
        return Err(format!(
            "The package {} {} downloaded from the built-in feed does not match what the release pinned (expected {} bytes with SHA-256 {}, got {size} bytes with {digest}).",
            package.package_id, package.version, package.size_bytes, package.sha256
        ));
    }
    Ok(())
}

/// The scripts of one stage among the files at the top of an installation (`Deploy.sh`,
/// `deploy.py`, ...: the stem is matched ignoring case), Bash first, then Python, then
/// PowerShell.
fn stage_scripts(top_level_files: &[String], stage: &str) -> Vec<(ScriptSyntax, String)> {
    let mut found: Vec<(ScriptSyntax, String)> = top_level_files
        .iter()
        .filter(|name| {
            name.rsplit_once('.')
                .is_some_and(|(stem, _)| stem.eq_ignore_ascii_case(stage))
        })
        .filter_map(|name| ScriptSyntax::from_file_name(name).map(|syntax| (syntax, name.clone())))
        .collect();
    found.sort_by_key(|(syntax, name)| (syntax_rank(*syntax), name.clone()));
    found
}

fn syntax_rank(syntax: ScriptSyntax) -> u8 {
    match syntax {
        ScriptSyntax::Bash => 0,
        ScriptSyntax::Python => 1,
        ScriptSyntax::PowerShell => 2,
    }
}

/// `Some(path)` when `name` is a relative path that stays inside its base directory.
fn safe_relative_path(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let normal = path
        .components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir));
    (normal && !name.is_empty() && !name.contains('\0')).then(|| path.to_path_buf())
}

fn is_hex_sha256(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

async fn make_dir(dir: &Path) -> Result<(), String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|err| format!("The worker could not create {}: {err}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_paths_must_stay_inside_the_package() {
        assert!(safe_relative_path("scripts/run.sh").is_some());
        assert!(safe_relative_path("./run.sh").is_some());
        assert!(safe_relative_path("../run.sh").is_none());
        assert!(safe_relative_path("/etc/passwd").is_none());
        assert!(safe_relative_path("a/../../b").is_none());
        assert!(safe_relative_path("").is_none());
    }

    #[tokio::test]
    async fn stage_scripts_are_found_by_stem_in_bash_python_powershell_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "Deploy.ps1",
            "deploy.py",
            "Deploy.sh",
            "PreDeploy.sh",
            "Deploy.txt",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("Deploy.d")).unwrap();
        let files = install::top_level_files(dir.path()).await.unwrap();
        let found = stage_scripts(&files, "Deploy");
        let names: Vec<_> = found.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["Deploy.sh", "deploy.py", "Deploy.ps1"]);
    }
}
