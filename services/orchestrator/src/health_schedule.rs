//! Periodic health checks: every machine policy's `MachineHealthCheckPolicy.HealthCheckInterval`
//! queues a `Health` task for the enabled deployment targets and worker agents under that
//! policy, as Octopus does.
//!
//! Replicas agree through the cache: a check is queued only by whoever sets the policy's
//! `health-due:` key, which expires after one interval. The first time a policy with machines is
//! seen, its clock starts instead, so a server that just started does not check everything at once.

use crate::Orchestrator;
use crate::execution::{HEALTH_TASK, enabled_machines, enabled_targets};
use chrono::Utc;
use cuttle_contracts::OrchestratorCommand;
use cuttle_domain::SpaceId;
use cuttle_store::{TransactionTrait, documents, tasks};
use cuttle_wire::resources::{Machine, MachinePolicy};
use std::time::Duration;

/// How often policies are looked at.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Cache key that exists while a policy's next check is not due. The interval is part of the key,
/// so a policy whose interval changes is measured against the new one from the next sweep on.
fn due_key(space: &SpaceId, policy: &str, interval_secs: u64) -> String {
    format!("health-due:{space}:{policy}:{interval_secs}")
}

/// Cache key that says the policy's clock has started.
fn seen_key(space: &SpaceId, policy: &str) -> String {
    format!("health-seen:{space}:{policy}")
}

impl Orchestrator {
    /// Queues the health checks that are due; returns how many were queued.
    pub async fn schedule_health_checks(&self) -> anyhow::Result<usize> {
        let conn = self.store.conn();
        let (spaces, _) = documents::list_spaces(conn, &documents::ListQuery::everything()).await?;
        let mut queued = 0;
        for space in spaces {
            let space = SpaceId::parse(&space.id)?;
            let (policies, _) = documents::list(
                conn,
                &space,
                "MachinePolicy",
                &documents::ListQuery::everything(),
            )
            .await?;
            // Read only when some policy's check may be due: most sweeps find none.
            let mut machines: Option<Vec<Machine>> = None;
            for doc in &policies {
                let policy: MachinePolicy = documents::decode(doc)?;
                let Some(seconds) = cuttle_domain::time_span::parse_seconds(
                    &policy.machine_health_check_policy.health_check_interval,
                )
                .filter(|s| *s > 0) else {
                    continue;
                };
                if self
                    .cache
                    .get(&due_key(&space, &policy.id, seconds))
                    .await?
                    .is_some()
                {
                    continue;
                }
                if machines.is_none() {
                    let mut all = enabled_targets(conn, &space, |_| true).await?;
                    all.extend(enabled_machines(conn, &space, "Worker", |_| true).await?);
                    machines = Some(all);
                }
                let machines = machines.as_deref().unwrap_or_default();
                let ids: Vec<String> = machines
                    .iter()
                    .filter(|m| {
                        m.machine_policy_id == policy.id
                            || (m.machine_policy_id.is_empty() && policy.is_default)
                    })
                    .map(|m| m.id.clone())
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let interval = Duration::from_secs(seconds);
                let first_sight = self
                    .cache
                    .set_if_absent(&seen_key(&space, &policy.id), b"1", None)
                    .await?;
                let due = self
                    .cache
                    .set_if_absent(&due_key(&space, &policy.id, seconds), b"1", Some(interval))
                    .await?;
                if due && !first_sight {
                    self.queue_health_check(&space, &policy, ids).await?;
                    queued += 1;
                }
            }
        }
        Ok(queued)
    }

    async fn queue_health_check(
        &self,
        space: &SpaceId,
        policy: &MachinePolicy,
        machine_ids: Vec<String>,
    ) -> anyhow::Result<()> {
        let txn = self.store.conn().begin().await?;
        let task_id = cuttle_store::next_id(&txn, "ServerTasks").await?;
        let arguments = serde_json::json!({
            "MachineIds": machine_ids,
            "MachinePolicyId": policy.id,
        });
        tasks::insert_task(
            &txn,
            tasks::queued_task(
                task_id.clone(),
                space,
                HEALTH_TASK,
                format!(
                    "Check deployment target health (machine policy {}, every {})",
                    policy.name, policy.machine_health_check_policy.health_check_interval
                ),
                arguments.to_string(),
                Utc::now(),
            ),
        )
        .await?;
        let command = OrchestratorCommand::TaskQueued { task_id };
        cuttle_platform::outbox::enqueue_command(&txn, &command).await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(())
    }
}
