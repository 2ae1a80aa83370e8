//! sea-orm entities, one per table of `migrations/`.

pub mod api_key;
pub mod build_information;
pub mod document;
pub mod event;
pub mod id_counter;
pub mod org_document;
pub mod organisation;
pub mod outbox;
pub mod package;
pub mod server_task;
pub mod session;
pub mod setting;
pub mod space_owner;
pub mod task_job;
pub mod task_log;
pub mod user;
