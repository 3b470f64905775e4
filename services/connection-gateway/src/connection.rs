//! One device connection: login, heartbeats, logout, kicks, and every way it can end.
//!
//! A single task per connection polls a reader and a writer future. The writer drains a bounded
//! queue (replies and kicks); a device that stops reading fills it and is dropped. Timeouts cost
//! one timer per connection that is re-armed only when it fires (from a last-activity instant),
//! never per frame.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::StreamExt;
use presence_common::internal_auth::RegistryChannel;
use presence_common::{AppDirectory, Shutdown, backoff::Backoff, time::now_ms};
use presence_proto::{
    codes::{ErrorFrameCode, LoginErrorCode},
    framing::{ServerCodec, encode_frame},
    v1::{
        DeviceSession, DisconnectRequest, Error as ErrorFrame, EventReason, HeartbeatAck, Login, LoginError,
        LoginOk, LoginRequest, LogoutOk, LogoutRequest, ServerFrame, SessionRef, client_frame,
        presence_registry_client::PresenceRegistryClient, server_frame,
    },
};
use secrecy::ExposeSecret;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
    time::Instant,
};
use tokio_util::{codec::FramedRead, sync::CancellationToken};
use tonic::Code;

use crate::{
    auth,
    limits::IpLimits,
    login_request::validate_login,
    metric_names as m,
    registries::Registries,
    sessions::{Outbound, SessionHandle, SessionTable},
};

/// Initial read buffer: a login frame fits; idle connections stay small.
const READ_BUFFER: usize = 256;
/// Time the writer gets to flush the last frames (LogoutOk, Error, Kicked) before the close.
const FLUSH_GRACE: Duration = Duration::from_secs(2);
/// Bound on one registry Login call.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Disconnect and Logout calls are retried while the registry is unreachable.
const REPORT_RETRY_FOR: Duration = Duration::from_secs(15);

/// What every connection shares.
pub struct Context {
    pub gateway_id: String,
    pub apps: AppDirectory,
    pub registries: Registries,
    pub sessions: SessionTable,
    pub login_timeout: Duration,
    pub heartbeat_interval_s: u32,
    pub heartbeat_timeout_s: u32,
    pub outbound_queue: usize,
    pub limits: IpLimits,
    /// Disconnect reports in flight to the registry. When thousands of devices drop at once,
    /// unbounded reports would time out in the queue and be cancelled, and a flood of cancelled
    /// HTTP/2 streams makes the registry close the whole connection (rapid-reset protection).
    pub report_slots: Arc<tokio::sync::Semaphore>,
    pub shutdown: Shutdown,
}

/// Default for [`Context::report_slots`].
pub const REPORT_CONCURRENCY: usize = 256;

/// How a connection ended.
#[derive(Debug)]
enum End {
    Logout,
    Kicked,
    LoginFailed,
    Timeout,
    LinkClose,
    Shutdown,
    /// The device broke the protocol: an `Error` frame with this code is sent first.
    Protocol(ErrorFrameCode, &'static str),
}

impl End {
    fn label(&self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Kicked => "kicked",
            Self::LoginFailed => "login_failed",
            Self::Timeout => "timeout",
            Self::LinkClose => "link_close",
            Self::Shutdown => "shutdown",
            Self::Protocol(..) => "protocol_error",
        }
    }
}

/// The logged-in session of a connection.
struct Session {
    id: String,
    handle: Arc<SessionHandle>,
}

impl Session {
    fn reference(&self) -> SessionRef {
        SessionRef {
            app_id: self.handle.app_id.clone(),
            user_id: self.handle.user_id.clone(),
            device_id: self.handle.device_id.clone(),
            session_id: self.id.clone(),
        }
    }
}

struct Conn {
    ctx: Arc<Context>,
    peer: SocketAddr,
    outbound: mpsc::Sender<Outbound>,
    close: CancellationToken,
    session: Option<Session>,
    /// A login whose registry call is in flight; if the connection ends meanwhile, it is
    /// cleaned up and reported like a logged-in session.
    pending: Option<Session>,
    last_activity: Instant,
}

