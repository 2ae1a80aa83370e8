//! Answers for routes Cuttle does not serve: a 501 naming the Octopus feature that is not built
//! yet (never a fake success), or a 404 in Octopus's error shape.

use crate::error::ApiError;
use axum::http::{Method, Uri};

/// Octopus route families that exist but are not built in Cuttle yet, with the feature's name.
const NOT_YET_BUILT: &[(&str, &str)] = &[
    // The collections are served; these are the routes below them that are not built yet
    // (health checks, connection status, machine tasks, summaries).
    (
        "machines",
        "Deployment target health checks, connections and tasks",
    ),
    ("workers", "Worker health checks, connections and tasks"),
    ("workerpools", "Worker pool summaries"),
    ("machinepolicies", "Machine policy templates"),
    // Tenants, tag sets and their variables are served; tenant logos are not.
    ("tenants", "Tenant logos"),
    ("runbooks", "Runbooks"),
    ("runbookruns", "Runbook runs"),
    ("runbook-runs", "Runbook runs"),
    ("runbooksnapshots", "Runbook snapshots"),
    ("runbookprocesses", "Runbook processes"),
    ("interruptions", "Manual interventions"),
    ("certificates", "Certificates"),
    ("accounts", "Accounts"),
    ("deploymentsettings", "Deployment settings"),
    ("triggers", "Project triggers"),
    ("subscriptions", "Subscriptions"),
];

/// The router's fallback.
pub async fn fallback(method: Method, uri: Uri) -> ApiError {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        for segment in path.split('/') {
            if let Some((_, feature)) = NOT_YET_BUILT
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(segment))
            {
                return ApiError::not_implemented(feature);
            }
        }
    }
    ApiError::not_found(format!("no route matches {method} {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn unbuilt_octopus_features_answer_501_and_unknown_paths_404() {
        let uri: Uri = "/api/Spaces-1/tenants/Tenants-1/logo".parse().unwrap();
        assert_eq!(
            fallback(Method::POST, uri).await.into_response().status(),
            501
        );
        let uri: Uri = "/api/Spaces-1/nothing-here".parse().unwrap();
        assert_eq!(
            fallback(Method::GET, uri).await.into_response().status(),
            404
        );
    }
}
