//! Built-in feed retention: which package versions a space no longer needs, removed as a
//! `Retention` server task whose log says what went and why.
//!
//! The policy lives on the space's built-in feed (`PUT /api/{space}/feeds/feeds-builtin`):
//! - `KeepLatestVersionsPerPackage` (Cuttle's): keep the newest N versions of each package id;
//! - `DeleteUnreleasedPackagesAfterDays` (Octopus's): remove versions no release uses once they
//!   were published more than that many days ago.
//!
//! Zero means "off" for both. With both on, a version goes only when it is not among the newest
//! N and is older than the limit. A version that any release uses is never removed: releases
//! are kept forever until release retention exists, so "a retained release" is every release.

use crate::PackageFeed;
use chrono::{DateTime, Utc};
use cuttle_domain::package::PackageVersion;
use cuttle_domain::{LogCategory, SpaceId, TaskState};
use cuttle_store::documents::{self, ListQuery};
use cuttle_store::packages::{self, PackageRow};
use cuttle_store::tasks::{self, NewLogLine, Task};
use cuttle_store::{ConnectionTrait, StoreError, TransactionTrait};
use cuttle_wire::resources::{DeploymentProcess, Feed, Release};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The id of every space's built-in feed document.
pub const BUILT_IN_FEED_ID: &str = "feeds-builtin";

/// A space's feed retention settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at least the newest N versions of each package id; 0 = no count rule.
    pub keep_latest_versions: u32,
    /// Remove versions no release uses once older than this many days; 0 = no age rule.
    pub delete_unreleased_after_days: u32,
}

impl RetentionPolicy {
    /// True when neither rule is on.
    pub fn is_off(&self) -> bool {
        self.keep_latest_versions == 0 && self.delete_unreleased_after_days == 0
    }

    /// The policy stored on a built-in feed document.
    pub fn of_feed(feed: &Feed) -> RetentionPolicy {
        RetentionPolicy {
            keep_latest_versions: u32::try_from(feed.keep_latest_versions_per_package).unwrap_or(0),
            delete_unreleased_after_days: u32::try_from(feed.delete_unreleased_packages_after_days)
                .unwrap_or(0),
        }
    }
}

/// A version to remove, and the sentence the task log gives for it.
#[derive(Debug, Clone)]
pub struct Removal {
    /// The row.
    pub row: PackageRow,
    /// Why it goes.
    pub reason: String,
}

/// What one retention run did.
#[derive(Debug, Clone)]
pub struct RetentionRun {
    /// The `Retention` task that records it.
    pub task: Task,
    /// How many versions were removed.
    pub removed: usize,
}

/// (lower-case id, normalized version) of a package version.
type VersionKey = (String, String);

