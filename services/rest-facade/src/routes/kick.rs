//! `POST /v1/users/{user_id}/kick`: an admin kick of some or all of a user's devices.

use axum::{Json, extract::State};
use presence_proto::{json::KickedDeviceJson, v1::Platform};
use serde::{Deserialize, Serialize};
use utoipa::{
    ToSchema,
    openapi::{Array, ArrayBuilder, ObjectBuilder, Type, schema::SchemaType},
};

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::{ApiPath, OptionalJson},
    routes::check_user_id,
    state::AppState,
};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KickBody {
    /// Only devices of these platforms; absent or `null` = every device. An empty list is refused
    /// (`no_platforms`) rather than read as "all".
    #[schema(schema_with = platforms_schema)]
    pub platforms: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KickResponse {
    /// The devices forced offline; each received `Kicked{reason:"admin"}`.
    pub kicked_devices: Vec<KickedDeviceJson>,
}

/// `platforms`: `null` or 1+ contract names, so clients can generate an enum.
fn platforms_schema() -> Array {
    let names = Platform::NAMED.iter().filter_map(|p| p.name());
    let name = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(name)
        .min_items(Some(1))
        .description(Some("Only devices of these platforms; absent or `null` = every device"))
        .examples([serde_json::json!(["ios"])])
        .build()
}

fn platforms(names: Option<Vec<String>>) -> Result<Vec<Platform>, ApiError> {
    let Some(names) = names else { return Ok(Vec::new()) };
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "no_platforms",
            "platforms is empty; omit it to kick every device",
        ));
    }
    names
        .iter()
        .map(|name| {
            Platform::from_name(name)
                .map_err(|err| ApiError::bad_request("unknown_platform", err.to_string()))
        })
        .collect()
}

/// Forces devices of one user of the calling app offline.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/kick",
    tag = "presence",
    // The pattern is presence_proto::limits::ID_PATTERN (an attribute takes only a literal).
    params(("user_id" = String, Path, min_length = 1, max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$",
        description = "The app's user id, 1 to 256 bytes of UTF-8 without control characters, percent-encoded")),
    request_body(content = Option<KickBody>,
        description = "Optional: no body, an empty one or `null` kick every device"),
    responses(
        (status = 200, description = "The devices forced offline (none if the user had none)", body = KickResponse),
        (status = 400, description = "`unknown_platform`, `no_platforms`, `invalid_user_id`, \
            `invalid_json`, `invalid_body`, `invalid_path` or `bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn kick(
    app: CallerApp,
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<String>,
    OptionalJson(body): OptionalJson<KickBody>,
) -> Result<Json<KickResponse>, ApiError> {
    check_user_id(&user_id)?;
    let platforms = platforms(body.unwrap_or_default().platforms)?;
    let kicked = state.registry.kick(app.id(), &user_id, &platforms).await?;
    // Debug formatting escapes what a caller put in the id (a newline cannot forge a log line).
    tracing::info!(app_id = app.id(), ?user_id, kicked = kicked.len(), "admin kick");
    Ok(Json(KickResponse { kicked_devices: kicked.iter().map(KickedDeviceJson::from).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_follow_the_contract() {
        assert_eq!(platforms(None).unwrap(), vec![]);
        assert_eq!(
            platforms(Some(vec!["ios".into(), "android_pad".into()])).unwrap(),
            vec![Platform::Ios, Platform::AndroidPad]
        );
        assert_eq!(platforms(Some(vec!["IOS".into()])).unwrap_err().code(), "unknown_platform");
        assert_eq!(platforms(Some(vec![])).unwrap_err().code(), "no_platforms");
    }
}
