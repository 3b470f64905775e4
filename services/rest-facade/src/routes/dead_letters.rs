//! `GET /v1/callbacks/dead-letters` and `POST /v1/callbacks/dead-letters/replay`: the calling
//! app's callbacks that the notifier gave up on, and asking for them again. Read from and marked
//! in `callback_dead_letters`, where the notifiers keep them; a notifier re-sends a marked row
//! and deletes it once delivered (or dead-letters it again with the new error).

use axum::{Json, extract::State};
use presence_proto::json::PresenceEventJson;
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, ToSchema,
    openapi::{Array, ArrayBuilder, ObjectBuilder, Type, schema::SchemaType},
};

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::{ApiQuery, OptionalJson},
    routes::check_limit,
    state::AppState,
};

/// Most dead letters one page lists.
pub const MAX_LIMIT: u32 = 1000;
/// Most event ids one replay names.
pub const MAX_REPLAY_IDS: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLettersParams {
    /// Most dead letters returned, 1 to 1000, oldest first. Default 100.
    #[serde(default = "default_limit")]
    #[param(default = 100, minimum = 1, maximum = 1000)]
    pub limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// A callback given up on: the event as it was POSTed, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterJson {
    #[serde(flatten)]
    pub event: PresenceEventJson,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The last attempt's failure (an HTTP status or a connection error).
    pub last_error: String,
    /// When it was given up on (unix ms).
    pub dead_at_ms: u64,
    /// A replay was asked for and has not settled yet.
    pub replay_requested: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersResponse {
    pub dead_letters: Vec<DeadLetterJson>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// The dead letters to send again (their `event_id`s); absent or `null` = all of the app's.
    #[schema(schema_with = event_ids_schema)]
    pub event_ids: Option<Vec<String>>,
}

/// `event_ids`: `null` or 1 to 1000 UUIDs.
fn event_ids_schema() -> Array {
    let uuid = ObjectBuilder::new().schema_type(Type::String).pattern(Some(UUID_PATTERN));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(uuid)
        .min_items(Some(1))
        .max_items(Some(MAX_REPLAY_IDS))
        .description(Some(
            "The dead letters to send again (their event_ids); absent or `null` = all of the app's",
        ))
        .build()
}

const UUID_PATTERN: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResponse {
    /// How many of the app's dead letters are now queued to be sent again.
    pub replay_requested: u64,
}

#[derive(sqlx::FromRow)]
struct Row {
    body: String,
    attempts: i32,
    last_error: String,
    dead_at_ms: i64,
    replay_requested: bool,
}

/// The calling app's dead-lettered callbacks, oldest first.
#[utoipa::path(
    get,
    path = "/v1/callbacks/dead-letters",
    tag = "callbacks",
    params(DeadLettersParams),
    responses(
        (status = 200, description = "The app's dead letters, oldest first", body = DeadLettersResponse),
        (status = 400, description = "`invalid_limit`, `invalid_query` or `bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    app: CallerApp,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeadLettersParams>,
) -> Result<Json<DeadLettersResponse>, ApiError> {
    check_limit(params.limit, MAX_LIMIT)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT body, attempts, last_error, (extract(epoch FROM dead_at) * 1000)::int8 AS dead_at_ms, \
         replay_requested FROM callback_dead_letters WHERE app_id = $1 ORDER BY dead_at, event_id LIMIT $2",
    )
    .bind(app.id())
    .bind(i64::from(params.limit))
    .fetch_all(&state.pool)
    .await
    .map_err(database_error)?;
    let dead_letters = rows
        .into_iter()
        .filter_map(|row| match serde_json::from_str::<PresenceEventJson>(&row.body) {
            Ok(event) => Some(DeadLetterJson {
                event,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                last_error: row.last_error,
                dead_at_ms: u64::try_from(row.dead_at_ms).unwrap_or(0),
                replay_requested: row.replay_requested,
            }),
            Err(err) => {
                tracing::error!(%err, app_id = app.id(), "a dead letter's body is not an event; left out");
                None
            }
        })
        .collect();
    Ok(Json(DeadLettersResponse { dead_letters }))
}

/// Sends the calling app's dead letters again (some, or all).
#[utoipa::path(
    post,
    path = "/v1/callbacks/dead-letters/replay",
    tag = "callbacks",
    request_body(content = Option<ReplayBody>,
        description = "Optional: no body, an empty one or `null` replay every dead letter of the app"),
    responses(
        (status = 200, description = "How many are queued again (ids of other apps, or unknown, count for nothing)",
            body = ReplayResponse),
        (status = 400, description = "`no_event_ids`, `too_many_event_ids`, `invalid_event_id`, \
            `invalid_json`, `invalid_body` or `bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn replay(
    app: CallerApp,
    State(state): State<AppState>,
    OptionalJson(body): OptionalJson<ReplayBody>,
) -> Result<Json<ReplayResponse>, ApiError> {
    let ids = body.unwrap_or_default().event_ids;
    let marked = match ids {
        None => {
            sqlx::query("UPDATE callback_dead_letters SET replay_requested = true WHERE app_id = $1")
                .bind(app.id())
                .execute(&state.pool)
                .await
        }
        Some(ids) if ids.is_empty() => {
            return Err(ApiError::bad_request(
                "no_event_ids",
                "event_ids is empty; omit it to replay every one",
            ));
        }
        Some(ids) if ids.len() > MAX_REPLAY_IDS => {
            return Err(ApiError::bad_request(
                "too_many_event_ids",
                format!("at most {MAX_REPLAY_IDS} event ids per replay"),
            ));
        }
        Some(ids) => {
            if let Some(bad) = ids.iter().find(|id| uuid::Uuid::parse_str(id).is_err()) {
                return Err(ApiError::bad_request(
                    "invalid_event_id",
                    format!("{bad:?} is not an event id (a UUID)"),
                ));
            }
            sqlx::query(
                "UPDATE callback_dead_letters SET replay_requested = true \
                 WHERE app_id = $1 AND event_id = ANY($2::uuid[])",
            )
            .bind(app.id())
            .bind(ids)
            .execute(&state.pool)
            .await
        }
    }
    .map_err(database_error)?;
    tracing::info!(app_id = app.id(), count = marked.rows_affected(), "dead letters queued for replay");
    Ok(Json(ReplayResponse { replay_requested: marked.rows_affected() }))
}

fn database_error(err: sqlx::Error) -> ApiError {
    tracing::warn!(%err, "dead letters: the database failed");
    ApiError::Unavailable
}
