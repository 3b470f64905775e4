//! `presence-cli connect`: one device that logs in, heartbeats, prints every frame it gets, and
//! logs out when told to stop.

use std::{future::Future, time::Duration};

use clap::Args;
use presence_proto::v1::{
    ClientFrame, Heartbeat, Kicked, LoginOk, Logout, Platform, ServerFrame, client_frame, server_frame,
};

use super::{DEV_TOKEN_SECRET, clock, parse_platform, platform_name};
use crate::{Client, ClientError, LoginParams};

/// How long to wait for `LogoutOk` after Ctrl-C.
const LOGOUT_GRACE: Duration = Duration::from_secs(3);
/// Heartbeat interval when neither `--heartbeat-s` nor the gateway names one.
const DEFAULT_HEARTBEAT_S: u64 = 120;

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The user to log in as.
    #[arg(long)]
    pub user: String,
    /// ios, android, windows, mac, linux, web, ipad, android_pad or mini_program.
    #[arg(long, value_parser = parse_platform)]
    pub platform: Platform,
    /// Device id. Default `cli-<hostname>-<platform>`: stable, so a restarted CLI is the same
    /// device re-logging in rather than one more device.
    #[arg(long)]
    pub device: Option<String>,
    /// The gateway's device address.
    #[arg(long, env = "PRESENCE_GATEWAY", default_value = "127.0.0.1:7100")]
    pub gateway: String,
    /// The app to log in to.
    #[arg(long, default_value = presence_proto::DEFAULT_APP_ID)]
    pub app: String,
    /// A ready token; without it one is minted with `--secret`.
    #[arg(long, conflicts_with = "secret")]
    pub token: Option<String>,
    /// The app's token secret, to mint a token.
    #[arg(long, env = "PRESENCE_TOKEN_SECRET", default_value = DEV_TOKEN_SECRET, hide_env_values = true)]
    pub secret: String,
    /// Register for offline push: the device stays `push_online` after a disconnect.
    #[arg(long)]
    pub push: bool,
    /// Client version reported at login.
    #[arg(long, default_value = concat!("presence-cli/", env!("CARGO_PKG_VERSION")))]
    pub client_version: String,
    /// Heartbeat interval in seconds. Default: what the gateway says in `LoginOk`.
    #[arg(long = "heartbeat-s", value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_s: Option<u64>,
}

/// How a `connect` session ended, when it did not fail.
#[derive(Debug)]
pub enum Ended {
    /// Stopped (Ctrl-C) and logged out.
    LoggedOut,
    /// Forced offline by the registry.
    Kicked(Kicked),
    /// The gateway closed the connection without saying why.
    Closed,
}

impl ConnectArgs {
    pub fn device_id(&self) -> String {
        self.device
            .clone()
            .unwrap_or_else(|| format!("cli-{}-{}", hostname(), self.platform.name().unwrap_or("device")))
    }

