//! One device connection: login, heartbeats, logout, kicks, and every way it can end.
//!
//! One task per connection owns its transport and does everything itself: it reads frames,
//! writes replies straight to the socket, and takes what other tasks post to its session's
//! [`Outbox`](crate::outbox::Outbox) (kicks). The session logic is written once against
//! [`FrameTransport`]; TCP, TLS and WebSocket differ only below it. Timeouts cost one timer per
//! connection that is re-armed only when it fires (from a last-activity instant), never per frame.

use std::{
    future::poll_fn,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use presence_common::internal_auth::RegistryChannel;
use presence_common::{
    AppDirectory, Shutdown, backoff::Backoff, registry_router::may_reroute, time::now_ms, trace_context,
};
use presence_proto::{
    codes::{ErrorFrameCode, LoginErrorCode},
    framing::FrameError,
    v1::{
        DeviceSession, DisconnectRequest, Error as ErrorFrame, EventReason, HeartbeatAck, Login, LoginError,
        LoginOk, LoginRequest, LogoutOk, LogoutRequest, ServerFrame, SessionRef, StatusChanged, UserStatus,
        client_frame, presence_registry_client::PresenceRegistryClient, server_frame,
    },
};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use tonic::Code;
use tracing::Instrument as _;
use uuid::Uuid;

mod requests;

use crate::{
    auth,
    limits::IpLimits,
    login_request::validate_login,
    metric_names as m,
    outbox::{Delivery, Outbound},
    registries::Registries,
    sessions::{SessionHandle, SessionTable},
    subscriptions::Subscriptions,
    transport::{Closing, FrameTransport, Received},
};

/// Time the last frames (LogoutOk, Error, Kicked) get to reach the socket before the close.
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
    /// Frames waiting for a device (unwritten, or posted and not taken) before it counts as not
    /// reading and is dropped.
    pub outbound_queue: usize,
    pub limits: IpLimits,
    /// Disconnect reports in flight to the registry. When thousands of devices drop at once,
    /// unbounded reports would time out in the queue and be cancelled, and a flood of cancelled
    /// HTTP/2 streams makes the registry close the whole connection (rapid-reset protection).
    pub report_slots: Arc<tokio::sync::Semaphore>,
    /// Registered once: the per-frame path does no metric lookup.
    pub heartbeats: metrics::Counter,
    /// Where WebSocket upgrades may come from.
    pub ws_origins: crate::websocket::OriginPolicy,
    /// Which sessions subscribe to which users.
    pub subscriptions: Subscriptions,
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    pub shutdown: Shutdown,
}

/// Default for [`Context::report_slots`].
pub const REPORT_CONCURRENCY: usize = 256;

/// How a connection ended.
#[derive(Debug)]
enum End {
    Logout,
    Kicked,
    /// Closed on request without a frame (a kick the device could not take): nothing is flushed.
    Closed,
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
            Self::Kicked | Self::Closed => "kicked",
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
    id: Uuid,
    handle: Arc<SessionHandle>,
}

impl Session {
    fn reference(&self) -> SessionRef {
        SessionRef {
            app_id: self.handle.app_id.to_string(),
            user_id: self.handle.user_id.to_string(),
            device_id: self.handle.device_id.to_string(),
            session_id: self.id.to_string(),
        }
    }
}

/// What became of a frame or a wake-up. Registry calls are boxed: their futures are large and,
/// inline, would size every idle connection's task.
enum Handled<'a> {
    Done,
    End(End),
    Later(futures::future::BoxFuture<'a, Option<End>>),
}

/// What woke the connection.
enum Event {
    Frame(Option<Result<Received, FrameError>>),
    Posted(Delivery),
    WriteFailed,
}

struct Conn<T> {
    ctx: Arc<Context>,
    peer: SocketAddr,
    transport: T,
    session: Option<Session>,
    /// A login whose registry call is in flight; if the connection ends meanwhile, it is
    /// cleaned up and reported like a logged-in session.
    pending: Option<Session>,
    last_activity: Instant,
}

/// Serves one device until the connection ends, then reports it to the registry. `slots` (what
/// the open socket holds) are released once the socket is closed, before the report.
pub fn serve<T: FrameTransport, Slots: Send>(
    transport: T,
    peer: SocketAddr,
    ctx: Arc<Context>,
    slots: Slots,
) -> impl Future<Output = ()> + Send {
    // Built before the future: arguments of an async fn would stay in every connection's task.
    let conn = Conn { ctx, peer, transport, session: None, pending: None, last_activity: Instant::now() };
    conn.serve(slots)
}

