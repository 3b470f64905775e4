//! A device's session that keeps itself alive: it logs in, heartbeats, reconnects with backoff and
//! full jitter when the link drops, re-subscribes to every user it holds after each login, and
//! yields typed events. Subscribed users' statuses are filtered by `user_version` (a status not
//! newer than the one held is dropped), so the application sees each user's status only grow.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use presence_client::{LoginParams, mint_token, session::{Session, SessionConfig, SessionEvent}};
//! use presence_proto::v1::Platform;
//! let token = mint_token("secret", "alice", None, std::time::Duration::from_secs(3600))?;
//! let login = LoginParams::new("alice", "phone-1", Platform::Ios, token);
//! let mut session = Session::start(SessionConfig::new("127.0.0.1:7100", login));
//! session.subscribe(vec!["bob".into()]).await?;
//! while let Some(event) = session.next_event().await {
//!     if let SessionEvent::Status(status) = event {
//!         println!("{} is {}", status.user_id, status.status);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use presence_proto::{
    framing::{ClientCodec, FrameError},
    limits::MAX_IDS_PER_SUBSCRIBE,
    v1::{
        ClientFrame, Heartbeat, Kicked, LoginOk, Logout, ServerFrame, SetStatus, Subscribe, Unsubscribe,
        UserStatus, client_frame, server_frame,
    },
};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::codec::Framed;

use crate::{Client, ClientError, LoginParams, presence_now_ms};

/// Reconnect delays: exponential from `initial` to `max`, each drawn uniformly below it.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1 for the first retry): full jitter over the
    /// exponential ceiling, so that devices dropped together do not come back together.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let ceiling = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.max);
        ceiling.mul_f64(random.clamp(0.0, 1.0))
    }
}

/// What a session needs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The gateway's device address (`host:port`).
    pub gateway: String,
    pub login: LoginParams,
    pub backoff: Backoff,
    /// How long a request waits for its answer.
    pub request_timeout: Duration,
}

impl SessionConfig {
    pub fn new(gateway: &str, login: LoginParams) -> Self {
        Self {
            gateway: gateway.to_owned(),
            login,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the session tells the application.
#[derive(Debug)]
pub enum SessionEvent {
    /// Logged in (the first time and after every reconnect); subscriptions are re-sent next.
    LoggedIn(LoginOk),
    /// A subscribed user's status, newer than the one held.
    Status(UserStatus),
    /// The link dropped or a login failed for now; the next attempt starts after `retry_in`.
    Disconnected { error: ClientError, retry_in: Duration },
    /// The session is over: kicked, a login refused for good, or closed. No event follows.
    Ended(End),
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// Forced offline by the server; it does not reconnect by itself.
    Kicked(Kicked),
    /// A login or protocol error that retrying will not cure (e.g. `bad_token`).
    Refused(ClientError),
    /// [`Session::close`] logged out.
    Closed,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestFailed {
    /// The server refused it: `code` is a `RequestError` code (`too_many_subscriptions`, ...).
    #[error("refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// The link dropped before the answer (subscriptions are still held and re-sent).
    #[error("disconnected before the answer")]
    Disconnected,
    #[error("no answer in time")]
    Timeout,
    /// The session has ended.
    #[error("the session has ended")]
    Ended,
}

enum Command {
    Subscribe(Vec<String>, oneshot::Sender<Result<Vec<UserStatus>, RequestFailed>>),
    Unsubscribe(Vec<String>, oneshot::Sender<Result<(), RequestFailed>>),
    SetStatus(String, oneshot::Sender<Result<(), RequestFailed>>),
    Close(oneshot::Sender<()>),
}

/// A running session: requests go in, events come out.
pub struct Session {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<SessionEvent>,
    request_timeout: Duration,
}

impl Session {
    /// Starts connecting at once, in a task of its own.
    pub fn start(config: SessionConfig) -> Self {
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, events) = mpsc::channel(1024);
        let request_timeout = config.request_timeout;
        tokio::spawn(Driver::new(config, command_rx, event_tx).run());
        Self { commands, events, request_timeout }
    }

    /// The next event; `None` after [`SessionEvent::Ended`].
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Subscribes to `users` (held across reconnects); returns their current statuses in
    /// request order. Offline, the users are held and subscribed at the next login, and this
    /// fails with [`RequestFailed::Disconnected`].
    pub async fn subscribe(&self, users: Vec<String>) -> Result<Vec<UserStatus>, RequestFailed> {
        self.request(|tx| Command::Subscribe(users, tx)).await
    }

    /// Ends these subscriptions (all of them when `users` is empty).
    pub async fn unsubscribe(&self, users: Vec<String>) -> Result<(), RequestFailed> {
        self.request(|tx| Command::Unsubscribe(users, tx)).await
    }

    /// Sets (or, with `""`, clears) the user's custom status.
    pub async fn set_status(&self, text: &str) -> Result<(), RequestFailed> {
        let text = text.to_owned();
        self.request(|tx| Command::SetStatus(text, tx)).await
    }

    /// Logs out and ends the session.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = tokio::time::timeout(self.request_timeout, rx).await;
        }
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, RequestFailed>>) -> Command,
    ) -> Result<T, RequestFailed> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(tx)).await.map_err(|_| RequestFailed::Ended)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RequestFailed::Ended),
            Err(_) => Err(RequestFailed::Timeout),
        }
    }
}

