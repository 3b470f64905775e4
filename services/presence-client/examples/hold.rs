//! Opens many logged-in connections and holds them idle (heartbeating rarely): a quick way to
//! measure a gateway's memory per idle connection.
//!
//! `cargo run -p presence-client --example hold -- <addr> <count> <token_secret>`

use std::time::Duration;

use presence_client::{Client, LoginParams, mint_token};
use presence_proto::v1::Platform;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7100".into());
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
    let secret = args.next().unwrap_or_else(|| "secret".into());
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let user = format!("hold-{i}");
        let token = mint_token(&secret, &user, None, Duration::from_secs(3600))?;
        let mut client = Client::connect(addr.as_str()).await?;
        client.login(LoginParams::new(&user, "d", Platform::Linux, token)).await?;
        clients.push(client);
    }
    println!("holding {count} connections");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(clients);
    Ok(())
}