/// Serves one device until the connection ends, then reports it to the registry.
pub async fn serve<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut frames = FramedRead::with_capacity(read_half, ServerCodec::new(), READ_BUFFER);
    let (outbound, queue) = mpsc::channel(ctx.outbound_queue.max(2));
    let close = CancellationToken::new();
    let writer = write_loop(write_half, queue);
    tokio::pin!(writer);
    let mut writer_done = false;

    let shutdown = ctx.shutdown.clone();
    let mut conn = Conn {
        ctx,
        peer,
        outbound,
        close: close.clone(),
        session: None,
        pending: None,
        last_activity: Instant::now(),
    };
    let end = tokio::select! {
        end = conn.read_loop(&mut frames) => end,
        kicked = &mut writer => {
            writer_done = true;
            if kicked { End::Kicked } else { End::LinkClose }
        }
        () = close.cancelled() => if shutdown.is_cancelled() { End::Shutdown } else { End::Kicked },
    };
    drop(frames);

    if let End::Protocol(code, message) = &end {
        metrics::counter!(m::PROTOCOL_ERRORS, "reason" => code.as_str()).increment(1);
        let error = ErrorFrame { code: code.as_str().to_owned(), message: (*message).to_owned() };
        let _ = conn.outbound.try_send(frame(server_frame::Kind::Error(error)));
    }
    let Conn { ctx, session, pending, outbound, .. } = conn;
    let session = session.or(pending);
    let kicked = matches!(end, End::Kicked)
        || session.as_ref().is_some_and(|s| s.handle.kicked.load(Ordering::Acquire));
    if let Some(session) = &session {
        ctx.sessions.remove(&session.id);
    }
    // Let the writer flush what is queued (LogoutOk, Error, Kicked), then close the socket.
    drop(outbound);
    if !writer_done && !close.is_cancelled() {
        let _ = tokio::time::timeout(FLUSH_GRACE, &mut writer).await;
    }
    let label = if kicked { "kicked" } else { end.label() };
    metrics::counter!(m::DISCONNECTS, "reason" => label).increment(1);

    let reason = match end {
        End::Timeout => Some(EventReason::Timeout),
        // LoginFailed has a session only when the registry's answer timed out.
        End::LinkClose | End::Shutdown | End::Protocol(..) | End::LoginFailed => Some(EventReason::LinkClose),
        End::Logout | End::Kicked => None,
    };
    if let (Some(session), Some(reason), false) = (session, reason, kicked) {
        Box::pin(report_disconnect(&ctx, session.reference(), reason)).await;
    }
}

