//! A small async client of the presence client protocol (`docs/protocol.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), presence_client::ClientError> {
//! use presence_client::{Client, LoginParams, mint_token};
//! use presence_proto::v1::Platform;
//! let mut client = Client::connect("127.0.0.1:7100").await?;
//! let token = mint_token("secret", "alice", None, std::time::Duration::from_secs(3600))?;
//! let ok = client.login(LoginParams::new("alice", "phone-1", Platform::Ios, token)).await?;
//! client.heartbeat().await?;
//! client.logout().await?;
//! # let _ = ok; Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod session;
mod token;

/// How callbacks are signed and verified (`X-Presence-Signature`), for receivers and tests: the
/// one implementation the notifier signs with.
pub use presence_proto::callback_signature;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use presence_proto::{
    codes::{ErrorFrameCode, LoginErrorCode},
    framing::{ClientCodec, FrameError},
    v1::{
        ClientFrame, Heartbeat, HeartbeatAck, Kicked, Login, LoginOk, Logout, Platform, ServerFrame,
        client_frame, server_frame,
    },
};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

pub use token::{Claims, mint_token, mint_token_with};

/// What can go wrong talking to a gateway.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The gateway refused the login; `code` is one of the protocol's codes ("bad_token", ...).
    #[error("login refused: {code}: {message}")]
    Login { code: String, message: String },
    /// The gateway sent `Error` (a protocol error on our side); the connection is closing.
    #[error("server error: {code}: {message}")]
    Server { code: String, message: String },
    /// This device was forced offline.
    #[error("kicked: {0:?}")]
    Kicked(Kicked),
    #[error("the gateway closed the connection")]
    Closed,
    #[error("unexpected frame: {0:?}")]
    Unexpected(Box<ServerFrame>),
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}

impl ClientError {
    /// The typed `LoginError` code; `None` for other errors and for codes newer than this build.
    pub fn login_code(&self) -> Option<LoginErrorCode> {
        match self {
            Self::Login { code, .. } => LoginErrorCode::from_name(code),
            _ => None,
        }
    }

    /// Whether the same connection attempt may succeed later, after a backoff (docs/protocol.md,
    /// "Reconnecting"): a refused token, a bad request, a kick or a protocol error will not.
    pub fn retry_later(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Closed => true,
            Self::Frame(err) => matches!(err, FrameError::Io(_)),
            Self::Login { code, .. } => LoginErrorCode::retry_later(code),
            // A malformed stream is our bug; being slow, late or one too many is not.
            Self::Server { code, .. } => !matches!(
                ErrorFrameCode::from_name(code),
                Some(
                    ErrorFrameCode::ZeroLength
                        | ErrorFrameCode::TooLong
                        | ErrorFrameCode::Malformed
                        | ErrorFrameCode::EmptyFrame
                        | ErrorFrameCode::DuplicateLogin
                        | ErrorFrameCode::LoginRequired
                )
            ),
            Self::Kicked(_) | Self::Unexpected(_) | Self::Token(_) => false,
        }
    }
}

/// A `Login` frame's fields.
#[derive(Debug, Clone, Default)]
pub struct LoginParams {
    pub app_id: String,
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
    pub token: String,
    pub client_version: String,
    pub push_enabled: bool,
}

impl LoginParams {
    /// A login to the default app.
    pub fn new(user_id: &str, device_id: &str, platform: Platform, token: String) -> Self {
        Self {
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            platform,
            token,
            ..Self::default()
        }
    }

    pub fn into_frame(self) -> ClientFrame {
        ClientFrame {
            kind: Some(client_frame::Kind::Login(Login {
                app_id: self.app_id,
                user_id: self.user_id,
                platform: self.platform as i32,
                device_id: self.device_id,
                token: self.token,
                client_version: self.client_version,
                push_enabled: self.push_enabled,
            })),
        }
    }
}

/// One connection to a gateway. Request methods read frames until their answer arrives; any
/// `Kicked` or `Error` in between surfaces as that error.
pub struct Client {
    framed: Framed<TcpStream, ClientCodec>,
}

impl Client {
    /// Opens a plain TCP connection.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await.map_err(ClientError::Connect)?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps a connection opened some other way (e.g. bound to a chosen source address).
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self { framed: Framed::with_capacity(stream, ClientCodec::new(), 256) }
    }

    /// Sends any frame without waiting for an answer.
    pub async fn send(&mut self, frame: ClientFrame) -> Result<(), ClientError> {
        Ok(self.framed.send(frame).await?)
    }

    /// The next frame from the gateway; `None` once it closed the connection.
    pub async fn next_frame(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        match self.framed.next().await {
            Some(Ok(frame)) => Ok(Some(frame)),
            Some(Err(FrameError::Io(err))) if is_reset(&err) => Ok(None),
            Some(Err(err)) => Err(err.into()),
            None => Ok(None),
        }
    }

    /// Logs in; a `LoginError` becomes [`ClientError::Login`].
    pub async fn login(&mut self, params: LoginParams) -> Result<LoginOk, ClientError> {
        self.send(params.into_frame()).await?;
        match self.answer().await? {
            server_frame::Kind::LoginOk(ok) => Ok(ok),
            server_frame::Kind::LoginError(e) => Err(ClientError::Login { code: e.code, message: e.message }),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a heartbeat and waits for its ack.
    pub async fn heartbeat(&mut self) -> Result<HeartbeatAck, ClientError> {
        let client_time_ms = presence_now_ms();
        self.send(ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms })) })
            .await?;
        match self.answer().await? {
            server_frame::Kind::HeartbeatAck(ack) => Ok(ack),
            other => Err(unexpected(other)),
        }
    }

    /// Logs out and waits for `LogoutOk`; the gateway closes the connection after it.
    pub async fn logout(&mut self) -> Result<(), ClientError> {
        self.send(ClientFrame { kind: Some(client_frame::Kind::Logout(Logout {})) }).await?;
        match self.answer().await? {
            server_frame::Kind::LogoutOk(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a heartbeat every `every` and yields every server frame until the connection ends;
    /// the last item is the error or `Closed` that ended it.
    pub fn into_events(
        self,
        every: Duration,
    ) -> tokio::sync::mpsc::Receiver<Result<ServerFrame, ClientError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut framed = self.framed;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                let item = tokio::select! {
                    _ = tick.tick() => {
                        let hb = ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: presence_now_ms() })) };
                        match framed.send(hb).await {
                            Ok(()) => continue,
                            Err(err) => Err(err.into()),
                        }
                    }
                    frame = framed.next() => match frame {
                        Some(Ok(frame)) => Ok(frame),
                        Some(Err(FrameError::Io(err))) if is_reset(&err) => Err(ClientError::Closed),
                        Some(Err(err)) => Err(err.into()),
                        None => Err(ClientError::Closed),
                    },
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        rx
    }

    /// The next frame that answers a request; pushes that end the session become errors.
    async fn answer(&mut self) -> Result<server_frame::Kind, ClientError> {
        loop {
            let frame = self.next_frame().await?.ok_or(ClientError::Closed)?;
            match frame.kind {
                Some(server_frame::Kind::Kicked(k)) => return Err(ClientError::Kicked(k)),
                Some(server_frame::Kind::Error(e)) => {
                    return Err(ClientError::Server { code: e.code, message: e.message });
                }
                Some(kind) => return Ok(kind),
                None => continue,
            }
        }
    }
}

fn unexpected(kind: server_frame::Kind) -> ClientError {
    ClientError::Unexpected(Box::new(ServerFrame { kind: Some(kind) }))
}

fn is_reset(err: &std::io::Error) -> bool {
    matches!(err.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
}

fn presence_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
