//! What every presence service repeats, in one small place.

pub mod app_directory;
pub mod backoff;
pub mod config;
pub mod db;
pub mod error;
pub mod event_rows;
pub mod grpc;
pub mod grpc_tls;
pub mod http;
pub mod internal_auth;
pub mod net;
pub mod partition_lease;
pub mod registry_router;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod trace_context;

pub use app_directory::{AppConfig, AppDirectory, CallbackFormat, GroupSpec, PolicyMode};
pub use error::ErrorCode;
pub use shutdown::Shutdown;