impl Conn {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, frames: &mut FramedRead<R, ServerCodec>) -> End {
        let started = Instant::now();
        let login_deadline = started + self.ctx.login_timeout;
        let heartbeat_timeout = Duration::from_secs(u64::from(self.ctx.heartbeat_timeout_s.max(1)));
        let timer = tokio::time::sleep_until(login_deadline);
        tokio::pin!(timer);
        let shutdown = self.ctx.shutdown.clone();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return End::Shutdown,
                () = &mut timer => {
                    let logged_in = self.session.is_some();
                    let deadline = if logged_in { self.last_activity + heartbeat_timeout } else { login_deadline };
                    if Instant::now() >= deadline {
                        return if logged_in {
                            End::Timeout
                        } else {
                            End::Protocol(ErrorFrameCode::LoginTimeout, "no Login in time")
                        };
                    }
                    timer.as_mut().reset(deadline);
                }
                next = frames.next() => {
                    self.last_activity = Instant::now();
                    let frame = match next {
                        None => return End::LinkClose,
                        Some(Err(err)) => return match err.code() {
                            Some(code) => End::Protocol(code, frame_error_message(code)),
                            None => End::LinkClose,
                        },
                        Some(Ok(frame)) => frame,
                    };
                    let was_logged_in = self.session.is_some();
                    if let Some(end) = self.handle(frame.kind).await {
                        return end;
                    }
                    if !was_logged_in && self.session.is_some() {
                        // From the login deadline to the heartbeat deadline: once per session.
                        timer.as_mut().reset(self.last_activity + heartbeat_timeout);
                    }
                }
            }
        }
    }

    /// Handles one frame; `Some` ends the connection. Registry calls are boxed: their futures
    /// are large and would otherwise inflate every idle connection's task.
    async fn handle(&mut self, kind: Option<client_frame::Kind>) -> Option<End> {
        match (kind, self.session.is_some()) {
            (None, _) => Some(End::Protocol(ErrorFrameCode::EmptyFrame, "frame without a message")),
            (Some(client_frame::Kind::Login(login)), false) => Box::pin(self.login(login)).await.err(),
            (Some(client_frame::Kind::Login(_)), true) => {
                Some(End::Protocol(ErrorFrameCode::DuplicateLogin, "already logged in"))
            }
            (Some(_), false) => {
                Some(End::Protocol(ErrorFrameCode::LoginRequired, "the first frame must be Login"))
            }
            (Some(client_frame::Kind::Heartbeat(_)), true) => {
                metrics::counter!(m::HEARTBEATS).increment(1);
                let ack = server_frame::Kind::HeartbeatAck(HeartbeatAck { server_time_ms: now_ms() });
                self.push(ack).err()
            }
            (Some(client_frame::Kind::Logout(_)), true) => Some(Box::pin(self.logout()).await),
        }
    }

    /// Queues a frame; a full queue means the device does not read.
    fn push(&self, kind: server_frame::Kind) -> Result<(), End> {
        match self.outbound.try_send(frame(kind)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(End::Protocol(
                ErrorFrameCode::SlowConsumer,
                "outbound queue full: the device does not read",
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(End::LinkClose),
        }
    }

    fn refuse(&self, code: LoginErrorCode, message: &str) -> End {
        metrics::counter!(m::LOGINS, "result" => code.as_str()).increment(1);
        let error = LoginError { code: code.as_str().to_owned(), message: message.to_owned() };
        let _ = self.push(server_frame::Kind::LoginError(error));
        End::LoginFailed
    }

    async fn login(&mut self, login: Login) -> Result<(), End> {
        // First, before any parsing or JWT check: a flood must cost as little as possible.
        if !self.ctx.limits.allow_login(self.peer.ip()) {
            return Err(self.refuse(
                LoginErrorCode::RateLimited,
                "too many login attempts from this address, retry later",
            ));
        }
        let login = match validate_login(login) {
            Ok(login) => login,
            Err(refusal) => return Err(self.refuse(refusal.code, refusal.message)),
        };
        let Some(app) = self.ctx.apps.get(&login.app_id) else {
            return Err(self.refuse(LoginErrorCode::BadToken, "unknown app"));
        };
        if let Err(err) = auth::verify(
            &login.token,
            app.token_secret.expose_secret(),
            &login.app_id,
            &login.user_id,
            app.max_token_lifetime,
        ) {
            return Err(self.refuse(err.code(), "token rejected"));
        }

        // Registered before the registry hears of it: a kick for this session can arrive before
        // the LoginReply does.
        let session_id = uuid::Uuid::now_v7().to_string();
        let handle = Arc::new(SessionHandle {
            app_id: login.app_id.clone(),
            user_id: login.user_id.clone(),
            device_id: login.device_id.clone(),
            confirmed: Default::default(),
            outbound: self.outbound.downgrade(),
            close: self.close.clone(),
            kicked: Default::default(),
        });
        self.ctx.sessions.insert(session_id.clone(), handle.clone());
        self.pending = Some(Session { id: session_id.clone(), handle: handle.clone() });
        let request = LoginRequest {
            gateway_id: self.ctx.gateway_id.clone(),
            session: Some(DeviceSession {
                app_id: login.app_id,
                user_id: login.user_id,
                device_id: login.device_id,
                platform: login.platform as i32,
                session_id: session_id.clone(),
                client_version: login.client_version,
                push_enabled: login.push_enabled,
                peer_addr: self.peer.to_string(),
            }),
        };
        let deadline = Instant::now() + REGISTRY_TIMEOUT;
        let (app_id, user_id) = (handle.app_id.as_str(), handle.user_id.as_str());
        let reply = loop {
            let Some(mut registry) = self.ctx.registries.owner_of(app_id, user_id, true, deadline).await
            else {
                // Never sent: no registry can have applied it.
                self.pending = None;
                self.ctx.sessions.remove(&session_id);
                return Err(self.refuse(LoginErrorCode::Unavailable, "registry unavailable, retry later"));
            };
            match tokio::time::timeout_at(deadline, registry.login(request.clone())).await {
                Ok(Ok(reply)) => break reply.into_inner(),
                // Not the owner (any more), or the owner went away: re-read the map and try the
                // owner. A login the old owner did commit is recognised by its session id.
                Ok(Err(status)) if reroute(&status) && Instant::now() < deadline => {
                    tracing::debug!(%status, "registry unavailable for this user; re-routing");
                    self.ctx.registries.refresh().await;
                }
                Ok(Err(status)) => {
                    self.pending = None;
                    self.ctx.sessions.remove(&session_id);
                    // The registry's message stays here: it may name internals a device must not see.
                    tracing::debug!(%status, "registry refused a login");
                    let code = login_error_code(&status);
                    return Err(self.refuse(code, login_error_message(code)));
                }
                Err(_) => {
                    // The registry may still apply it: report it like a session that went away.
                    self.session = self.pending.take();
                    return Err(self.refuse(LoginErrorCode::Unavailable, "registry timed out"));
                }
            }
        };
        handle.confirmed.store(true, Ordering::Release);
        self.session = self.pending.take();
        if handle.kicked.load(Ordering::Acquire) {
            // Kicked while pending: the Kicked frame is already queued; the writer closes after it.
            return Err(End::Kicked);
        }
        metrics::counter!(m::LOGINS, "result" => "ok").increment(1);
        let ok = LoginOk {
            session_id,
            heartbeat_interval_s: self.ctx.heartbeat_interval_s,
            heartbeat_timeout_s: self.ctx.heartbeat_timeout_s,
            kicked_devices: reply.kicked_devices,
        };
        self.push(server_frame::Kind::LoginOk(ok))
    }

    async fn logout(&mut self) -> End {
        let Some(session) = &self.session else { return End::LinkClose };
        let session_ref = session.reference();
        let ctx = self.ctx.clone();
        let applied = retry_unavailable(&ctx.registries, &session_ref, |mut registry| {
            let request = LogoutRequest { session: Some(session_ref.clone()) };
            async move { registry.logout(request).await.map(|_| ()) }
        })
        .await;
        if let Err(status) = applied {
            // Not reported: the next attach snapshot (without this session) reconciles it.
            tracing::warn!(%status, "registry logout failed");
        }
        let _ = self.push(server_frame::Kind::LogoutOk(LogoutOk {}));
        End::Logout
    }
}

fn frame(kind: server_frame::Kind) -> Outbound {
    Outbound::Frame(Box::new(ServerFrame { kind: Some(kind) }))
}

/// LoginError code for a registry failure.
fn login_error_code(status: &tonic::Status) -> LoginErrorCode {
    match status.code() {
        Code::InvalidArgument => LoginErrorCode::BadRequest,
        Code::NotFound => LoginErrorCode::BadToken,
        _ => LoginErrorCode::Unavailable,
    }
}

/// What a device is told with a registry failure's code: fixed text, never the registry's own.
fn login_error_message(code: LoginErrorCode) -> &'static str {
    match code {
        LoginErrorCode::BadRequest => "the login request was refused",
        LoginErrorCode::BadToken | LoginErrorCode::TokenExpired => "token rejected",
        LoginErrorCode::Unavailable | LoginErrorCode::RateLimited => "registry unavailable, retry later",
    }
}

