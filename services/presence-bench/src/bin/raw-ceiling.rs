//! The raw TCP ceiling: accepts a connection, reads one length-prefixed frame, answers one
//! frame, and holds the connection until the client closes it. No login can beat this on the
//! same box; scripts/bench-login.sh reports our login rate as a ratio to it.
//!
//! Usage: raw-ceiling [ADDR]   (default 127.0.0.1:7190)

use presence_bench::wire::{read_frame, write_frame};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7190".to_owned());
    let listener = presence_bench::connect::listen(addr.parse()?, 8192)?;
    eprintln!("raw-ceiling listening on {}", listener.local_addr()?);
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            if read_frame(&mut stream, 65_536).await.is_ok() && write_frame(&mut stream, b"ok").await.is_ok()
            {
                let mut sink = [0u8; 64];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        });
    }
}
