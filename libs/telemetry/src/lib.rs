//! Logs, traces and metrics shared by every Cuttle service.
//!
//! One process may host several services (embedded mode), so everything here is process-wide:
//! [`init`] installs a single subscriber and [`metrics`] lives in a single Prometheus registry.
//! Services expose [`ops_router`] next to their own routes and wrap those routes with
//! [`track_http`].

// Every public item carries a doc comment (house style); the compiler keeps it that way.
#![warn(missing_docs)]

mod config;
mod http;
mod metrics;
mod propagation;
mod subscriber;

pub use config::{LogFormat, TelemetryConfig};
pub use http::{ops_router, track_http};
pub use metrics::{Metrics, metrics, render_metrics};
pub use propagation::{inject_context, set_parent_from_headers};
pub use subscriber::{TelemetryGuard, init};