/// What a device is told with a framing error.
fn frame_error_message(code: ErrorFrameCode) -> &'static str {
    match code {
        ErrorFrameCode::ZeroLength => "zero-length frame",
        ErrorFrameCode::TooLong => "frame longer than 65536 bytes",
        _ => "the frame is not a ClientFrame",
    }
}

/// Writes queued frames until the queue closes; true when it ended by delivering a kick.
async fn write_loop<W: AsyncWrite + Unpin>(mut out: W, mut queue: mpsc::Receiver<Outbound>) -> bool {
    while let Some(item) = queue.recv().await {
        let (frame, kick) = match item {
            Outbound::Frame(frame) => (*frame, false),
            Outbound::Kick(kicked) => (ServerFrame { kind: Some(server_frame::Kind::Kicked(*kicked)) }, true),
        };
        // A fresh buffer per frame: an idle connection holds no write buffer at all.
        let mut buf = bytes::BytesMut::new();
        if encode_frame(&frame, &mut buf).is_err() {
            continue;
        }
        if out.write_all(&buf).await.is_err() {
            return false;
        }
        if kick {
            let _ = out.shutdown().await;
            return true;
        }
    }
    let _ = out.shutdown().await;
    false
}

/// A login refused this way may go to another registry: the one asked does not serve the user
/// (any more), or could not be reached at all. A registry that answers that it cannot commit
/// (Postgres is away) is not asked again: the device hears `unavailable` at once.
fn reroute(status: &tonic::Status) -> bool {
    presence_common::registry_router::is_reroute(status) || std::error::Error::source(status).is_some()
}

