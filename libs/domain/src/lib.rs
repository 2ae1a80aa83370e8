//! The Cuttle domain: identifiers, task states, lifecycle progression, release versioning and
//! package ids and versions.
//!
//! Invariant: this crate performs no I/O and depends on no web, database, broker or cloud crate,
//! so every rule in it can be unit-tested in isolation and reused by every service.

pub mod ids;
pub mod lifecycle;
pub mod package;
pub mod script;
pub mod task;
pub mod tenant_tags;
pub mod time_span;
pub mod version;

pub use ids::{IdError, SpaceId};
pub use task::{ActivityStatus, LogCategory, TaskState};
