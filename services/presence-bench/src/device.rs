//! A presence device's connection to the gateway, over TCP (a 4-byte length before each frame)
//! or WebSocket (one binary message per frame, docs/protocol.md "Transport and framing"), and
//! the frames the benchmarks send.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use presence_proto::{
    MAX_FRAME_LEN,
    v1::{ClientFrame, Heartbeat, Login, LoginOk, Platform, ServerFrame, client_frame, server_frame},
};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How a device reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Length-prefixed frames on a TCP connection (the gateway's port 7100).
    Tcp,
    /// One frame per binary WebSocket message (the gateway's port 7101, `/v1/connect`).
    Ws,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        })
    }
}

/// The path the gateway upgrades WebSocket connections at.
pub const WS_PATH: &str = "/v1/connect";

/// A WebSocket client connection (tokio-tungstenite) on a plain TCP stream.
pub type WsStream = WebSocketStream<TcpStream>;

/// The load generator's WebSocket settings: tungstenite's default read buffer (128 KiB,
/// allocated up front) would cost the load generator gigabytes at tens of thousands of
/// connections; frames are at most 64 KiB; each message is written at once.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Upgrades a connected socket to a WebSocket at `ws://target/v1/connect`.
pub async fn ws_upgrade(stream: TcpStream, target: SocketAddr) -> Result<WsStream, String> {
    let url = format!("ws://{target}{WS_PATH}");
    tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map(|(ws, _response)| ws)
        .map_err(|e| format!("ws upgrade: {e}"))
}

/// A `Login` of an iOS device without push.
pub fn login_frame(app_id: &str, user_id: &str, device_id: &str, token: &str) -> ClientFrame {
    ClientFrame {
        kind: Some(client_frame::Kind::Login(Login {
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            platform: Platform::Ios as i32,
            device_id: device_id.to_owned(),
            token: token.to_owned(),
            client_version: "loadgen".into(),
            push_enabled: false,
        })),
    }
}

/// A `Heartbeat` body (without a length prefix).
pub fn heartbeat_body() -> Vec<u8> {
    let frame = ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: 0 })) };
    frame.encode_to_vec()
}

/// What the first answer to a `Login` says: `LoginOk`, or an error naming the `LoginError` code.
pub fn login_answer(body: &[u8]) -> Result<LoginOk, String> {
    match ServerFrame::decode(body).map_err(|e| format!("decode: {e}"))?.kind {
        Some(server_frame::Kind::LoginOk(ok)) => Ok(ok),
        Some(server_frame::Kind::LoginError(e)) => Err(format!("login_error: {}", e.code)),
        other => Err(format!("unexpected first frame: {}", frame_name(other.as_ref()))),
    }
}

/// A frame kind's name, for error counts (never the frame's content).
pub fn frame_name(kind: Option<&server_frame::Kind>) -> &'static str {
    use server_frame::Kind as K;
    match kind {
        None => "empty",
        Some(K::LoginOk(_)) => "login_ok",
        Some(K::LoginError(_)) => "login_error",
        Some(K::HeartbeatAck(_)) => "heartbeat_ack",
        Some(K::Kicked(_)) => "kicked",
        Some(K::LogoutOk(_)) => "logout_ok",
        Some(K::Error(_)) => "error",
        Some(K::SetStatusOk(_)) => "set_status_ok",
        Some(K::SubscribeOk(_)) => "subscribe_ok",
        Some(K::UnsubscribeOk(_)) => "unsubscribe_ok",
        Some(K::StatusChanged(_)) => "status_changed",
        Some(K::RequestError(_)) => "request_error",
    }
}

