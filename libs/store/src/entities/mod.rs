//! sea-orm entities, one per table of `migrations/`.

pub mod api_key;
pub mod document;
pub mod id_counter;
pub mod outbox;
pub mod server_task;
pub mod setting;
pub mod task_job;
pub mod task_log;
pub mod user;
