//! The facade's metrics: request count and latency by route and status, for every response
//! (404s and rejections too), with their names and HELP texts.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};

/// Labels `route`, `method`, `status`.
pub const REQUESTS: &str = "facade_http_requests_total";
/// Labels `route`, `method`, `status`.
pub const DURATION: &str = "facade_http_request_duration_seconds";

/// Registers every metric's HELP text with the installed recorder; called once at start.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        metrics::Unit::Count,
        "HTTP requests answered, by route, method and status."
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by route, method and status."
    );
}

/// Middleware: the route label is the matched template (`/v1/users/{user_id}/presence`), never the
/// raw path, so user ids do not become label values; unmatched requests share one label.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = match *request.method() {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::PATCH | Method::HEAD => {
            request.method().as_str().to_owned()
        }
        // Arbitrary methods must not become label values.
        _ => "other".to_owned(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}
