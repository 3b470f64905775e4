//! How frames cross a device connection. The session logic ([`crate::connection`]) sees only
//! [`FrameTransport`]. [`StreamTransport`] carries frames over a byte stream (TCP or TLS); a
//! [`Framing`] says how they are delimited there: a length prefix ([`LengthPrefixed`]) or one
//! WebSocket binary message each ([`crate::websocket::WebSocketFraming`]).
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

/// What a device sent.
#[derive(Debug)]
pub enum Received {
    Frame(ClientFrame),
    /// Traffic that is no frame (a WebSocket ping or pong): the device is alive.
    Activity,
}

/// Why the gateway closes a connection, for transports that say it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    Normal,
    /// The gateway shuts down.
    GoingAway,
    /// The device broke the protocol.
    ProtocolError,
}

/// One device connection's frames, both ways.
pub trait FrameTransport: Send + Unpin {
    /// What the device sent next; `None` once it closed its side.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Received, FrameError>>>;

    /// Sends a frame without waiting: what the socket does not take now stays queued for
    /// [`Self::poll_flush`]. An error means the connection is unusable.
    fn send(&mut self, frame: &ServerFrame) -> Result<(), FrameError>;

    /// Frames sent but not yet taken by the socket (at least 1 while any byte is queued).
    fn queued_frames(&self) -> usize;

    /// Writes what is queued; ready when nothing is.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Says why (where the transport can), flushes, then closes the sending side.
    fn poll_close(&mut self, cx: &mut Context<'_>, closing: Closing) -> Poll<io::Result<()>>;
}

/// What [`Framing::decode`] found at the start of the bytes read.
#[derive(Debug)]
pub enum Unit {
    Frame(ClientFrame),
    /// No frame, but a sign of life; `reply` (a WebSocket pong) is written back.
    Control {
        reply: Option<Vec<u8>>,
    },
    /// The device says it closes (a WebSocket Close): nothing more is read.
    Close,
}

/// How frames are delimited on a byte stream.
pub trait Framing: Send + Unpin {
    /// The unit at the start of `buf` and the bytes it took; `None` while it is incomplete.
    fn decode(&mut self, buf: &[u8]) -> Result<Option<(Unit, usize)>, FrameError>;

    /// Appends `frame`, framed, to `out`.
    fn encode(&self, frame: &ServerFrame, out: &mut BytesMut) -> Result<(), FrameError>;

    /// Appends what tells the device that we close (once), if the framing has such a thing.
    fn encode_close(&mut self, closing: Closing, out: &mut BytesMut);
}

/// The client protocol's own framing: a 4-byte length, then the message.
#[derive(Debug, Default, Clone, Copy)]
pub struct LengthPrefixed;

impl Framing for LengthPrefixed {
    fn decode(&mut self, buf: &[u8]) -> Result<Option<(Unit, usize)>, FrameError> {
        Ok(decode_frame(buf)?.map(|(frame, used)| (Unit::Frame(frame), used)))
    }

    fn encode(&self, frame: &ServerFrame, out: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(frame, out)
    }

