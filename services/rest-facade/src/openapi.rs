//! The OpenAPI document served at `/openapi.json`: generated from the handlers' `#[utoipa::path]`
//! annotations (so it cannot drift from the routes), plus the admin endpoints that
//! `presence_common` serves.

use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, HttpMethod, ObjectBuilder, PathItem, Ref, Response, ResponseBuilder, Type,
        header::HeaderBuilder,
        path::{Operation, OperationBuilder},
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

/// Statuses every `/v1` operation can answer whatever its handler does: the key check runs
/// first, and every handler ends in a registry call whose failures keep their meaning
/// (`ApiError::from_status`); a panic is caught as 500.
const EVERY_V1_OPERATION: &[(&str, &str)] = &[
    ("401", "`unauthenticated`: missing, malformed or unknown API key"),
    ("404", "`not_found`: the app was removed between the key check and the registry call"),
    ("429", "`rate_limited`: the registry is overloaded; retry later"),
    ("500", "`internal`: a bug on our side; details are in the facade's logs"),
    ("503", "`unavailable`: the registry cannot be reached or did not answer in time; retry with backoff"),
];

/// Statuses of reading a JSON body (`extract::ApiJson`, `extract::OptionalJson`).
const WITH_BODY: &[(&str, &str)] = &[
    ("413", "`payload_too_large`: the body is over FACADE_MAX_BODY_BYTES (1 MiB by default)"),
    ("415", "`unsupported_media_type`: a body without a JSON `Content-Type`"),
];

fn error_response(status: &str, description: &str) -> Response {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorResponse"))));
    if status == "401" {
        let challenge = HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["Bearer"]))))
            .description(Some("Always `Bearer`"));
        response = response.header("WWW-Authenticate", challenge.build());
    }
    response.build()
}

/// Lists the statuses of [`EVERY_V1_OPERATION`] and [`WITH_BODY`] on `operation`, keeping any
/// the handler already describes.
fn add_error_responses(operation: &mut Operation) {
    let with_body = if operation.request_body.is_some() { WITH_BODY } else { &[] };
    for (status, description) in EVERY_V1_OPERATION.iter().chain(with_body) {
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| error_response(status, description).into());
    }
}

/// Adds what the handlers do not declare themselves: the error statuses common to all `/v1`
/// operations, and the endpoints outside `/v1`.
pub fn complete(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let paths = &mut openapi.paths.paths;
    for (_, item) in paths.iter_mut().filter(|(path, _)| path.starts_with("/v1/")) {
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
        operations.into_iter().flatten().for_each(add_error_responses);
    }
    paths.insert(
        "/openapi.json".to_owned(),
        admin_get("This OpenAPI document", "application/json", Type::Object),
    );
    paths.insert("/healthz".to_owned(), admin_get("Liveness: `ok`", "text/plain", Type::String));
    openapi
}
