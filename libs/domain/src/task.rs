//! Server-task states, activity statuses and log categories, spelled as Octopus spells them.

use serde::{Deserialize, Serialize};

/// The state of a server task (`TaskState` in Octopus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for the orchestrator.
    Queued,
    /// Running.
    Executing,
    /// Cancel was requested and running work is being stopped.
    Cancelling,
    /// Finished successfully.
    Success,
    /// Finished with an error.
    Failed,
    /// Stopped by a user.
    Canceled,
    /// Expired before it could start.
    TimedOut,
}

impl TaskState {
    /// Every state, for parsing and filters.
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Executing,
        TaskState::Cancelling,
        TaskState::Success,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::TimedOut,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "Queued",
            TaskState::Executing => "Executing",
            TaskState::Cancelling => "Cancelling",
            TaskState::Success => "Success",
            TaskState::Failed => "Failed",
            TaskState::Canceled => "Canceled",
            TaskState::TimedOut => "TimedOut",
        }
    }

    /// Parses the wire spelling, case-insensitively.
    pub fn parse(value: &str) -> Option<TaskState> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(value.trim()))
    }

    /// True for the four terminal states.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Canceled | TaskState::TimedOut
        )
    }
}

/// The status of one node of the activity-log tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityStatus {
    /// Not started.
    Pending,
    /// Started, not finished.
    Running,
    /// Finished well.
    Success,
    /// Finished badly.
    Failed,
    /// Not run because of its condition.
    Skipped,
    /// Finished with warnings.
    SuccessWithWarning,
    /// Stopped by cancellation.
    Canceled,
}

impl ActivityStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityStatus::Pending => "Pending",
            ActivityStatus::Running => "Running",
            ActivityStatus::Success => "Success",
            ActivityStatus::Failed => "Failed",
            ActivityStatus::Skipped => "Skipped",
            ActivityStatus::SuccessWithWarning => "SuccessWithWarning",
            ActivityStatus::Canceled => "Canceled",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(value: &str) -> Option<ActivityStatus> {
        [
            ActivityStatus::Pending,
            ActivityStatus::Running,
            ActivityStatus::Success,
            ActivityStatus::Failed,
            ActivityStatus::Skipped,
            ActivityStatus::SuccessWithWarning,
            ActivityStatus::Canceled,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }

    /// True once the node will not change again.
    pub fn is_finished(self) -> bool {
        !matches!(self, ActivityStatus::Pending | ActivityStatus::Running)
    }
}

/// The category of one task-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCategory {
    /// Hidden unless verbose.
    Verbose,
    /// Normal output.
    Info,
    /// Emphasised output.
    Highlight,
    /// Something worth attention.
    Warning,
    /// Something failed.
    Error,
    /// The task failed fatally.
    Fatal,
}

impl LogCategory {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LogCategory::Verbose => "Verbose",
            LogCategory::Info => "Info",
            LogCategory::Highlight => "Highlight",
            LogCategory::Warning => "Warning",
            LogCategory::Error => "Error",
            LogCategory::Fatal => "Fatal",
        }
    }

    /// Parses the wire spelling; unknown categories read as Info.
    pub fn parse(value: &str) -> LogCategory {
        match value {
            "Verbose" => LogCategory::Verbose,
            "Highlight" => LogCategory::Highlight,
            "Warning" => LogCategory::Warning,
            "Error" => LogCategory::Error,
            "Fatal" => LogCategory::Fatal,
            _ => LogCategory::Info,
        }
    }

    /// Warnings and worse make `HasWarningsOrErrors` true.
    pub fn is_warning_or_error(self) -> bool {
        matches!(
            self,
            LogCategory::Warning | LogCategory::Error | LogCategory::Fatal
        )
    }
}

/// Renders a duration the way Octopus's `Duration` field does ("32 seconds", "1 minute").
pub fn describe_duration(millis: i64) -> String {
    let seconds = (millis.max(0) + 500) / 1000;
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if seconds < 60 {
        plural(seconds, "second")
    } else if seconds < 3600 {
        plural(seconds / 60, "minute")
    } else {
        plural(seconds / 3600, "hour")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_four_terminal_states_are_completed() {
        let completed: Vec<_> = TaskState::ALL
            .into_iter()
            .filter(|s| s.is_completed())
            .collect();
        assert_eq!(
            completed,
            [
                TaskState::Success,
                TaskState::Failed,
                TaskState::Canceled,
                TaskState::TimedOut
            ]
        );
        assert_eq!(TaskState::parse("executing"), Some(TaskState::Executing));
        assert_eq!(TaskState::parse("New"), None);
    }

    #[test]
    fn durations_read_like_octopus() {
        assert_eq!(describe_duration(400), "0 seconds");
        assert_eq!(describe_duration(1_000), "1 second");
        assert_eq!(describe_duration(32_000), "32 seconds");
        assert_eq!(describe_duration(61_000), "1 minute");
        assert_eq!(describe_duration(7_300_000), "2 hours");
    }
}
