//! How frames cross a device connection. The session logic ([`crate::connection`]) sees only
//! [`FrameTransport`]; [`StreamTransport`] carries length-prefixed frames over TCP or TLS, and a
//! WebSocket transport (one frame per binary message) implements the same trait.
//!
//! Devices are idle almost all the time, so an idle transport holds no buffer: reads go to a
//! buffer on the worker's stack and only the bytes of an incomplete frame are kept; a frame is
//! written straight to the socket and only what the socket did not take is kept.

use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll, Waker, ready},
};

use bytes::{Buf, BytesMut};
use presence_proto::{
    framing::{FrameError, decode_frame, encode_frame},
    v1::{ClientFrame, ServerFrame},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read per call. It lives on the stack of the polling thread, never in a connection.
const READ_CHUNK: usize = 8 * 1024;

/// One device connection's frames, both ways.
pub trait FrameTransport: Send + Unpin {
    /// The next frame from the device; `None` once it closed its side.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ClientFrame, FrameError>>>;

    /// Sends a frame without waiting: what the socket does not take now stays queued for
    /// [`Self::poll_flush`]. An error means the connection is unusable.
    fn send(&mut self, frame: &ServerFrame) -> Result<(), FrameError>;

    /// Frames sent but not yet taken by the socket (at least 1 while any byte is queued).
    fn queued_frames(&self) -> usize;

    /// Writes what is queued; ready when nothing is.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Flushes, then closes the sending side.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

thread_local! {
    /// Where frames are encoded before they go to a socket; one per thread.
    static ENCODE_SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Length-prefixed frames over a byte stream (TCP, TLS).
pub struct StreamTransport<S> {
    io: S,
    /// The start of a frame not complete yet; empty, without allocation, between frames.
    partial: BytesMut,
    /// Bytes the socket has not taken; empty, without allocation, while the device reads.
    unsent: BytesMut,
    unsent_frames: usize,
    /// A layer under us (TLS) may hold written bytes until flushed.
    flush_due: bool,
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> StreamTransport<S> {
    pub fn new(io: S) -> Self {
        Self { io, partial: BytesMut::new(), unsent: BytesMut::new(), unsent_frames: 0, flush_due: false }
    }

    /// A frame already complete in `partial`.
    fn buffered_frame(&mut self) -> Result<Option<ClientFrame>, FrameError> {
        let Some((frame, used)) = decode_frame(&self.partial)? else { return Ok(None) };
        self.partial.advance(used);
        if self.partial.is_empty() {
            self.partial = BytesMut::new();
        }
        Ok(Some(frame))
    }

    /// Takes `read` (fresh bytes): returns its first frame if complete and keeps the rest.
    fn take_read(&mut self, read: &[u8]) -> Result<Option<ClientFrame>, FrameError> {
        if !self.partial.is_empty() {
            self.partial.extend_from_slice(read);
            return self.buffered_frame();
        }
        // The common case, a whole frame in one read: decoded in place, nothing kept.
        let (frame, used) = match decode_frame(read)? {
            Some((frame, used)) => (Some(frame), used),
            None => (None, 0),
        };
        let rest = &read[used..];
        if !rest.is_empty() {
            // Its header is checked by the next decode, before any more is read.
            self.partial.extend_from_slice(rest);
        }
        Ok(frame)
    }

    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // An opportunistic write: if the socket is full, the bytes are queued and the real
        // waker registers in `poll_flush`.
        let mut cx = Context::from_waker(Waker::noop());
        let mut written = 0;
        while written < bytes.len() {
            match Pin::new(&mut self.io).poll_write(&mut cx, &bytes[written..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => break,
            }
        }
        Ok(written)
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> FrameTransport for StreamTransport<S> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ClientFrame, FrameError>>> {
        if let Some(frame) = self.buffered_frame().transpose() {
            return Poll::Ready(Some(frame));
        }
        loop {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            if let Err(err) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                return Poll::Ready(Some(Err(err.into())));
            }
            let read = buf.filled();
            if read.is_empty() {
                // The device closed its side; an incomplete frame dies with the connection.
                return Poll::Ready(None);
            }
            if let Some(frame) = self.take_read(read).transpose() {
                return Poll::Ready(Some(frame));
            }
        }
    }

    fn send(&mut self, frame: &ServerFrame) -> Result<(), FrameError> {
        if !self.unsent.is_empty() {
            // Order: behind what waits already.
            encode_frame(frame, &mut self.unsent)?;
            self.unsent_frames += 1;
            return Ok(());
        }
        ENCODE_SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            encode_frame(frame, scratch)?;
            let written = self.write_now(scratch)?;
            if written < scratch.len() {
                self.unsent.extend_from_slice(&scratch[written..]);
                self.unsent_frames = 1;
            }
            self.flush_due = true;
            Ok(())
        })
    }

    fn queued_frames(&self) -> usize {
        self.unsent_frames
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unsent.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.unsent))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.unsent.advance(n),
            }
        }
        if self.unsent_frames > 0 {
            self.unsent = BytesMut::new();
            self.unsent_frames = 0;
        }
        if self.flush_due {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_due = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::v1::{Heartbeat, HeartbeatAck, client_frame, server_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn heartbeat(t: u64) -> Vec<u8> {
        let mut wire = BytesMut::new();
        let frame =
            ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: t })) };
        encode_frame(&frame, &mut wire).unwrap();
        wire.to_vec()
    }

    async fn next(transport: &mut StreamTransport<tokio::io::DuplexStream>) -> Option<ClientFrame> {
        std::future::poll_fn(|cx| transport.poll_frame(cx)).await.map(|frame| frame.unwrap())
    }

    #[tokio::test]
    async fn frames_split_and_batched_anyhow_arrive_whole_and_in_order() {
        let wire: Vec<u8> = (0..5).flat_map(heartbeat).collect();
        for split in [1, 3, 4, 5, 7, wire.len() / 2, wire.len()] {
            let (mut device, gateway) = tokio::io::duplex(64 * 1024);
            let mut transport = StreamTransport::new(gateway);
            for piece in wire.chunks(split) {
                device.write_all(piece).await.unwrap();
            }
            drop(device);
            let mut times = Vec::new();
            while let Some(frame) = next(&mut transport).await {
                let Some(client_frame::Kind::Heartbeat(h)) = frame.kind else { panic!("{frame:?}") };
                times.push(h.client_time_ms);
            }
            assert_eq!(times, [0, 1, 2, 3, 4], "pieces of {split} bytes");
            assert_eq!(transport.partial.capacity(), 0, "a buffer kept after the last frame");
        }
    }

    #[tokio::test]
    async fn an_oversized_header_is_refused_before_its_body_arrives() {
        let (mut device, gateway) = tokio::io::duplex(1024);
        let mut transport = StreamTransport::new(gateway);
        let mut wire = heartbeat(1);
        wire.extend_from_slice(&u32::MAX.to_be_bytes());
        device.write_all(&wire).await.unwrap();
        assert!(next(&mut transport).await.is_some());
        let refused = std::future::poll_fn(|cx| transport.poll_frame(cx)).await;
        assert!(matches!(refused, Some(Err(FrameError::TooLong(_)))), "{refused:?}");
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_is_queued_then_flushed_in_order() {
        // A pipe of 64 bytes: the third ack does not fit until the device reads.
        let (mut device, gateway) = tokio::io::duplex(64);
        let mut transport = StreamTransport::new(gateway);
        let ack = |t| ServerFrame {
            kind: Some(server_frame::Kind::HeartbeatAck(HeartbeatAck { server_time_ms: t })),
        };
        let mut expected = BytesMut::new();
        for t in 0..10 {
            transport.send(&ack(1_700_000_000_000 + t)).unwrap();
            encode_frame(&ack(1_700_000_000_000 + t), &mut expected).unwrap();
        }
        assert!(transport.queued_frames() >= 2, "{}", transport.queued_frames());
        let reader = tokio::spawn(async move {
            let mut got = vec![0; expected.len()];
            device.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected.to_vec());
        });
        std::future::poll_fn(|cx| transport.poll_flush(cx)).await.unwrap();
        assert_eq!(transport.queued_frames(), 0);
        assert_eq!(transport.unsent.capacity(), 0, "a buffer kept after the flush");
        reader.await.unwrap();
    }
}
