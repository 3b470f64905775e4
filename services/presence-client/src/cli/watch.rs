//! `presence-cli watch`: a device that subscribes to other users and prints their status as it
//! changes, on the session layer ([`crate::session`]): it reconnects and re-subscribes by itself.

use std::future::Future;

use clap::Args;

use super::{
    clock,
    connect::{ConnectArgs, Ended, describe_kicked, describe_login_ok, describe_status},
};
use crate::{
    ClientError,
    session::{End, Session, SessionConfig, SessionEvent},
};

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub device: ConnectArgs,
    /// Users to subscribe to, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub users: Vec<String>,
    /// Set this custom status for the device's user once logged in.
    #[arg(long)]
    pub status: Option<String>,
}

/// Runs until `stop` (then logs out), a kick, or a login refused for good.
pub async fn run(
    args: &WatchArgs,
    stop: impl Future<Output = ()>,
    mut print: impl FnMut(String),
) -> Result<Ended, ClientError> {
    let login = args.device.login_params()?;
    print(format!(
        "{} watching {} from {} as {}",
        clock(),
        args.users.join(", "),
        args.device.gateway,
        login.user_id
    ));
    let mut session = Session::start(SessionConfig::new(&args.device.gateway, login));
    match session.subscribe(args.users.clone()).await {
        Ok(statuses) => {
            statuses.iter().for_each(|s| print(format!("{} now: {}", clock(), describe_status(s))))
        }
        Err(err) => print(format!("{} subscribe: {err} (held; re-sent at the next login)", clock())),
    }
    if let Some(text) = &args.status {
        match session.set_status(text).await {
            Ok(()) => print(format!("{} custom status set: {text:?}", clock())),
            Err(err) => print(format!("{} custom status not set: {err}", clock())),
        }
    }
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            () = &mut stop => None,
            event = session.next_event() => Some(event),
        };
        let Some(event) = event else {
            session.close().await;
            return Ok(Ended::LoggedOut);
        };
        match event {
            Some(SessionEvent::LoggedIn(ok)) => print(format!("{} {}", clock(), describe_login_ok(&ok))),
            Some(SessionEvent::Status(status)) => print(format!("{} {}", clock(), describe_status(&status))),
            Some(SessionEvent::Disconnected { error, retry_in }) => {
                print(format!("{} disconnected ({error}); retrying in {} ms", clock(), retry_in.as_millis()));
            }
            Some(SessionEvent::Ended(End::Kicked(kicked))) => {
                print(format!("{} {}", clock(), describe_kicked(&kicked)));
                return Ok(Ended::Kicked(kicked));
            }
            Some(SessionEvent::Ended(End::Refused(err))) => return Err(err),
            Some(SessionEvent::Ended(End::Closed)) | None => return Ok(Ended::Closed),
        }
    }
}