/// Codes that mean "the registry is not reachable right now", not "the request is wrong".
fn transient(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::ResourceExhausted)
}

/// Runs `call` against the owner of `session`'s user until it succeeds, fails with something
/// other than a [`transient`] code, or [`REPORT_RETRY_FOR`] has passed. A transient failure
/// re-reads the partition map: the owner may have changed.
async fn retry_unavailable<F, Fut>(
    registries: &Registries,
    session: &SessionRef,
    mut call: F,
) -> Result<(), tonic::Status>
where
    F: FnMut(PresenceRegistryClient<RegistryChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let give_up = Instant::now() + REPORT_RETRY_FOR;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let attempt = async {
            let until = Instant::now() + REGISTRY_TIMEOUT;
            match registries.owner_of(&session.app_id, &session.user_id, false, until).await {
                Some(registry) => call(registry).await,
                None => Err(tonic::Status::unavailable("no registry serves this user now")),
            }
        };
        let result = tokio::time::timeout(REGISTRY_TIMEOUT, attempt).await;
        if !matches!(result, Ok(Ok(()))) {
            registries.refresh().await;
        }
        let delay = backoff.next_delay();
        match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(status)) if !transient(status.code()) => return Err(status),
            Ok(Err(status)) if Instant::now() + delay > give_up => return Err(status),
            Err(_) if Instant::now() + delay > give_up => {
                return Err(tonic::Status::unavailable("timed out"));
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
    }
}

async fn report_disconnect(ctx: &Context, session: SessionRef, reason: EventReason) {
    // Closed only if the gateway is gone; report anyway then.
    let _slot = ctx.report_slots.acquire().await.ok();
    let result = retry_unavailable(&ctx.registries, &session, |mut registry| {
        let request = DisconnectRequest { session: Some(session.clone()), reason: reason as i32 };
        async move { registry.disconnect(request).await.map(|_| ()) }
    })
    .await;
    if let Err(status) = result {
        tracing::warn!(%status, session_id = %session.session_id, "disconnect not reported; the next attach reconciles it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, Fut: std::future::Future>(_: fn(A, B, C) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_too_long_message_names_the_limit() {
        let message = frame_error_message(ErrorFrameCode::TooLong);
        assert!(message.contains(&presence_proto::MAX_FRAME_LEN.to_string()), "{message}");
    }

    #[test]
    fn an_idle_connection_task_is_small() {
        let size = future_size(serve::<tokio::net::TcpStream>);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 2048, "connection future is {size} bytes");
    }
}