impl<T: FrameTransport> Conn<T> {
    async fn serve<Slots>(mut self, slots: Slots) {
        let end = self.run().await;

        if let End::Protocol(code, message) = &end {
            metrics::counter!(m::PROTOCOL_ERRORS, "reason" => code.as_str()).increment(1);
            let error = ErrorFrame { code: code.as_str().to_owned(), message: (*message).to_owned() };
            let _ = self.transport.send(&frame(server_frame::Kind::Error(error)));
        }
        let Conn { ctx, session, pending, mut transport, .. } = self;
        let session = session.or(pending);
        let mut close_at_once = matches!(end, End::Closed);
        if let Some(session) = &session {
            ctx.sessions.remove(&session.id);
            requests::end_subscriptions(&ctx, session);
            // A kick posted while the connection was ending (e.g. racing a logout) still goes out.
            let left = session.handle.outbox.end();
            close_at_once |= left.close;
            if let Some(kicked) = left.items.into_iter().find_map(|item| match item {
                Outbound::Kick(kicked) => Some(kicked),
                Outbound::Status(_) => None,
            }) {
                let _ = transport.send(&frame(server_frame::Kind::Kicked(*kicked)));
            }
        }
        if !close_at_once {
            let closing = match end {
                End::Protocol(..) => Closing::ProtocolError,
                End::Shutdown => Closing::GoingAway,
                _ => Closing::Normal,
            };
            let _ = tokio::time::timeout(FLUSH_GRACE, poll_fn(|cx| transport.poll_close(cx, closing))).await;
        }
        drop(transport);
        drop(slots);
        let kicked = matches!(end, End::Kicked | End::Closed)
            || session.as_ref().is_some_and(|s| s.handle.kicked.load(Ordering::Acquire));
        let label = if kicked { "kicked" } else { end.label() };
        metrics::counter!(m::DISCONNECTS, "reason" => label).increment(1);

        let reason = match end {
            End::Timeout => Some(EventReason::Timeout),
            // LoginFailed has a session only when the registry's answer timed out.
            End::LinkClose | End::Shutdown | End::Protocol(..) | End::LoginFailed => {
                Some(EventReason::LinkClose)
            }
            End::Logout | End::Kicked | End::Closed => None,
        };
        if let (Some(session), Some(reason), false) = (session, reason, kicked) {
            Box::pin(report_disconnect(&ctx, session.reference(), reason)).await;
        }
    }

    async fn run(&mut self) -> End {
        let started = Instant::now();
        let login_deadline = started + self.ctx.login_timeout;
        let heartbeat_timeout = Duration::from_secs(u64::from(self.ctx.heartbeat_timeout_s.max(1)));
        let timer = tokio::time::sleep_until(login_deadline);
        tokio::pin!(timer);
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let was_logged_in = self.session.is_some();
            // Nothing is awaited inside the select: its output and the frame are gone before the
            // loop's one await, which holds a boxed future alone (see `Handled`).
            let ended = match tokio::select! {
                () = shutdown.cancelled() => Handled::End(End::Shutdown),
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
                    Handled::Done
                }
                event = poll_fn(|cx| self.poll_event(cx)) => self.on_event(event),
            } {
                Handled::Done => None,
                Handled::End(end) => Some(end),
                Handled::Later(work) => work.await,
            };
            if let Some(end) = ended {
                return end;
            }
            if !was_logged_in && self.session.is_some() {
                // From the login deadline to the heartbeat deadline: once per session.
                timer.as_mut().reset(self.last_activity + heartbeat_timeout);
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Handled<'_> {
        match event {
            Event::WriteFailed => Handled::End(End::LinkClose),
            Event::Posted(delivery) => self.deliver(delivery).map_or(Handled::Done, Handled::End),
            Event::Frame(next) => {
                self.last_activity = Instant::now();
                match next {
                    None => Handled::End(End::LinkClose),
                    Some(Err(err)) => Handled::End(match (err.code(), err) {
                        (Some(code), FrameError::WebSocket(message)) => End::Protocol(code, message),
                        (Some(code), _) => End::Protocol(code, frame_error_message(code)),
                        (None, _) => End::LinkClose,
                    }),
                    Some(Ok(Received::Frame(frame))) => self.handle(frame.kind),
                    Some(Ok(Received::Activity)) => Handled::Done,
                }
            }
        }
    }

    /// Writing what waits comes first, then what was posted, then the device's next frame.
    fn poll_event(&mut self, cx: &mut TaskContext<'_>) -> Poll<Event> {
        if let Poll::Ready(Err(_)) = self.transport.poll_flush(cx) {
            return Poll::Ready(Event::WriteFailed);
        }
        if let Some(session) = &self.session
            && let Poll::Ready(delivery) = session.handle.outbox.poll_take(cx)
        {
            return Poll::Ready(Event::Posted(delivery));
        }
        self.transport.poll_frame(cx).map(Event::Frame)
    }

    /// Sends what other tasks posted; `Some` ends the connection.
    fn deliver(&mut self, delivery: Delivery) -> Option<End> {
        for item in delivery.items {
            match item {
                Outbound::Status(status) => {
                    let changed = StatusChanged { status: Some(UserStatus::clone(&status)) };
                    if let Err(end) = self.push(server_frame::Kind::StatusChanged(changed)) {
                        return Some(end);
                    }
                }
                Outbound::Kick(kicked) => {
                    let _ = self.send_frame(&frame(server_frame::Kind::Kicked(*kicked)));
                    return Some(End::Kicked);
                }
            }
        }
        if delivery.close {
            return Some(if self.ctx.shutdown.is_cancelled() { End::Shutdown } else { End::Closed });
        }
        None
    }

