//! The OpenAPI document served at `/openapi.json`: generated from the handlers' `#[utoipa::path]`
//! annotations (so it cannot drift from the routes), plus the admin endpoints that
//! `presence_common` serves.

use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, HttpMethod, ObjectBuilder, PathItem, ResponseBuilder, Type,
        path::OperationBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::{ErrorDetail, ErrorResponse};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "presence REST facade",
        description = "Online status of an app's users: queries, admin kicks and the event feed. \
            Every `/v1` request carries `Authorization: Bearer <api key>`; errors are \
            `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`."
    ),
    components(schemas(ErrorResponse, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "presence", description = "Who is online, on which devices; admin kicks"),
        (name = "events", description = "The app's presence events, as the callbacks send them"),
        (name = "admin", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The app's REST API key (`apps.api_key_sha256` holds its SHA-256)"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// A GET without authentication answering 200 with `content_type` holding a `body_type`.
fn admin_get(summary: &str, content_type: &str, body_type: Type) -> PathItem {
    let body = Content::new(Some(ObjectBuilder::new().schema_type(body_type).build()));
    let operation = OperationBuilder::new()
        .tag("admin")
        .summary(Some(summary))
        .response("200", ResponseBuilder::new().description(summary).content(content_type, body).build())
        .build();
    PathItem::new(HttpMethod::Get, operation)
}

/// Adds the endpoints the handlers do not declare themselves.
pub fn complete(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let paths = &mut openapi.paths.paths;
    paths.insert(
        "/openapi.json".to_owned(),
        admin_get("This OpenAPI document", "application/json", Type::Object),
    );
    paths.insert("/healthz".to_owned(), admin_get("Liveness: `ok`", "text/plain", Type::String));
    paths.insert("/metrics".to_owned(), admin_get("Prometheus metrics", "text/plain", Type::String));
    openapi
}