    fn encode_close(&mut self, _: Closing, _: &mut BytesMut) {}
}

thread_local! {
    /// Where frames are encoded before they go to a socket; one per thread.
    static ENCODE_SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Frames over a byte stream (TCP, TLS), delimited by `F`.
pub struct StreamTransport<S, F = LengthPrefixed> {
    io: S,
    framing: F,
    /// Bytes kept between calls; `None` while there are none, which is nearly always.
    spill: Option<Box<Spill>>,
    /// A layer under us (TLS) may hold written bytes until flushed.
    flush_due: bool,
    /// The device said it closes: nothing more is read.
    peer_closed: bool,
}

/// What an idle connection does not hold: boxed, so that the task of every connection is a
/// pointer smaller than two buffers.
#[derive(Default)]
struct Spill {
    /// The start of a unit not complete yet.
    partial: BytesMut,
    /// Bytes the socket has not taken.
    unsent: BytesMut,
    unsent_frames: usize,
}

impl Spill {
    fn is_empty(&self) -> bool {
        self.partial.is_empty() && self.unsent.is_empty()
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> StreamTransport<S> {
    pub fn new(io: S) -> Self {
        Self::framed(io, LengthPrefixed, BytesMut::new())
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin, F: Framing> StreamTransport<S, F> {
    /// A transport whose first bytes, already read (e.g. behind a WebSocket handshake), are `read`.
    pub fn framed(io: S, framing: F, read: BytesMut) -> Self {
        let spill = (!read.is_empty()).then(|| Box::new(Spill { partial: read, ..Spill::default() }));
        Self { io, framing, spill, flush_due: false, peer_closed: false }
    }

    fn spill(&mut self) -> &mut Spill {
        self.spill.get_or_insert_with(Box::default)
    }

    /// Frees the spill once it holds nothing.
    fn release_spill(&mut self) {
        if self.spill.as_ref().is_some_and(|spill| spill.is_empty()) {
            self.spill = None;
        }
    }

    fn has_partial(&self) -> bool {
        self.spill.as_ref().is_some_and(|spill| !spill.partial.is_empty())
    }

    /// A unit already complete in the kept bytes.
    fn buffered_unit(&mut self) -> Result<Option<Unit>, FrameError> {
        let Some(spill) = self.spill.as_mut().filter(|spill| !spill.partial.is_empty()) else {
            return Ok(None);
        };
        let Some((unit, used)) = self.framing.decode(&spill.partial)? else { return Ok(None) };
        spill.partial.advance(used);
        if spill.partial.is_empty() {
            spill.partial = BytesMut::new();
        }
        self.release_spill();
        Ok(Some(unit))
    }

    /// Takes `read` (fresh bytes): returns its first unit if complete and keeps the rest.
    fn take_read(&mut self, read: &[u8]) -> Result<Option<Unit>, FrameError> {
        if self.has_partial() {
            self.spill().partial.extend_from_slice(read);
            return self.buffered_unit();
        }
        // The common case, a whole frame in one read: decoded in place, nothing kept.
        let (unit, used) = match self.framing.decode(read)? {
            Some((unit, used)) => (Some(unit), used),
            None => (None, 0),
        };
        let rest = &read[used..];
        if !rest.is_empty() {
            // Its header is checked by the next decode, before any more is read.
            self.spill().partial.extend_from_slice(rest);
        }
        Ok(unit)
    }

    /// What the device sent, once its unit is decoded; control replies are written on the way.
    fn receive(&mut self, unit: Unit) -> Option<Result<Received, FrameError>> {
        match unit {
            Unit::Frame(frame) => Some(Ok(Received::Frame(frame))),
            Unit::Control { reply } => {
                if let Some(reply) = reply
                    && let Err(err) = self.write_or_queue(&reply)
                {
                    return Some(Err(err.into()));
                }
                Some(Ok(Received::Activity))
            }
            Unit::Close => {
                self.peer_closed = true;
                if let Some(spill) = self.spill.as_mut() {
                    spill.partial = BytesMut::new();
                }
                self.release_spill();
                None
            }
        }
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

    /// Writes one framed unit, or queues it behind what waits already.
    fn write_or_queue(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush_due = true;
        if let Some(spill) = self.spill.as_mut().filter(|spill| !spill.unsent.is_empty()) {
            spill.unsent.extend_from_slice(bytes);
            spill.unsent_frames += 1;
            return Ok(());
        }
        let written = self.write_now(bytes)?;
        if written < bytes.len() {
            let spill = self.spill();
            spill.unsent.extend_from_slice(&bytes[written..]);
            spill.unsent_frames = 1;
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin, F: Framing> FrameTransport for StreamTransport<S, F> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Received, FrameError>>> {
        if self.peer_closed {
            return Poll::Ready(None);
        }
        match self.buffered_unit() {
            Ok(Some(unit)) => return Poll::Ready(self.receive(unit)),
            Ok(None) => {}
            Err(err) => return Poll::Ready(Some(Err(err))),
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
            match self.take_read(read) {
                Ok(Some(unit)) => return Poll::Ready(self.receive(unit)),
                Ok(None) => {}
                Err(err) => return Poll::Ready(Some(Err(err))),
            }
        }
    }

    fn send(&mut self, frame: &ServerFrame) -> Result<(), FrameError> {
        ENCODE_SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            self.framing.encode(frame, scratch)?;
            Ok(self.write_or_queue(scratch)?)
        })
    }

    fn queued_frames(&self) -> usize {
        self.spill.as_ref().map_or(0, |spill| spill.unsent_frames)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(spill) = self.spill.as_mut() {
            while !spill.unsent.is_empty() {
                match ready!(Pin::new(&mut self.io).poll_write(cx, &spill.unsent))? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    n => spill.unsent.advance(n),
                }
            }
            if spill.unsent_frames > 0 {
                spill.unsent = BytesMut::new();
                spill.unsent_frames = 0;
            }
        }
        self.release_spill();
        if self.flush_due {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_due = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, closing: Closing) -> Poll<io::Result<()>> {
        let written = ENCODE_SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            self.framing.encode_close(closing, scratch);
            if scratch.is_empty() { Ok(()) } else { self.write_or_queue(scratch) }
        });
        written?;
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
        match std::future::poll_fn(|cx| transport.poll_frame(cx)).await? {
            Ok(Received::Frame(frame)) => Some(frame),
            other => panic!("{other:?}"),
        }
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
            assert!(transport.spill.is_none(), "a buffer kept after the last frame");
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
        assert!(transport.spill.is_none(), "a buffer kept after the flush");
        reader.await.unwrap();
    }
}