    /// Handles one frame at once, or hands back the registry call that handles it.
    fn handle(&mut self, kind: Option<client_frame::Kind>) -> Handled<'_> {
        match (kind, self.session.is_some()) {
            (None, _) => Handled::End(End::Protocol(ErrorFrameCode::EmptyFrame, "frame without a message")),
            (Some(client_frame::Kind::Login(login)), false) => {
                Handled::Later(Box::pin(async move { self.login(login).await.err() }))
            }
            (Some(client_frame::Kind::Login(_)), true) => {
                Handled::End(End::Protocol(ErrorFrameCode::DuplicateLogin, "already logged in"))
            }
            (Some(_), false) => {
                Handled::End(End::Protocol(ErrorFrameCode::LoginRequired, "the first frame must be Login"))
            }
            (Some(client_frame::Kind::Heartbeat(_)), true) => {
                self.ctx.heartbeats.increment(1);
                let ack = server_frame::Kind::HeartbeatAck(HeartbeatAck { server_time_ms: now_ms() });
                self.push(ack).map_or_else(Handled::End, |()| Handled::Done)
            }
            (Some(client_frame::Kind::Logout(_)), true) => {
                Handled::Later(Box::pin(async move { Some(self.logout().await) }))
            }
            (Some(client_frame::Kind::SetStatus(request)), true) => {
                Handled::Later(Box::pin(async move { self.set_status(request).await.err() }))
            }
            (Some(client_frame::Kind::Subscribe(request)), true) => {
                Handled::Later(Box::pin(async move { self.subscribe(request).await.err() }))
            }
            (Some(client_frame::Kind::Unsubscribe(request)), true) => {
                self.unsubscribe(request).map_or_else(Handled::End, |()| Handled::Done)
            }
        }
    }

    /// Sends a frame of ours.
    fn push(&mut self, kind: server_frame::Kind) -> Result<(), End> {
        self.send_frame(&frame(kind))
    }

    /// Sends a frame; more than `outbound_queue` frames the socket has not taken means the device
    /// does not read.
    fn send_frame(&mut self, frame: &ServerFrame) -> Result<(), End> {
        if self.transport.send(frame).is_err() {
            return Err(End::LinkClose);
        }
        if self.transport.queued_frames() > self.ctx.outbound_queue {
            return Err(End::Protocol(
                ErrorFrameCode::SlowConsumer,
                "outbound queue full: the device does not read",
            ));
        }
        Ok(())
    }

    fn refuse(&mut self, code: LoginErrorCode, message: &str) -> End {
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
        let session_id = Uuid::now_v7();
        let handle = Arc::new(SessionHandle::new(
            &login.app_id,
            &login.user_id,
            &login.device_id,
            // Pushed statuses queue at most one per subscription (a newer one replaces it).
            self.ctx.outbound_queue + self.ctx.max_subscriptions,
        ));
        self.ctx.sessions.insert(session_id, handle.clone());
        self.pending = Some(Session { id: session_id, handle: handle.clone() });
        let request = LoginRequest {
            gateway_id: self.ctx.gateway_id.clone(),
            session: Some(DeviceSession {
                app_id: login.app_id,
                user_id: login.user_id,
                device_id: login.device_id,
                platform: login.platform as i32,
                session_id: session_id.to_string(),
                client_version: login.client_version,
                push_enabled: login.push_enabled,
                peer_addr: self.peer.to_string(),
            }),
        };
        let deadline = Instant::now() + REGISTRY_TIMEOUT;
        let (app_id, user_id) = (handle.app_id.as_str(), handle.user_id.as_str());
        // The root of the login's trace: the registry's and the notifier's spans join it.
        let span = tracing::info_span!("gateway.login", app_id, user_id, session_id = %session_id);
        let reply = loop {
            let Some(mut registry) = self.ctx.registries.owner_of(app_id, user_id, true, deadline).await
            else {
                // Never sent: no registry can have applied it.
                self.pending = None;
                self.ctx.sessions.remove(&session_id);
                return Err(self.refuse(LoginErrorCode::Unavailable, "registry unavailable, retry later"));
            };
            let call =
                registry.login(trace_context::with_trace(request.clone(), &span)).instrument(span.clone());
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(reply)) => break reply.into_inner(),
                // Not the owner (any more), or the owner went away: re-read the map and try the
                // owner. A login the old owner did commit is recognised by its session id.
                Ok(Err(status)) if may_reroute(&status) && Instant::now() < deadline => {
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
            // Kicked while pending: the Kicked frame waits in the outbox and goes out at the end.
            return Err(End::Kicked);
        }
        metrics::counter!(m::LOGINS, "result" => "ok").increment(1);
        let ok = LoginOk {
            session_id: session_id.to_string(),
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

fn frame(kind: server_frame::Kind) -> ServerFrame {
    ServerFrame { kind: Some(kind) }
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

    #[test]
    fn the_too_long_message_names_the_limit() {
        let message = frame_error_message(ErrorFrameCode::TooLong);
        assert!(message.contains(&presence_proto::MAX_FRAME_LEN.to_string()), "{message}");
    }
}
