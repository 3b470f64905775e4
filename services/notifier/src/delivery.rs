use std::time::{Duration, Instant};

use bytes::Bytes;
use presence_common::{AppDirectory, CallbackFormat, trace_context};
use presence_proto::callback_signature::{self, EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use presence_proto::json::PresenceEventJson;
use reqwest::header::CONTENT_TYPE;
use secrecy::ExposeSecret;
use tracing::Instrument as _;

use crate::{callback::Callback, metric_names, tencent_im};

/// Receivers' answers are not read beyond this: we only need the status.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The URL and body of a callback in the app's format. Callbacks are kept (and dead-lettered)
/// as presence events; another format is rendered from that at each attempt.
fn shaped(
    format: CallbackFormat,
    app_id: &str,
    url: &str,
    event: &Bytes,
) -> Result<(reqwest::Url, Bytes), String> {
    let mut url = reqwest::Url::parse(url).map_err(|err| format!("callback_url is not a URL: {err}"))?;
    match format {
        CallbackFormat::Presence => Ok((url, event.clone())),
        CallbackFormat::TencentIm => {
            let event: PresenceEventJson =
                serde_json::from_slice(event).map_err(|err| format!("not an event to render: {err}"))?;
            let rendered = tencent_im::render(app_id, &event).map_err(|err| err.to_string())?;
            url.query_pairs_mut().extend_pairs(rendered.query);
            Ok((url, Bytes::from(rendered.body)))
        }
    }
}

/// The result of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// The app has no callback URL (or no longer exists): nothing to deliver.
    NoReceiver,
    Failed(Failure),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    /// The receiver is down, overloaded or unreachable (no answer, 5xx, 408, 429): the app's
    /// circuit counts it. Otherwise (another 4xx, a callback we cannot build) it is about this
    /// event, retried on its own.
    pub blames_receiver: bool,
}

impl Failure {
    fn receiver(error: String) -> Attempt {
        Attempt::Failed(Self { error, blames_receiver: true })
    }

    fn event(error: String) -> Attempt {
        Attempt::Failed(Self { error, blames_receiver: false })
    }
}

/// Whether a non-2xx answer says the receiver as a whole is failing rather than this event.
pub fn status_blames_receiver(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// Signs and POSTs callbacks, reading each app's URL and secret live from the directory so that
/// an admin's SQL change applies to the next attempt.
#[derive(Clone)]
pub struct CallbackDelivery {
    client: reqwest::Client,
    apps: AppDirectory,
    timeout: Duration,
}

impl CallbackDelivery {
    pub fn new(apps: AppDirectory, timeout: Duration) -> Result<Self, reqwest::Error> {
        presence_common::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client, apps, timeout })
    }

    /// One attempt; its duration is recorded under `app_label` (see `crate::app_labels`).
    pub async fn attempt(&self, callback: &Callback, app_label: &str) -> Attempt {
        let Some(app) = self.apps.get(&callback.app_id) else { return Attempt::NoReceiver };
        let Some(url) = app.callback_url.as_deref().filter(|url| !url.is_empty()) else {
            return Attempt::NoReceiver;
        };
        let Some(secret) = app.callback_secret.as_ref().map(ExposeSecret::expose_secret) else {
            return Failure::event("the app has a callback_url but no callback_secret".to_owned());
        };
        let (url, body) = match shaped(app.callback_format, &app.app_id, url, &callback.body) {
            Ok(shaped) => shaped,
            Err(err) => return Failure::event(err),
        };
        let timestamp = presence_common::time::now_ms().to_string();
        let signature = callback_signature::sign(secret, &timestamp, &body);
        // A span of the change's trace; the receiver can join it through `traceparent`.
        let span = tracing::info_span!("notifier.callback", event_id = %callback.event_id);
        trace_context::set_parent(&span, &callback.traceparent);
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, &callback.event_id)
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, signature);
        if let Some(traceparent) = trace_context::traceparent(&span) {
            request = request.header(trace_context::TRACEPARENT, traceparent);
        }
        let started = Instant::now();
        let sent = request.body(body).send().instrument(span).await;
        let outcome = match sent {
            Ok(mut response) => {
                let status = response.status();
                // Read (a bounded part of) the answer so the connection can be reused.
                let mut read = 0;
                while read < MAX_RESPONSE_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                if status.is_success() {
                    Attempt::Delivered
                } else if status_blames_receiver(status) {
                    Failure::receiver(format!("HTTP {status}"))
                } else {
                    Failure::event(format!("HTTP {status}"))
                }
            }
            Err(err) if err.is_timeout() => Failure::receiver(format!("no answer within {:?}", self.timeout)),
            Err(err) => Failure::receiver(presence_common::error::chain(&err)),
        };
        metrics::histogram!(metric_names::LATENCY, "app" => app_label.to_owned())
            .record(started.elapsed().as_secs_f64());
        outcome
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn a_receiver_that_is_down_or_overloaded_is_told_from_a_refused_event() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(status_blames_receiver(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 413, 422, 301] {
            assert!(!status_blames_receiver(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}
