//! What "connect a device" means for each target: the presence gateway, the raw TCP ceiling,
//! or an MQTT broker.

use std::time::Duration;

use futures::SinkExt;
use presence_bench::{
    device::{WsStream, heartbeat_body, login_answer, login_frame, ws_next_binary},
    wire::{MQTT_PINGREQ, mqtt_handshake, read_frame, write_frame},
};
use prost::Message as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::Message;
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

/// A device's connection: a plain TCP socket, or a WebSocket on one (`--transport ws`, presence
/// mode only).
pub enum Conn {
    Tcp(TcpStream),
    Ws(Box<WsStream>),
}

impl Mode {
    /// Brings a connected socket to "logged in".
    pub async fn handshake(self, conn: &mut Conn, device: &Device) -> Result<(), String> {
        let stream = match conn {
            Conn::Tcp(stream) => stream,
            Conn::Ws(ws) => {
                return match self {
                    Mode::Presence => presence_login_ws(ws, device).await,
                    Mode::Raw | Mode::Mqtt => Err("only presence speaks WebSocket".into()),
                };
            }
        };
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
        conn: Conn,
        interval: Option<Duration>,
        stop: CancellationToken,
        on_sent: impl Fn(),
    ) -> bool {
        let mut stream = match conn {
            Conn::Tcp(stream) => stream,
            Conn::Ws(ws) => return hold_ws(*ws, interval, stop, on_sent).await,
        };
        let mut buf = [0u8; 512];
        let mut tick = beat_timer(interval);
        loop {
            let beat = next_beat(&mut tick);
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
    let login = login_frame(&device.app_id, &device.user_id, &device.device_id, &device.token);
    write_frame(stream, &login.encode_to_vec()).await.map_err(|e| e.to_string())?;
    let body = read_frame(stream, presence_proto::MAX_FRAME_LEN).await.map_err(|e| e.to_string())?;
    login_answer(&body).map(drop)
}

/// The same over a WebSocket: one binary message each way.
async fn presence_login_ws(ws: &mut WsStream, device: &Device) -> Result<(), String> {
    let login = login_frame(&device.app_id, &device.user_id, &device.device_id, &device.token);
    ws.send(Message::Binary(login.encode_to_vec().into())).await.map_err(|e| format!("send: {e}"))?;
    let body = ws_next_binary(ws).await.ok_or("closed before LoginOk")?;
    login_answer(&body).map(drop)
}

/// [`Mode::hold`] over a WebSocket: heartbeats are binary messages; a Close frame, the end of
/// the stream or an error is the peer closing it.
async fn hold_ws(
    mut ws: WsStream,
    interval: Option<Duration>,
    stop: CancellationToken,
    on_sent: impl Fn(),
) -> bool {
    let mut tick = beat_timer(interval);
    loop {
        let beat = next_beat(&mut tick);
        tokio::select! {
            () = stop.cancelled() => return false,
            message = ws_next_binary(&mut ws) => if message.is_none() {
                return true;
            },
            () = beat => {
                if ws.send(Message::Binary(heartbeat_body().into())).await.is_err() {
                    return true;
                }
                on_sent();
            }
        }
    }
}

fn presence_heartbeat() -> Vec<u8> {
    let body = heartbeat_body();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A heartbeat timer whose first beat is one interval from now; `None` without heartbeats.
fn beat_timer(interval: Option<std::time::Duration>) -> Option<tokio::time::Interval> {
    let mut tick = interval.map(tokio::time::interval);
    if let Some(t) = tick.as_mut() {
        t.reset();
    }
    tick
}

/// The next heartbeat; never, without heartbeats.
async fn next_beat(tick: &mut Option<tokio::time::Interval>) {
    match tick.as_mut() {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
