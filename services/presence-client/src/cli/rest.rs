//! `presence-cli query` and `kick`: the REST facade as an app backend calls it (http-api.md).

use clap::Args;
use presence_proto::{json::KickedDeviceJson, v1::Platform};
use serde::Deserialize;

use super::{DEV_API_KEY, parse_platform};

/// Where the facade is and the app's key.
#[derive(Debug, Clone, Args)]
pub struct RestArgs {
    /// The REST facade's base URL.
    #[arg(long, env = "PRESENCE_FACADE", default_value = "http://127.0.0.1:8080")]
    pub facade: String,
    /// The app's REST API key.
    #[arg(long, env = "PRESENCE_API_KEY", default_value = DEV_API_KEY, hide_env_values = true)]
    pub api_key: String,
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// User ids (1 to 500).
    #[arg(required = true, num_args = 1..)]
    pub users: Vec<String>,
    /// List each user's devices too.
    #[arg(long)]
    pub detail: bool,
    #[command(flatten)]
    pub rest: RestArgs,
}

#[derive(Debug, Clone, Args)]
pub struct KickArgs {
    /// The user whose devices go offline.
    pub user: String,
    /// Only devices of this platform (repeatable). Default: every device.
    #[arg(long = "platform", value_parser = parse_platform)]
    pub platforms: Vec<Platform>,
    #[command(flatten)]
    pub rest: RestArgs,
}

/// What a REST call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("bad facade URL `{0}`")]
    BadUrl(String),
    #[error("request to the facade failed: {0}")]
    Http(#[from] reqwest::Error),
    /// A non-2xx answer, with the contract's `{"error": {...}}` when the body has one.
    #[error("HTTP {status}: {code}: {message}")]
    Api { status: u16, code: String, message: String },
}

/// `POST /v1/presence/query`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct QueryResponse {
    pub results: Vec<UserPresence>,
    #[serde(default)]
    pub as_of_seq: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserPresence {
    pub user_id: String,
    pub status: String,
    #[serde(default)]
    pub devices: Option<Vec<DevicePresence>>,
    #[serde(default)]
    pub last_seen_ms: Option<u64>,
    #[serde(default)]
    pub last_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DevicePresence {
    pub device_id: String,
    pub platform: String,
    pub status: String,
    #[serde(default)]
    pub since_ms: Option<u64>,
    #[serde(default)]
    pub client_version: String,
}

/// `POST /v1/users/{id}/kick`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct KickResponse {
    pub kicked_devices: Vec<KickedDeviceJson>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A facade client for one app.
#[derive(Debug, Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: reqwest::Url,
    api_key: String,
}

impl RestClient {
    pub fn new(args: &RestArgs) -> Result<Self, RestError> {
        super::install_crypto_provider();
        let base = reqwest::Url::parse(&args.facade).map_err(|_| RestError::BadUrl(args.facade.clone()))?;
        if base.cannot_be_a_base() {
            return Err(RestError::BadUrl(args.facade.clone()));
        }
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
        Ok(Self { http, base, api_key: args.api_key.clone() })
    }

    /// The base URL with these path segments appended (each percent-encoded).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: reqwest::Url,
        body: &serde_json::Value,
    ) -> Result<T, RestError> {
        let response = self.http.post(url).bearer_auth(&self.api_key).json(body).send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => (status.canonical_reason().unwrap_or("error").to_owned(), text),
        };
        Err(RestError::Api { status: status.as_u16(), code, message })
    }

    pub async fn query(&self, users: &[String], detail: bool) -> Result<QueryResponse, RestError> {
        let body = serde_json::json!({ "user_ids": users, "detail": detail });
        self.post(self.url(&["v1", "presence", "query"]), &body).await
    }

    /// Kicks `user`'s devices of `platforms` (every device when empty).
    pub async fn kick(&self, user: &str, platforms: &[Platform]) -> Result<KickResponse, RestError> {
        let body = if platforms.is_empty() {
            serde_json::json!({})
        } else {
            let names: Vec<&str> = platforms.iter().filter_map(|p| p.name()).collect();
            serde_json::json!({ "platforms": names })
        };
        self.post(self.url(&["v1", "users", user, "kick"]), &body).await
    }
}

/// The query answer as a small aligned table.
pub fn query_table(response: &QueryResponse, now_ms: u64) -> String {
    let detail = response.results.iter().any(|r| r.devices.is_some());
    let mut rows = vec![vec!["USER".to_owned(), "STATUS".to_owned(), "LAST SEEN".to_owned()]];
    if detail {
        rows[0].push("DEVICES".to_owned());
    }
    for user in &response.results {
        let last_seen = match (user.last_seen_ms, &user.last_reason) {
            (Some(ms), Some(reason)) => format!("{} ago ({reason})", ago(now_ms, ms)),
            (Some(ms), None) => format!("{} ago", ago(now_ms, ms)),
            (None, Some(reason)) => reason.clone(),
            (None, None) => "-".to_owned(),
        };
        let mut row = vec![user.user_id.clone(), user.status.clone(), last_seen];
        if detail {
            let devices = user.devices.as_deref().unwrap_or_default();
            row.push(if devices.is_empty() {
                "-".to_owned()
            } else {
                devices.iter().map(describe_device).collect::<Vec<_>>().join(", ")
            });
        }
        rows.push(row);
    }
    let mut out = render(&rows);
    if let Some(seq) = response.as_of_seq {
        out.push_str(&format!("(as of event seq {seq})\n"));
    }
    out
}

fn describe_device(d: &DevicePresence) -> String {
    if d.client_version.is_empty() {
        format!("{}:{} {}", d.platform, d.device_id, d.status)
    } else {
        format!("{}:{} {} ({})", d.platform, d.device_id, d.status, d.client_version)
    }
}

/// The kick answer, one line.
pub fn kick_summary(user: &str, response: &KickResponse) -> String {
    if response.kicked_devices.is_empty() {
        return format!("{user}: no device was online");
    }
    let devices: Vec<String> =
        response.kicked_devices.iter().map(|k| format!("{}:{}", k.platform, k.device_id)).collect();
    format!("{user}: forced offline {}", devices.join(", "))
}

/// `42s`, `5m`, `3h`, `2d`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c + 1 == row.len() { cell.clone() } else { format!("{cell:<w$}", w = widths[c]) }
                },
            )
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_renders_as_an_aligned_table() {
        let response: QueryResponse = serde_json::from_value(serde_json::json!({
            "results": [
                {"user_id": "alice", "status": "online", "devices": [
                    {"device_id": "d1", "platform": "ios", "status": "online", "since_ms": 1, "client_version": "1.0"}
                ]},
                {"user_id": "bob", "status": "offline", "devices": [], "last_seen_ms": 1_000, "last_reason": "timeout"}
            ],
            "as_of_seq": 7
        }))
        .unwrap();
        let table = query_table(&response, 121_000);
        assert_eq!(
            table,
            "USER   STATUS   LAST SEEN         DEVICES\n\
             alice  online   -                 ios:d1 online (1.0)\n\
             bob    offline  2m ago (timeout)  -\n\
             (as of event seq 7)\n"
        );
    }

    #[test]
    fn urls_encode_user_ids() {
        let client =
            RestClient::new(&RestArgs { facade: "http://h:1/".into(), api_key: "k".into() }).unwrap();
        assert_eq!(
            client.url(&["v1", "users", "a/b c", "kick"]).as_str(),
            "http://h:1/v1/users/a%2Fb%20c/kick"
        );
    }
}
