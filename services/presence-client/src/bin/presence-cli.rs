//! presence-cli: try presence from a terminal. See `presence-cli --help` and the README.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use presence_client::{
    ClientError,
    cli::{Cli, Command, connect, internal_token, receive, rest, token, watch},
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Token(args) => {
            println!("{}", token::token(&args).context("minting the token")?);
        }
        Command::InternalToken(args) => {
            println!("{}", internal_token::internal_token(&args).context("minting the caller token")?);
        }
        Command::Connect(args) => {
            let ended = connect::run(&args, ctrl_c(), |line| println!("{line}")).await;
            return exit_code(ended, &args.gateway);
        }
        Command::Watch(args) => {
            let ended = watch::run(&args, ctrl_c(), |line| println!("{line}")).await;
            return exit_code(ended, &args.device.gateway);
        }
        Command::Query(args) => {
            let client = rest::RestClient::new(&args.rest)?;
            let response = client.query(&args.users, args.detail).await?;
            print!("{}", rest::query_table(&response, now_ms()));
        }
        Command::Kick(args) => {
            let client = rest::RestClient::new(&args.rest)?;
            let response = client.kick(&args.user, &args.platforms).await?;
            println!("{}", rest::kick_summary(&args.user, &response));
        }
        Command::Receive(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            let path = if args.path.starts_with('/') { args.path.clone() } else { format!("/{}", args.path) };
            println!("receiving callbacks on http://{}{path} (Ctrl-C stops)", listener.local_addr()?);
            let router = receive::router(&path, &args.secret, std::sync::Arc::new(|line| println!("{line}")));
            receive::serve(listener, router, ctrl_c()).await.context("serving callbacks")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// 0 after a Ctrl-C logout; 2 when kicked; 1 when the login is refused or the connection breaks.
fn exit_code(ended: Result<connect::Ended, ClientError>, gateway: &str) -> anyhow::Result<ExitCode> {
    match ended {
        Ok(connect::Ended::LoggedOut) => Ok(ExitCode::SUCCESS),
        Ok(connect::Ended::Kicked(kicked)) => {
            eprintln!("this device was forced offline: {}", connect::describe_kicked(&kicked));
            Ok(ExitCode::from(2))
        }
        Ok(connect::Ended::Closed) => {
            eprintln!("the gateway closed the connection");
            Ok(ExitCode::FAILURE)
        }
        Err(ClientError::Login { code, message }) => {
            eprintln!("login refused: {code}: {message}");
            Ok(ExitCode::FAILURE)
        }
        Err(ClientError::Kicked(kicked)) => {
            eprintln!("this device was forced offline: {}", connect::describe_kicked(&kicked));
            Ok(ExitCode::from(2))
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("connecting to {gateway}"))),
    }
}

async fn ctrl_c() {
    // If the handler cannot be installed, run until the process is killed.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
