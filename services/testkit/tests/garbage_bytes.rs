//! Arbitrary bytes against a real gateway process: every connection must end cleanly (EOF, or
//! an `Error`/`LoginError` frame then EOF) within a few seconds, and the gateway must still log a
//! device in afterwards. One system serves every case: starting four processes per case would
//! dwarf the cases themselves.

use std::{net::SocketAddr, time::Duration};

use bytes::{BufMut, BytesMut};
use presence_proto::{
    framing::ClientCodec,
    v1::{Platform, ServerFrame, server_frame::Kind},
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use testkit::System;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, tcp::OwnedReadHalf},
};
use tokio_util::codec::Decoder;

/// How long the gateway may take to close on its own after the garbage.
const CLOSE_BOUND: Duration = Duration::from_secs(3);

/// Random bytes, or random bodies behind a plausible length prefix (so that the protobuf decoder,
/// not only the length check, sees them), sometimes several in a row, sometimes cut short.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let framed = prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 1..4).prop_map(|bodies| {
        let mut wire = Vec::new();
        for body in bodies {
            wire.put_u32(body.len() as u32);
            wire.extend_from_slice(&body);
        }
        wire
    });
    let truncated = framed.clone().prop_map(|mut wire| {
        wire.pop();
        wire
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..2048), framed, truncated]
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The gateway closed it on its own.
    Closed,
    /// It waited for more bytes (an incomplete frame) and closed once we half-closed.
    ClosedAfterOurEof,
}

/// The next frame from the gateway; `None` once it closed (FIN, or RST: closing with our unread
/// garbage in its buffer makes the kernel reset).
async fn next_frame(read: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<Option<ServerFrame>, String> {
    let mut codec = ClientCodec::new();
    loop {
        if let Some(frame) = codec.decode(buf).map_err(|e| format!("the gateway sent a bad frame: {e}"))? {
            return Ok(Some(frame));
        }
        match read.read_buf(buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

async fn send_garbage(gateway: SocketAddr, bytes: &[u8]) -> Result<End, TestCaseError> {
    let stream =
        TcpStream::connect(gateway).await.map_err(|e| TestCaseError::fail(format!("connect: {e}")))?;
    let (mut read, mut write) = stream.into_split();
    // The gateway may close mid-write: that is an answer, not a failure.
    let _ = write.write_all(bytes).await;
    let mut buf = BytesMut::new();
    let mut we_closed = false;
    loop {
        let bound = if we_closed { CLOSE_BOUND } else { CLOSE_BOUND / 3 };
        match tokio::time::timeout(bound, next_frame(&mut read, &mut buf)).await {
            Ok(Ok(None)) => return Ok(if we_closed { End::ClosedAfterOurEof } else { End::Closed }),
            Ok(Ok(Some(frame))) => match frame.kind {
                Some(Kind::Error(_) | Kind::LoginError(_)) => {}
                other => return Err(TestCaseError::fail(format!("unexpected frame {other:?}"))),
            },
            Ok(Err(err)) => return Err(TestCaseError::fail(err)),
            Err(_) if !we_closed => {
                // An incomplete frame: the gateway rightly waits for the rest (up to its login
                // timeout). Our EOF must end it.
                we_closed = true;
                let _ = write.shutdown().await;
            }
            Err(_) => return Err(TestCaseError::fail("no close within the bound after our EOF")),
        }
    }
}

#[test]
fn arbitrary_bytes_end_in_a_clean_close_and_the_gateway_survives() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut system = runtime.block_on(System::start());
    let gateway = system.gateway_addr;
    let mut runner = TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
    let ends = std::sync::Mutex::new(Vec::new());
    let result = runner.run(&garbage(), |bytes| {
        let end = runtime.block_on(send_garbage(gateway, &bytes))?;
        ends.lock().expect("ends").push(end);
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let ends = ends.into_inner().expect("ends");
    let on_its_own = ends.iter().filter(|e| **e == End::Closed).count();
    println!("{} cases: {on_its_own} closed by the gateway, the rest after our EOF", ends.len());
    runtime.block_on(async {
        system.assert_all_running().await;
        let (_client, ok) = system.login("after-garbage", "phone", Platform::Ios, false).await;
        assert!(!ok.session_id.is_empty());
    });
}
