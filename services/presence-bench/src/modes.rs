//! What "connect a device" means for each target: the presence gateway, the raw TCP ceiling,
//! or an MQTT broker.

use std::time::Duration;

use presence_bench::wire::{MQTT_PINGREQ, mqtt_handshake, read_frame, write_frame};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use crate::Args;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Presence,
    Raw,
    Mqtt,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Presence => "presence",
            Mode::Raw => "raw",
            Mode::Mqtt => "mqtt",
        })
    }
}

/// One simulated device: device `index` of user `index`; waves differ by device id.
pub struct Device {
    pub index: usize,
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    pub app_id: String,
    pub mqtt_keepalive_s: u16,
}

impl Device {
    pub fn new(args: &Args, index: usize, wave: &str) -> Self {
        let user_id = format!("{}{index}", args.user_prefix);
        let token = match args.mode {
            Mode::Presence => presence_client::mint_token(
                &args.secret,
                &user_id,
                Some(&args.app),
                Duration::from_secs(3600),
            )
            .unwrap_or_default(),
            Mode::Raw | Mode::Mqtt => String::new(),
        };
        Self {
            index,
            device_id: format!("{user_id}-{wave}"),
            user_id,
            token,
            app_id: args.app.clone(),
            mqtt_keepalive_s: args.mqtt_keepalive_s,
        }
    }

    /// Whether this device is one of the `share` that stop heartbeating (spread evenly).
    pub fn silent(&self, share: f64) -> bool {
        share > 0.0 && ((self.index as f64 * share).floor() != ((self.index + 1) as f64 * share).floor())
    }
}

impl Mode {
    /// Brings a connected socket to "logged in".
    pub async fn handshake(self, stream: &mut TcpStream, device: &Device) -> Result<(), String> {
        match self {
            Mode::Raw => {
                write_frame(stream, device.device_id.as_bytes()).await.map_err(|e| e.to_string())?;
                read_frame(stream, 1024).await.map(drop).map_err(|e| e.to_string())
            }
            // The client id is the user's: a second CONNECT with it takes the session over (the kick).
            Mode::Mqtt => mqtt_handshake(stream, &device.user_id, device.mqtt_keepalive_s)
                .await
                .map_err(|e| e.to_string()),
            Mode::Presence => presence_login(stream, device).await,
        }
    }

    /// Holds the connection until `stop`, heartbeating every `interval` (`on_sent` after each
    /// heartbeat written). True if the peer closed it.
    pub async fn hold(
        self,
        mut stream: TcpStream,
        interval: Option<Duration>,
        stop: CancellationToken,
        on_sent: impl Fn(),
    ) -> bool {
        let mut buf = [0u8; 512];
        let mut tick = interval.map(tokio::time::interval);
        if let Some(t) = tick.as_mut() {
            t.reset();
        }
        loop {
            let beat = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return false,
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                },
                () = beat => {
                    let sent = match self {
                        Mode::Mqtt => stream.write_all(&MQTT_PINGREQ).await.is_ok(),
                        Mode::Presence => stream.write_all(&presence_heartbeat()).await.is_ok(),
                        Mode::Raw => true,
                    };
                    if !sent {
                        return true;
                    }
                    on_sent();
                }
            }
        }
    }
}

/// A `Login` frame, then `LoginOk` (or the `LoginError` code).
async fn presence_login(stream: &mut TcpStream, device: &Device) -> Result<(), String> {
    use presence_proto::v1::{ClientFrame, Login, Platform, ServerFrame, client_frame, server_frame};
    use prost::Message;
    let login = ClientFrame {
        kind: Some(client_frame::Kind::Login(Login {
            app_id: device.app_id.clone(),
            user_id: device.user_id.clone(),
            platform: Platform::Ios as i32,
            device_id: device.device_id.clone(),
            token: device.token.clone(),
            client_version: "loadgen".into(),
            push_enabled: false,
        })),
    };
    write_frame(stream, &login.encode_to_vec()).await.map_err(|e| e.to_string())?;
    let body = read_frame(stream, presence_proto::MAX_FRAME_LEN).await.map_err(|e| e.to_string())?;
    match ServerFrame::decode(body.as_slice()).map_err(|e| e.to_string())?.kind {
        Some(server_frame::Kind::LoginOk(_)) => Ok(()),
        Some(server_frame::Kind::LoginError(e)) => Err(format!("login_error: {}", e.code)),
        other => Err(format!("unexpected first frame: {other:?}")),
    }
}

fn presence_heartbeat() -> Vec<u8> {
    use presence_proto::v1::{ClientFrame, Heartbeat, client_frame};
    use prost::Message;
    let frame = ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: 0 })) };
    let body = frame.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}