    pub(crate) fn login_params(&self) -> Result<LoginParams, jsonwebtoken::errors::Error> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => super::token::token(&super::token::TokenArgs {
                user: self.user.clone(),
                app: self.app.clone(),
                secret: self.secret.clone(),
                ttl_s: 86_400,
            })?,
        };
        Ok(LoginParams {
            app_id: self.app.clone(),
            client_version: self.client_version.clone(),
            push_enabled: self.push,
            ..LoginParams::new(&self.user, &self.device_id(), self.platform, token)
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Logs in, then heartbeats and prints (through `print`) every frame until `stop` completes
/// (then logs out), the device is kicked, or the connection ends. A refused login is
/// [`ClientError::Login`].
pub async fn run(
    args: &ConnectArgs,
    stop: impl Future<Output = ()>,
    mut print: impl FnMut(String),
) -> Result<Ended, ClientError> {
    let params = args.login_params()?;
    print(format!(
        "{} connecting to {} as {}/{} ({} device {})",
        clock(),
        args.gateway,
        params.app_id,
        params.user_id,
        platform_name(params.platform as i32),
        params.device_id
    ));
    let mut client = Client::connect(args.gateway.as_str()).await?;
    let ok = client.login(params).await?;
    print(format!("{} {}", clock(), describe_login_ok(&ok)));
    let every = args.heartbeat_s.unwrap_or(match ok.heartbeat_interval_s {
        0 => DEFAULT_HEARTBEAT_S,
        s => u64::from(s),
    });
    let every = Duration::from_secs(every);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return logout(&mut client, &mut print).await,
            _ = tick.tick() => client.send(heartbeat()).await?,
            frame = client.next_frame() => {
                let Some(frame) = frame? else { return Ok(Ended::Closed) };
                print(format!("{} {}", clock(), describe(&frame)));
                match frame.kind {
                    Some(server_frame::Kind::Kicked(kicked)) => return Ok(Ended::Kicked(kicked)),
                    Some(server_frame::Kind::Error(e)) => {
                        return Err(ClientError::Server { code: e.code, message: e.message });
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Sends `Logout` and prints frames until the gateway closes (bounded by [`LOGOUT_GRACE`]).
async fn logout(client: &mut Client, print: &mut impl FnMut(String)) -> Result<Ended, ClientError> {
    print(format!("{} logging out", clock()));
    client.send(ClientFrame { kind: Some(client_frame::Kind::Logout(Logout {})) }).await?;
    let drained = tokio::time::timeout(LOGOUT_GRACE, async {
        while let Some(frame) = client.next_frame().await? {
            print(format!("{} {}", clock(), describe(&frame)));
            if let Some(server_frame::Kind::LogoutOk(_)) = frame.kind {
                break;
            }
        }
        Ok::<_, ClientError>(())
    })
    .await;
    match drained {
        Ok(result) => result.map(|()| Ended::LoggedOut),
        Err(_) => {
            print(format!("{} no LogoutOk in {LOGOUT_GRACE:?}; closing anyway", clock()));
            Ok(Ended::LoggedOut)
        }
    }
}

fn heartbeat() -> ClientFrame {
    let client_time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms })) }
}

pub fn describe_login_ok(ok: &LoginOk) -> String {
    let kicked = if ok.kicked_devices.is_empty() {
        "none".to_owned()
    } else {
        ok.kicked_devices
            .iter()
            .map(|k| format!("{}:{}", platform_name(k.platform), k.device_id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "login ok: session {}, heartbeat every {} s (timeout {} s), devices forced offline: {kicked}",
        ok.session_id, ok.heartbeat_interval_s, ok.heartbeat_timeout_s
    )
}

/// One readable line for a frame from the gateway.
pub fn describe(frame: &ServerFrame) -> String {
    match &frame.kind {
        Some(server_frame::Kind::LoginOk(ok)) => describe_login_ok(ok),
        Some(server_frame::Kind::LoginError(e)) => format!("login refused: {}: {}", e.code, e.message),
        Some(server_frame::Kind::HeartbeatAck(ack)) => {
            format!("heartbeat ack (server time {} ms)", ack.server_time_ms)
        }
        Some(server_frame::Kind::Kicked(k)) => describe_kicked(k),
        Some(server_frame::Kind::LogoutOk(_)) => "logout ok".to_owned(),
        Some(server_frame::Kind::Error(e)) => format!("server error: {}: {}", e.code, e.message),
        Some(server_frame::Kind::SetStatusOk(ok)) => format!("custom status set (request {})", ok.request_id),
        Some(server_frame::Kind::SubscribeOk(ok)) => {
            let statuses: Vec<String> = ok.statuses.iter().map(describe_status).collect();
            format!("subscribed (request {}): {}", ok.request_id, statuses.join(", "))
        }
        Some(server_frame::Kind::UnsubscribeOk(ok)) => format!("unsubscribed (request {})", ok.request_id),
        Some(server_frame::Kind::StatusChanged(changed)) => {
            format!("status changed: {}", changed.status.as_ref().map(describe_status).unwrap_or_default())
        }
        Some(server_frame::Kind::RequestError(e)) => {
            format!("request {} refused: {}: {}", e.request_id, e.code, e.message)
        }
        None => "empty frame".to_owned(),
    }
}

/// `alice online [ios, web] "in a meeting" (v7)`.
pub fn describe_status(s: &presence_proto::v1::UserStatus) -> String {
    let platforms: Vec<&str> = s.platforms.iter().map(|p| platform_name(*p)).collect();
    let custom = if s.custom_status.is_empty() { String::new() } else { format!(" {:?}", s.custom_status) };
    format!("{} {} [{}]{custom} (v{})", s.user_id, s.status, platforms.join(", "), s.user_version)
}

/// `kicked: <reason>`, and by which device when a login replaced this one.
pub fn describe_kicked(k: &Kicked) -> String {
    if k.by_device_id.is_empty() {
        format!("kicked: {}", k.reason)
    } else {
        format!("kicked: {} (by {} device {})", k.reason, platform_name(k.by_platform), k.by_device_id)
    }
}
