//! The client protocol's framing: a 4-byte big-endian length `N` (1..=[`MAX_FRAME_LEN`]) followed
//! by `N` bytes of one protobuf message (`docs/protocol.md`).
//!
//! One codec serves both ends: the gateway decodes [`ClientFrame`]s and encodes [`ServerFrame`]s
//! ([`ServerCodec`]); clients do the opposite ([`ClientCodec`]).

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{
    MAX_FRAME_LEN,
    codes::ErrorFrameCode,
    v1::{ClientFrame, ServerFrame},
};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a byte stream is not a valid frame stream. All but `Io` are the peer's fault.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("zero-length frame")]
    ZeroLength,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLong(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The WebSocket transport's own rules were broken (a text message, an unmasked frame, ...).
    #[error("WebSocket: {0}")]
    WebSocket(&'static str),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The `Error.code` a device gets for this error; `None` for `Io`, which is no protocol error
    /// (the connection is simply gone).
    pub fn code(&self) -> Option<ErrorFrameCode> {
        match self {
            Self::ZeroLength => Some(ErrorFrameCode::ZeroLength),
            Self::TooLong(_) => Some(ErrorFrameCode::TooLong),
            Self::Malformed(_) | Self::WebSocket(_) => Some(ErrorFrameCode::Malformed),
            Self::Io(_) => None,
        }
    }
}

/// Length-prefixed protobuf codec that decodes `In` and encodes `Out`.
pub struct FrameCodec<In, Out> {
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    pub fn new() -> Self {
        Self { _types: PhantomData }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, Out> std::fmt::Debug for FrameCodec<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameCodec")
    }
}

/// The gateway's side: reads `ClientFrame`, writes `ServerFrame`.
pub type ServerCodec = FrameCodec<ClientFrame, ServerFrame>;
/// A device's side: reads `ServerFrame`, writes `ClientFrame`.
pub type ClientCodec = FrameCodec<ServerFrame, ClientFrame>;

impl<In: prost::Message + Default, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        let Some(len) = body_len(src)? else { return Ok(None) };
        if src.len() < HEADER_LEN + len {
            // Grow only to what this frame needs: idle connections keep small buffers.
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let body = src.split_to(len);
        Ok(Some(In::decode(body)?))
    }
}

/// The body length the frame at the start of `src` announces; `None` until its header is complete.
pub fn body_len(src: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(&[a, b, c, d]) = src.get(..HEADER_LEN) else { return Ok(None) };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len == 0 {
        return Err(FrameError::ZeroLength);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    Ok(Some(len))
}

/// Decodes the frame at the start of `src` without copying it; returns the message and the bytes
/// it took, or `None` while the frame is incomplete.
pub fn decode_frame<M: prost::Message + Default>(src: &[u8]) -> Result<Option<(M, usize)>, FrameError> {
    let Some(len) = body_len(src)? else { return Ok(None) };
    let Some(body) = src.get(HEADER_LEN..HEADER_LEN + len) else { return Ok(None) };
    Ok(Some((M::decode(body)?, HEADER_LEN + len)))
}

impl<In, Out: prost::Message> Encoder<Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(&item, dst)
    }
}

/// Appends one frame (length prefix and body) to `dst`.
pub fn encode_frame<M: prost::Message>(message: &M, dst: &mut BytesMut) -> Result<(), FrameError> {
    let len = message.encoded_len();
    if len == 0 {
        // An empty message (e.g. a frame with no `kind`) cannot be framed: N = 0 is an error.
        return Err(FrameError::ZeroLength);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    dst.reserve(HEADER_LEN + len);
    dst.put_u32(len as u32);
    message.encode(dst).map_err(|err| FrameError::Io(std::io::Error::other(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Heartbeat, HeartbeatAck, Login, Platform, client_frame, server_frame};
    use proptest::prelude::*;
    use prost::Message;

    fn login() -> ClientFrame {
        ClientFrame {
            kind: Some(client_frame::Kind::Login(Login {
                user_id: "u1".into(),
                device_id: "d1".into(),
                platform: Platform::Ios as i32,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn round_trips_a_frame_split_anywhere() {
        let mut client = ClientCodec::new();
        let mut wire = BytesMut::new();
        client.encode(login(), &mut wire).unwrap();
        client
            .encode(
                ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: 7 })) },
                &mut wire,
            )
            .unwrap();
        let whole = wire.freeze();
        for split in 0..whole.len() {
            let mut server = ServerCodec::new();
            let mut buf = BytesMut::from(&whole[..split]);
            let mut got = Vec::new();
            while let Some(f) = server.decode(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&whole[split..]);
            while let Some(f) = server.decode(&mut buf).unwrap() {
                got.push(f);
            }
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0], login());
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn server_frames_encode_with_a_big_endian_length() {
        let mut codec = ServerCodec::new();
        let mut wire = BytesMut::new();
        let ack =
            ServerFrame { kind: Some(server_frame::Kind::HeartbeatAck(HeartbeatAck { server_time_ms: 1 })) };
        codec.encode(ack.clone(), &mut wire).unwrap();
        let len = ack.encoded_len();
        assert_eq!(&wire[..4], &(len as u32).to_be_bytes());
        assert_eq!(wire.len(), 4 + len);
    }

    #[test]
    fn zero_and_oversized_lengths_are_errors() {
        let mut codec = ServerCodec::new();
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0, 1][..]);
        assert!(matches!(codec.decode(&mut zero), Err(FrameError::ZeroLength)));
        let mut big = BytesMut::from(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes()[..]);
        assert!(matches!(codec.decode(&mut big), Err(FrameError::TooLong(n)) if n == MAX_FRAME_LEN + 1));
        // The maximum itself is allowed: the decoder waits for the body.
        let mut max = BytesMut::from(&(MAX_FRAME_LEN as u32).to_be_bytes()[..]);
        assert!(codec.decode(&mut max).unwrap().is_none());
    }

    #[test]
    fn garbage_bodies_are_malformed() {
        let mut codec = ServerCodec::new();
        let mut wire = BytesMut::from(&[0u8, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(codec.decode(&mut wire), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn empty_messages_are_not_encoded() {
        let mut codec = ClientCodec::new();
        let mut wire = BytesMut::new();
        assert!(matches!(codec.encode(ClientFrame { kind: None }, &mut wire), Err(FrameError::ZeroLength)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = ServerCodec::new();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            let mut codec = ClientCodec::new();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_length_never_panic(body in proptest::collection::vec(any::<u8>(), 1..256)) {
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.extend_from_slice(&body);
            let _ = ServerCodec::new().decode(&mut buf);
        }
    }
}
