//! The router: the `/v1` API (documented by utoipa as it is routed), `/openapi.json`, the admin
//! endpoints, and the JSON 404/405 fallbacks, under one set of layers.

pub mod dead_letters;
pub mod events;
pub mod kick;
pub mod query;
pub mod stats;
pub mod status;
pub mod tencent_im;
pub mod user;

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, Uri, header},
    response::IntoResponse,
    routing::get,
};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::{
    OpenApi,
    openapi::{Array, ArrayBuilder, Object, ObjectBuilder, Type},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ApiError, extract::BodyLimit, http_metrics, openapi, state::AppState};

/// Longest user id accepted (the registry's bound).
pub use presence_proto::limits::MAX_ID_LEN;

/// A user id in the document. JSON Schema's `maxLength` counts characters, the contract counts
/// UTF-8 bytes: 256 is exact for ASCII ids, and the description states the byte rule.
fn user_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ID_LEN))
        .pattern(Some(presence_proto::limits::ID_PATTERN))
        .description(Some("A user id of the app: 1 to 256 bytes of UTF-8, no control characters"))
        .build()
}

/// `user_ids` of a query: 1 to 500 user ids.
pub(crate) fn user_ids_schema() -> Array {
    ArrayBuilder::new()
        .items(user_id_schema())
        .min_items(Some(1))
        .max_items(Some(query::MAX_QUERY_USERS))
        .description(Some("1 to 500 user ids; results come back in this order (duplicates included)"))
        .examples([serde_json::json!(["u1", "u2"])])
        .build()
}

pub(crate) fn check_user_id(user_id: &str) -> Result<(), ApiError> {
    if !presence_proto::limits::is_valid_id(user_id) {
        return Err(ApiError::bad_request(
            "invalid_user_id",
            format!(
                "a user id must be 1 to {MAX_ID_LEN} bytes without control characters, got {} bytes",
                user_id.len()
            ),
        ));
    }
    Ok(())
}

/// A page size of 1 to `max`, else `invalid_limit`.
pub(crate) fn check_limit(limit: u32, max: u32) -> Result<(), ApiError> {
    if (1..=max).contains(&limit) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_limit", format!("limit must be 1 to {max}, got {limit}")))
    }
}

/// The `/v1` routes and the OpenAPI document describing exactly them.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(query::query))
        .routes(routes!(user::presence))
        .routes(routes!(kick::kick))
        .routes(routes!(status::set_status))
        .routes(routes!(stats::stats))
        .routes(routes!(tencent_im::query_online_status))
        .routes(routes!(events::events))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay))
        .split_for_parts();
    (router, openapi::complete(openapi))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A panic in a handler is a bug; the client still gets the JSON error shape.
fn panic_response(_: Box<dyn std::any::Any + Send>) -> axum::response::Response {
    tracing::error!("handler panicked");
    ApiError::Internal.into_response()
}

/// The whole HTTP surface of the facade.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let (api, document) = api();
    let document: Arc<str> = match serde_json::to_string(&document) {
        Ok(json) => json.into(),
        Err(err) => {
            tracing::error!(%err, "OpenAPI document does not serialise");
            "{}".into()
        }
    };
    let openapi_json = get(move || {
        let document = document.clone();
        async move {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], document.to_string())
        }
    });
    api.with_state(state)
        .route("/openapi.json", openapi_json)
        .merge(presence_common::http::health_route())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(http_metrics::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .layer(CatchPanicLayer::custom(panic_response))
}