/// Picks the versions to remove. Pure, so every rule is unit-tested.
pub fn choose_removals(
    rows: &[PackageRow],
    in_use: &HashSet<VersionKey>,
    policy: RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<Removal> {
    if policy.is_off() {
        return Vec::new();
    }
    let mut by_id: BTreeMap<&str, Vec<&PackageRow>> = BTreeMap::new();
    for row in rows {
        by_id.entry(&row.package_id_lower).or_default().push(row);
    }
    let mut removals = Vec::new();
    for versions in by_id.values_mut() {
        versions.sort_by(|a, b| newest_first(a, b));
        let keep = policy.keep_latest_versions as usize;
        for (index, row) in versions.iter().enumerate() {
            if keep > 0 && index < keep {
                continue;
            }
            if in_use.contains(&(row.package_id_lower.clone(), row.version_normalized.clone())) {
                continue;
            }
            let age_days = (now - row.published).num_days();
            let days = policy.delete_unreleased_after_days;
            if days > 0 && age_days < i64::from(days) {
                continue;
            }
            let reason = match (keep, days) {
                (0, days) => format!(
                    "no release uses it and it was published {age_days} days ago (unreleased versions are kept {days} days)"
                ),
                (keep, 0) => format!(
                    "only the latest {keep} versions of each package are kept, and no release uses it"
                ),
                (keep, days) => format!(
                    "it is not among the latest {keep} versions, no release uses it, and it was published {age_days} days ago (more than {days})"
                ),
            };
            removals.push(Removal {
                row: (*row).clone(),
                reason,
            });
        }
    }
    removals
}

fn newest_first(a: &PackageRow, b: &PackageRow) -> Ordering {
    match (
        PackageVersion::parse(&a.version),
        PackageVersion::parse(&b.version),
    ) {
        (Ok(left), Ok(right)) => right.cmp(&left),
        _ => b.version.cmp(&a.version),
    }
}

/// The package versions the space's releases pin.
async fn versions_in_use(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
) -> Result<HashSet<VersionKey>, StoreError> {
    let all = ListQuery::everything();
    let (releases, _) = documents::list(conn, space, "Release", &all).await?;
    let mut in_use = HashSet::new();
    let mut processes: BTreeMap<String, Option<DeploymentProcess>> = BTreeMap::new();
    for doc in &releases {
        let release: Release = documents::decode(doc)?;
        if release.selected_packages.is_empty() {
            continue;
        }
        let snapshot_id = release.project_deployment_process_snapshot_id.clone();
        if !processes.contains_key(&snapshot_id) {
            let process =
                match documents::get(conn, space, "DeploymentProcessSnapshot", &snapshot_id).await?
                {
                    Some(doc) => Some(documents::decode::<DeploymentProcess>(&doc)?),
                    None => None,
                };
            processes.insert(snapshot_id.clone(), process);
        }
        let Some(Some(process)) = processes.get(&snapshot_id) else {
            continue;
        };
        for selected in &release.selected_packages {
            // A variable package id keeps the id it evaluated to on the release.
            let package_id = match &selected.package_id {
                Some(id) => Some(id.to_ascii_lowercase()),
                None => process
                    .package_reference(&selected.action_name, &selected.package_reference_name)
                    .map(|reference| reference.package_id.to_ascii_lowercase()),
            };
            if let (Some(id), Ok(version)) = (package_id, PackageVersion::parse(&selected.version))
            {
                in_use.insert((id, version.normalized()));
            }
        }
    }
    Ok(in_use)
}

/// The space's policy, from its built-in feed document.
pub async fn policy_of(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
) -> Result<RetentionPolicy, StoreError> {
    Ok(
        match documents::get(conn, space, "Feed", BUILT_IN_FEED_ID).await? {
            Some(doc) => RetentionPolicy::of_feed(&documents::decode(&doc)?),
            None => RetentionPolicy::default(),
        },
    )
}

fn log(task: &Task, category: LogCategory, message: String) -> NewLogLine {
    NewLogLine {
        node_id: task.id.clone(),
        source_seq: None,
        occurred_at: Utc::now(),
        category,
        message,
    }
}

impl PackageFeed {
    /// Applies the space's retention policy now, recording a `Retention` task. Rows, task and
    /// log commit together; the files are deleted after the commit (a file that cannot be
    /// deleted is left for [`PackageFeed::sweep_orphans`]).
    pub async fn apply_retention(&self, space: &SpaceId) -> anyhow::Result<RetentionRun> {
        let conn = self.store.conn();
        let txn = conn.begin().await?;
        let policy = policy_of(&txn, space).await?;
        let in_use = versions_in_use(&txn, space).await?;
        let rows = packages::list(&txn, space, None, None).await?;
        let removals = choose_removals(&rows, &in_use, policy, Utc::now());
        let now = Utc::now();
        let task_id = cuttle_store::next_id(&txn, "ServerTasks").await?;
        // The round runs inside this request or loop, so the task is stored already finished.
        let mut task = Task {
            state: TaskState::Success.as_str().into(),
            start_time: Some(now),
            completed_time: Some(now),
            ..tasks::queued_task(
                task_id,
                space,
                "Retention",
                "Apply retention policies to the built-in package feed".into(),
                "{}".into(),
                now,
            )
        };
        task = tasks::insert_task(&txn, task).await?;
        let mut lines = vec![log(
            &task,
            LogCategory::Info,
            describe_policy(policy, rows.len(), in_use.len()),
        )];
        for removal in &removals {
            packages::delete(
                &txn,
                space,
                &removal.row.package_id_lower,
                &removal.row.version_normalized,
            )
            .await?;
            lines.push(log(
                &task,
                LogCategory::Info,
                format!(
                    "Removed package {} {}: {}.",
                    removal.row.package_id, removal.row.version, removal.reason
                ),
            ));
        }
        lines.push(log(
            &task,
            LogCategory::Info,
            format!(
                "Removed {} package version{}.",
                removals.len(),
                if removals.len() == 1 { "" } else { "s" }
            ),
        ));
        tasks::append_log(&txn, &task.id.clone(), lines).await?;
        txn.commit().await?;
        for removal in &removals {
            if let Err(err) = self.blob.delete(&removal.row.blob_key).await {
                tracing::warn!(blob.key = %removal.row.blob_key, error = %err, "could not delete a removed package's file; the orphan sweep will retry");
            }
        }
        tracing::info!(space.id = %space, task.id = %task.id, removed = removals.len(), "applied feed retention");
        Ok(RetentionRun {
            task,
            removed: removals.len(),
        })
    }

    /// Deletes package files no row points to that were already unreferenced at the previous
    /// sweep (`suspects`), and returns this sweep's unreferenced files. The two-sweep rule
    /// leaves alone a file whose upload is still finishing (the file lands before its row).
    pub async fn sweep_orphans(
        &self,
        space: &SpaceId,
        suspects: &BTreeSet<String>,
    ) -> anyhow::Result<BTreeSet<String>> {
        let referenced: HashSet<String> = packages::list(self.store.conn(), space, None, None)
            .await?
            .into_iter()
            .map(|row| row.blob_key)
            .collect();
        let mut unreferenced = BTreeSet::new();
        for object in self.blob.list(&format!("packages/{space}/")).await? {
            if referenced.contains(&object.key) {
                continue;
            }
            if suspects.contains(&object.key) {
                match self.blob.delete(&object.key).await {
                    Ok(()) => {
                        tracing::info!(blob.key = %object.key, "deleted an orphaned package file")
                    }
                    Err(err) => {
                        tracing::warn!(blob.key = %object.key, error = %err, "could not delete an orphaned package file");
                        unreferenced.insert(object.key);
                    }
                }
            } else {
                unreferenced.insert(object.key);
            }
        }
        Ok(unreferenced)
    }

    /// Every `interval`, applies retention in each space whose policy is on and sweeps orphaned
    /// files, until `shutdown`.
    pub async fn run_retention_loop(
        self,
        interval: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut suspects: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let spaces = match documents::list_spaces(self.store.conn(), &ListQuery::everything())
                .await
            {
                Ok((spaces, _)) => spaces,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot list spaces for feed retention; trying again next round");
                    continue;
                }
            };
            for doc in spaces {
                let Ok(space) = SpaceId::parse(&doc.id) else {
                    continue;
                };
                match policy_of(self.store.conn(), &space).await {
                    Ok(policy) if !policy.is_off() => {
                        if let Err(err) = self.apply_retention(&space).await {
                            tracing::warn!(space.id = %space, error = %err, "feed retention failed; trying again next round");
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(space.id = %space, error = %err, "cannot read the feed retention policy")
                    }
                }
                let previous = suspects.remove(space.as_str()).unwrap_or_default();
                match self.sweep_orphans(&space, &previous).await {
                    Ok(now_suspect) => {
                        suspects.insert(space.to_string(), now_suspect);
                    }
                    Err(err) => {
                        tracing::warn!(space.id = %space, error = %err, "orphaned package sweep failed")
                    }
                }
            }
        }
    }
}