/// A request sent and not answered yet.
enum Pending {
    Subscribe { users: Vec<String>, reply: Option<oneshot::Sender<Result<Vec<UserStatus>, RequestFailed>>> },
    Done(oneshot::Sender<Result<(), RequestFailed>>),
}

type Link = Framed<TcpStream, ClientCodec>;

/// What ended one link.
enum LinkEnd {
    Lost(ClientError),
    Final(End),
}

struct Driver {
    config: SessionConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<SessionEvent>,
    /// Every user subscribed to, re-sent after each login.
    subscribed: BTreeSet<String>,
    /// The newest `user_version` seen per subscribed user.
    versions: HashMap<String, u64>,
    pending: HashMap<u32, Pending>,
    next_request: u32,
    seed: u64,
}

impl Driver {
    fn new(
        config: SessionConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<SessionEvent>,
    ) -> Self {
        let seed = presence_now_ms() ^ u64::from(std::process::id()).rotate_left(32) | 1;
        Self {
            config,
            commands,
            events,
            subscribed: BTreeSet::new(),
            versions: HashMap::new(),
            pending: HashMap::new(),
            next_request: 1,
            seed,
        }
    }

    /// A uniform draw in [0, 1) (xorshift: jitter needs no cryptography).
    fn random(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn run(mut self) {
        let mut attempt = 0;
        loop {
            let end = match self.connect().await {
                Ok((link, ok)) => {
                    attempt = 0;
                    let interval = Duration::from_secs(u64::from(ok.heartbeat_interval_s.max(1)));
                    let silence = Duration::from_secs(u64::from(ok.heartbeat_timeout_s.max(1)));
                    let _ = self.events.send(SessionEvent::LoggedIn(ok)).await;
                    self.serve(link, interval, silence).await
                }
                Err(err) if err.retry_later() => LinkEnd::Lost(err),
                Err(err) => LinkEnd::Final(End::Refused(err)),
            };
            self.fail_pending();
            match end {
                LinkEnd::Final(end) => {
                    let _ = self.events.send(SessionEvent::Ended(end)).await;
                    return;
                }
                LinkEnd::Lost(error) => {
                    attempt += 1;
                    let random = self.random();
                    let retry_in = self.config.backoff.delay(attempt, random);
                    let _ = self.events.send(SessionEvent::Disconnected { error, retry_in }).await;
                    if let Some(end) = self.wait(retry_in).await {
                        let _ = self.events.send(SessionEvent::Ended(end)).await;
                        return;
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(Link, LoginOk), ClientError> {
        let mut client = Client::connect(self.config.gateway.as_str()).await?;
        let ok = client.login(self.config.login.clone()).await?;
        Ok((client.framed, ok))
    }

    /// Waits out a backoff while answering requests that come meanwhile (as disconnected);
    /// `Some` when the application closed the session.
    async fn wait(&mut self, delay: Duration) -> Option<End> {
        let until = Instant::now() + delay;
        loop {
            let command = tokio::select! {
                () = tokio::time::sleep_until(until) => return None,
                command = self.commands.recv() => command,
            };
            match command {
                None => return Some(End::Closed),
                Some(Command::Close(done)) => {
                    let _ = done.send(());
                    return Some(End::Closed);
                }
                Some(Command::Subscribe(users, reply)) => {
                    self.subscribed.extend(users);
                    let _ = reply.send(Err(RequestFailed::Disconnected));
                }
                Some(Command::Unsubscribe(users, reply)) => {
                    self.forget(&users);
                    let _ = reply.send(Ok(()));
                }
                Some(Command::SetStatus(_, reply)) => {
                    let _ = reply.send(Err(RequestFailed::Disconnected));
                }
            }
        }
    }

    /// One logged-in link: re-subscribe, then heartbeats, requests and pushes until it ends.
    async fn serve(&mut self, mut link: Link, interval: Duration, silence: Duration) -> LinkEnd {
        let held: Vec<String> = self.subscribed.iter().cloned().collect();
        for chunk in held.chunks(MAX_IDS_PER_SUBSCRIBE) {
            let frame = self.subscribe_frame(chunk.to_vec(), None);
            if let Err(err) = link.send(frame).await {
                return LinkEnd::Lost(err.into());
            }
        }
        let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > silence {
                        return LinkEnd::Lost(ClientError::Closed);
                    }
                    let beat = client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: presence_now_ms() });
                    if let Err(err) = link.send(ClientFrame { kind: Some(beat) }).await {
                        return LinkEnd::Lost(err.into());
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return self.logout(&mut link).await };
                    let frame = match command {
                        Command::Close(done) => {
                            let end = self.logout(&mut link).await;
                            let _ = done.send(());
                            return end;
                        }
                        Command::Subscribe(users, reply) => {
                            self.subscribed.extend(users.iter().cloned());
                            self.subscribe_frame(users, Some(reply))
                        }
                        Command::Unsubscribe(users, reply) => {
                            self.forget(&users);
                            let request_id = self.request_id(Pending::Done(reply));
                            ClientFrame { kind: Some(client_frame::Kind::Unsubscribe(Unsubscribe { request_id, user_ids: users })) }
                        }
                        Command::SetStatus(custom_status, reply) => {
                            let request_id = self.request_id(Pending::Done(reply));
                            ClientFrame { kind: Some(client_frame::Kind::SetStatus(SetStatus { request_id, custom_status })) }
                        }
                    };
                    if let Err(err) = link.send(frame).await {
                        return LinkEnd::Lost(err.into());
                    }
                }
                frame = link.next() => {
                    last_heard = Instant::now();
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(FrameError::Io(err))) => return LinkEnd::Lost(ClientError::Frame(FrameError::Io(err))),
                        Some(Err(err)) => return LinkEnd::Lost(err.into()),
                        None => return LinkEnd::Lost(ClientError::Closed),
                    };
                    if let Some(end) = self.receive(frame).await {
                        return end;
                    }
                }
            }
        }
    }

    fn request_id(&mut self, pending: Pending) -> u32 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        self.pending.insert(id, pending);
        id
    }

    fn subscribe_frame(
        &mut self,
        users: Vec<String>,
        reply: Option<oneshot::Sender<Result<Vec<UserStatus>, RequestFailed>>>,
    ) -> ClientFrame {
        let request_id = self.request_id(Pending::Subscribe { users: users.clone(), reply });
        ClientFrame { kind: Some(client_frame::Kind::Subscribe(Subscribe { request_id, user_ids: users })) }
    }

    fn forget(&mut self, users: &[String]) {
        if users.is_empty() {
            self.subscribed.clear();
            self.versions.clear();
        }
        for user in users {
            self.subscribed.remove(user);
            self.versions.remove(user);
        }
    }

    /// A status newer than the one held (and of a user still subscribed to) is passed on.
    async fn offer(&mut self, status: UserStatus) {
        if !self.subscribed.contains(&status.user_id) {
            return;
        }
        let newer = self.versions.get(&status.user_id).is_none_or(|held| status.user_version > *held);
        if newer {
            self.versions.insert(status.user_id.clone(), status.user_version);
            let _ = self.events.send(SessionEvent::Status(status)).await;
        }
    }

    async fn receive(&mut self, frame: ServerFrame) -> Option<LinkEnd> {
        match frame.kind? {
            server_frame::Kind::StatusChanged(changed) => {
                if let Some(status) = changed.status {
                    self.offer(status).await;
                }
            }
            server_frame::Kind::SubscribeOk(ok) => {
                for status in &ok.statuses {
                    self.offer(status.clone()).await;
                }
                if let Some(Pending::Subscribe { reply: Some(reply), .. }) =
                    self.pending.remove(&ok.request_id)
                {
                    let _ = reply.send(Ok(ok.statuses));
                }
            }
            server_frame::Kind::SetStatusOk(ok) => self.done(ok.request_id, Ok(())),
            server_frame::Kind::UnsubscribeOk(ok) => self.done(ok.request_id, Ok(())),
            server_frame::Kind::RequestError(error) => {
                let failed = RequestFailed::Refused { code: error.code, message: error.message };
                match self.pending.remove(&error.request_id) {
                    Some(Pending::Subscribe { users, reply }) => {
                        // Refused: what this request added is not held.
                        self.forget(&users);
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(failed));
                        }
                    }
                    Some(Pending::Done(reply)) => {
                        let _ = reply.send(Err(failed));
                    }
                    None => {}
                }
            }
            server_frame::Kind::Kicked(kicked) => return Some(LinkEnd::Final(End::Kicked(kicked))),
            server_frame::Kind::Error(error) => {
                let error = ClientError::Server { code: error.code, message: error.message };
                return Some(if error.retry_later() {
                    LinkEnd::Lost(error)
                } else {
                    LinkEnd::Final(End::Refused(error))
                });
            }
            server_frame::Kind::LogoutOk(_) => return Some(LinkEnd::Final(End::Closed)),
            server_frame::Kind::HeartbeatAck(_)
            | server_frame::Kind::LoginOk(_)
            | server_frame::Kind::LoginError(_) => {}
        }
        None
    }

    fn done(&mut self, request_id: u32, result: Result<(), RequestFailed>) {
        if let Some(Pending::Done(reply)) = self.pending.remove(&request_id) {
            let _ = reply.send(result);
        }
    }

    /// Requests in flight when a link ends fail as disconnected; subscriptions stay held.
    fn fail_pending(&mut self) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Subscribe { reply: Some(reply), .. } => {
                    let _ = reply.send(Err(RequestFailed::Disconnected));
                }
                Pending::Subscribe { reply: None, .. } => {}
                Pending::Done(reply) => {
                    let _ = reply.send(Err(RequestFailed::Disconnected));
                }
            }
        }
    }

    async fn logout(&mut self, link: &mut Link) -> LinkEnd {
        let _ = link.send(ClientFrame { kind: Some(client_frame::Kind::Logout(Logout {})) }).await;
        let _ = tokio::time::timeout(self.config.request_timeout, async {
            while let Some(Ok(frame)) = link.next().await {
                if matches!(frame.kind, Some(server_frame::Kind::LogoutOk(_))) {
                    return;
                }
            }
        })
        .await;
        LinkEnd::Final(End::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_jitters_below_it() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2) };
        assert_eq!(backoff.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff.delay(30, 1.0), Duration::from_secs(2), "capped");
        assert_eq!(backoff.delay(3, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(3, 0.5), Duration::from_millis(200));
    }
}
