//! The contracts of presence, in one crate.
//!
//! - [`v1`]: code generated from `presence/v1/*.proto`: the device protocol (`ClientFrame`,
//!   `ServerFrame`) and the internal gRPC services (registry, gateway link, event feed).
//! - [`codes`]: the codes devices see (login errors, `Error` codes, kick and request errors).
//! - [`framing`]: the client protocol's length-prefixed frames, as a `tokio_util` codec.
//! - [`json`]: the JSON shapes app backends see (`docs/http-api.md`).
//! - [`limits`]: the size limits every service checks (id and token lengths, page sizes).
//! - [`partition`]: the stable hash that assigns each user to a registry partition.
//! - [`callback_signature`]: how callbacks are signed and verified.
//! - [`codec`]: the gRPC codec of the generated services (prost's, decoding from a slice).
//! - [`query_request`]: the batch query's request, written by hand (its ids in one buffer).
//! - [`FILE_DESCRIPTOR_SET`]: served by gRPC reflection.

pub mod callback_signature;
pub mod codec;
pub mod codes;
pub mod framing;
pub mod internal_token;
pub mod json;
pub mod limits;
mod names;
pub mod partition;
pub mod query_request;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("presence.v1");
    pub use crate::query_request::QueryRequest;
}

pub use names::UnknownName;

/// Encoded descriptors of every service, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("presence_descriptor");

pub use limits::MAX_FRAME_LEN;

/// App id used when a device or token names none.
pub const DEFAULT_APP_ID: &str = "default";
