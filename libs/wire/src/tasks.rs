//! Server tasks and their activity-log tree.

use crate::Links;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A server task (`ServerTaskResource`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerTask {
    pub id: String,
    pub space_id: Option<String>,
    pub name: String,
    pub description: String,
    pub arguments: BTreeMap<String, Value>,
    pub state: String,
    pub completed: Option<String>,
    #[serde(with = "crate::dates::option")]
    pub queue_time: Option<DateTime<Utc>>,
    #[serde(with = "crate::dates::option")]
    pub queue_time_expiry: Option<DateTime<Utc>>,
    #[serde(with = "crate::dates::option")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(with = "crate::dates::option")]
    pub last_updated_time: Option<DateTime<Utc>>,
    #[serde(with = "crate::dates::option")]
    pub completed_time: Option<DateTime<Utc>>,
    pub server_node: Option<String>,
    pub duration: Option<String>,
    pub error_message: Option<String>,
    pub has_been_picked_up_by_processor: bool,
    pub is_completed: bool,
    pub finished_successfully: bool,
    pub has_pending_interruptions: bool,
    pub has_pending_preconditions: bool,
    pub pending_interruption_types: Vec<String>,
    pub can_rerun: bool,
    pub has_warnings_or_errors: bool,
    pub project_id: Option<String>,
    pub estimated_remaining_queue_duration_seconds: i64,
    pub links: Links,
}

/// One log line in the activity tree.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogElement {
    pub category: String,
    pub occurred_at: String,
    pub message_text: String,
    pub detail: Option<String>,
    pub percentage: Option<i64>,
    pub number: i64,
}

/// A node of the activity tree: the task, a step, or an action on a machine.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivityElement {
    pub id: String,
    pub name: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub status: String,
    pub show_at_summary_level: bool,
    pub progress_percentage: i64,
    pub progress_message: String,
    pub log_elements: Vec<LogElement>,
    pub children: Vec<ActivityElement>,
}

/// Progress of a task.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskProgress {
    pub progress_percentage: i64,
    pub estimated_time_remaining: String,
}

/// `GET /api/{space}/tasks/{id}/details`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskDetails {
    pub task: ServerTask,
    pub progress: TaskProgress,
    pub physical_log_size: i64,
    pub activity_logs: Vec<ActivityElement>,
    pub links: Links,
}