/// Reads the next binary message of a WebSocket: `None` once the peer closed it (a Close
/// frame, the end of the stream or an error). Pings are answered by tungstenite on the next
/// read or write. Cancel-safe.
pub async fn ws_next_binary(ws: &mut WsStream) -> Option<Bytes> {
    loop {
        match ws.next().await? {
            Ok(Message::Binary(body)) => return Some(body),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A logged-in device's connection that reads and writes whole frames over either transport.
/// Reading is cancel-safe (it can sit in a `select!` beside a timer).
pub enum FrameConn {
    Tcp(Framed<TcpStream, LengthDelimitedCodec>),
    Ws(Box<WsStream>),
}

impl FrameConn {
    /// Connects `stream` (already connected to `target`) over `transport`.
    pub async fn open(stream: TcpStream, target: SocketAddr, transport: Transport) -> Result<Self, String> {
        Ok(match transport {
            Transport::Tcp => {
                let codec = LengthDelimitedCodec::builder()
                    .length_field_length(4)
                    .big_endian()
                    .max_frame_length(MAX_FRAME_LEN)
                    .new_codec();
                FrameConn::Tcp(Framed::new(stream, codec))
            }
            Transport::Ws => FrameConn::Ws(Box::new(ws_upgrade(stream, target).await?)),
        })
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), String> {
        let body = Bytes::from(frame.encode_to_vec());
        match self {
            FrameConn::Tcp(framed) => framed.send(body).await.map_err(|e| format!("send: {}", e.kind())),
            FrameConn::Ws(ws) => ws.send(Message::Binary(body)).await.map_err(|e| format!("send: {e}")),
        }
    }

    /// The next frame's body; `None` once the gateway closed the connection.
    pub async fn recv_body(&mut self) -> Option<Bytes> {
        match self {
            FrameConn::Tcp(framed) => framed.next().await?.ok().map(bytes::BytesMut::freeze),
            FrameConn::Ws(ws) => ws_next_binary(ws).await,
        }
    }

    /// The next frame; `Ok(None)` once the gateway closed the connection.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, String> {
        match self.recv_body().await {
            Some(body) => ServerFrame::decode(body).map(Some).map_err(|e| format!("decode: {e}")),
            None => Ok(None),
        }
    }

    /// Sends `Login` and waits (at most `within`) for `LoginOk`.
    pub async fn login(&mut self, login: &ClientFrame, within: Duration) -> Result<LoginOk, String> {
        self.send(login).await?;
        match tokio::time::timeout(within, self.recv_body()).await {
            Ok(Some(body)) => login_answer(&body),
            Ok(None) => Err("closed before LoginOk".into()),
            Err(_) => Err("no LoginOk in time".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_answers_name_the_error_code() {
        let ok = ServerFrame { kind: Some(server_frame::Kind::LoginOk(LoginOk::default())) };
        assert!(login_answer(&ok.encode_to_vec()).is_ok());
        let refused = ServerFrame {
            kind: Some(server_frame::Kind::LoginError(presence_proto::v1::LoginError {
                code: "invalid_token".into(),
                message: String::new(),
            })),
        };
        assert_eq!(login_answer(&refused.encode_to_vec()).unwrap_err(), "login_error: invalid_token");
        assert!(login_answer(&[0xff, 0xff]).is_err());
    }

    #[tokio::test]
    async fn a_websocket_frame_conn_talks_one_frame_per_binary_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let login = ws_next_binary(&mut ws).await.unwrap();
            assert!(matches!(
                ClientFrame::decode(login).unwrap().kind,
                Some(client_frame::Kind::Login(l)) if l.user_id == "u1"
            ));
            let ok = ServerFrame { kind: Some(server_frame::Kind::LoginOk(LoginOk::default())) };
            ws.send(Message::Binary(ok.encode_to_vec().into())).await.unwrap();
            ws.close(None).await.unwrap();
        });
        let stream = TcpStream::connect(target).await.unwrap();
        let mut conn = FrameConn::open(stream, target, Transport::Ws).await.unwrap();
        conn.login(&login_frame("app", "u1", "d1", "t"), Duration::from_secs(5)).await.unwrap();
        assert!(conn.recv().await.unwrap().is_none(), "the close ends the stream");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_tcp_frame_conn_reads_length_prefixed_frames() {
        let (listener, target) = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (l, a)
        };
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let login = crate::wire::read_frame(&mut stream, MAX_FRAME_LEN).await.unwrap();
            assert!(ClientFrame::decode(login.as_slice()).is_ok());
            let ok = ServerFrame { kind: Some(server_frame::Kind::LoginOk(LoginOk::default())) };
            crate::wire::write_frame(&mut stream, &ok.encode_to_vec()).await.unwrap();
        });
        let stream = TcpStream::connect(target).await.unwrap();
        let mut conn = FrameConn::open(stream, target, Transport::Tcp).await.unwrap();
        conn.login(&login_frame("app", "u1", "d1", "t"), Duration::from_secs(5)).await.unwrap();
        server.await.unwrap();
        assert!(conn.recv().await.unwrap().is_none());
    }
}