fn describe_policy(policy: RetentionPolicy, n_versions: usize, n_in_use: usize) -> String {
    let mut rules = Vec::new();
    if policy.keep_latest_versions > 0 {
        rules.push(format!(
            "keep the latest {} versions of each package",
            policy.keep_latest_versions
        ));
    }
    if policy.delete_unreleased_after_days > 0 {
        rules.push(format!(
            "remove unreleased versions after {} days",
            policy.delete_unreleased_after_days
        ));
    }
    if rules.is_empty() {
        rules.push("keep every version (no retention policy is set)".into());
    }
    format!(
        "Built-in feed retention: {}. {n_versions} versions stored, {n_in_use} used by releases and never removed.",
        rules.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn row(id: &str, version: &str, days_old: i64) -> PackageRow {
        let parsed = PackageVersion::parse(version).unwrap();
        PackageRow {
            id: 0,
            space_id: "Spaces-1".into(),
            package_id: id.into(),
            package_id_lower: id.to_ascii_lowercase(),
            version: version.into(),
            version_normalized: parsed.normalized(),
            extension: ".zip".into(),
            size_bytes: 1,
            sha256: String::new(),
            blob_key: format!("packages/Spaces-1/{id}-{version}"),
            title: String::new(),
            summary: String::new(),
            description: String::new(),
            release_notes: String::new(),
            published: Utc::now() - Duration::days(days_old),
        }
    }

    fn removed(removals: &[Removal]) -> Vec<String> {
        let mut names: Vec<_> = removals
            .iter()
            .map(|r| format!("{} {}", r.row.package_id, r.row.version))
            .collect();
        names.sort();
        names
    }

    fn policy(keep: u32, days: u32) -> RetentionPolicy {
        RetentionPolicy {
            keep_latest_versions: keep,
            delete_unreleased_after_days: days,
        }
    }

    #[test]
    fn without_a_policy_nothing_is_removed() {
        let rows = [row("A", "1.0.0", 900), row("A", "2.0.0", 900)];
        assert!(choose_removals(&rows, &HashSet::new(), policy(0, 0), Utc::now()).is_empty());
    }

    #[test]
    fn keep_latest_counts_versions_per_package_by_precedence_not_by_text() {
        let rows = [
            row("A", "1.9.0", 1),
            row("A", "1.10.0", 1),
            row("A", "2.0.0-beta", 1),
            row("A", "1.2.0", 1),
            row("B", "0.1.0", 1),
        ];
        let removals = choose_removals(&rows, &HashSet::new(), policy(2, 0), Utc::now());
        assert_eq!(removed(&removals), ["A 1.2.0", "A 1.9.0"]);
    }

    #[test]
    fn a_version_a_release_uses_is_never_removed() {
        let rows = [
            row("A", "1.0.0", 100),
            row("A", "2.0.0", 100),
            row("A", "3.0.0", 100),
        ];
        let in_use = HashSet::from([("a".to_owned(), "1.0.0".to_owned())]);
        let removals = choose_removals(&rows, &in_use, policy(1, 0), Utc::now());
        assert_eq!(removed(&removals), ["A 2.0.0"]);
        let removals = choose_removals(&rows, &in_use, policy(0, 30), Utc::now());
        assert_eq!(removed(&removals), ["A 2.0.0", "A 3.0.0"]);
    }

    #[test]
    fn the_age_rule_removes_only_unreleased_versions_older_than_the_limit() {
        let rows = [row("A", "1.0.0", 40), row("A", "2.0.0", 10)];
        let removals = choose_removals(&rows, &HashSet::new(), policy(0, 30), Utc::now());
        assert_eq!(removed(&removals), ["A 1.0.0"]);
        assert!(
            removals[0].reason.contains("40 days ago"),
            "{}",
            removals[0].reason
        );
    }

    #[test]
    fn with_both_rules_a_version_goes_only_when_old_and_not_among_the_latest() {
        let rows = [
            row("A", "0.5.0", 1),
            row("A", "1.0.0", 400),
            row("A", "2.0.0", 400),
            row("A", "3.0.0", 1),
        ];
        let removals = choose_removals(&rows, &HashSet::new(), policy(2, 30), Utc::now());
        assert_eq!(removed(&removals), ["A 1.0.0"]);
    }
}
