//! The WebSocket transport (RFC 6455) for browsers and mini-programs: an HTTP upgrade at
//! `/v1/connect`, then one `ClientFrame` or `ServerFrame` per binary message, without a length
//! prefix (docs/protocol.md, "WebSocket").
//!
//! tungstenite checks the upgrade request and parses frame headers; the bytes themselves go
//! through the gateway's own [`StreamTransport`](crate::transport::StreamTransport), which keeps
//! no buffer while a device is idle. tungstenite's `WebSocket` keeps a read buffer per connection
//! (128 KiB by default), which at a million idle devices is the whole machine.

use std::io::Cursor;

use bytes::{BufMut, BytesMut};
use presence_proto::{
    MAX_FRAME_LEN,
    framing::FrameError,
    v1::{ClientFrame, ServerFrame},
};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::{
    handshake::{
        machine::TryParse,
        server::{Request, create_response, write_response},
    },
    protocol::frame::{
        FrameHeader,
        coding::{CloseCode, Control, Data, OpCode},
    },
};

use crate::transport::{Closing, Framing, Unit};

/// The one path devices upgrade at.
pub const PATH: &str = "/v1/connect";
/// Most bytes of an upgrade request (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;
/// Control frames carry at most this much (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Which `Origin` headers may connect.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Empty: any origin (the token is the authentication).
    allowed: Vec<String>,
}

impl OriginPolicy {
    pub fn new(allowed: impl IntoIterator<Item = String>) -> Self {
        Self { allowed: allowed.into_iter().map(|o| o.trim().trim_end_matches('/').to_owned()).collect() }
    }

    /// Whether a request with this `Origin` (absent for non-browser clients) may connect.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        self.allowed.is_empty()
            || origin.is_some_and(|o| self.allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
    }
}

/// Why an upgrade was refused; the device got an HTTP error answer (best effort).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("not a WebSocket upgrade: {0}")]
    BadRequest(String),
    #[error("no such path")]
    NotFound,
    #[error("origin not allowed")]
    Forbidden,
    #[error("request headers over {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("closed before the upgrade")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl UpgradeError {
    /// The metric label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden_origin",
            Self::TooLarge => "too_large",
            Self::Closed | Self::Io(_) => "closed",
        }
    }

    fn answer(&self) -> Option<&'static str> {
        match self {
            Self::BadRequest(_) => Some("400 Bad Request"),
            Self::NotFound => Some("404 Not Found"),
            Self::Forbidden => Some("403 Forbidden"),
            Self::TooLarge => Some("431 Request Header Fields Too Large"),
            Self::Closed | Self::Io(_) => None,
        }
    }
}

/// Reads the upgrade request, answers it, and returns the bytes the device sent after it (the
/// start of its first message, if it did not wait for the answer).
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    origins: &OriginPolicy,
) -> Result<BytesMut, UpgradeError> {
    let mut read = BytesMut::with_capacity(1024);
    let (used, request) = loop {
        if io.read_buf(&mut read).await? == 0 {
            return Err(UpgradeError::Closed);
        }
        match Request::try_parse(&read) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if read.len() < MAX_REQUEST => {}
            Ok(None) => return Err(refuse(io, UpgradeError::TooLarge).await),
            Err(err) => return Err(refuse(io, UpgradeError::BadRequest(err.to_string())).await),
        }
    };
    let answer = if request.uri().path() != PATH {
        Err(UpgradeError::NotFound)
    } else {
        create_response(&request).map_err(|err| UpgradeError::BadRequest(err.to_string())).and_then(
            |response| {
                let origin = request.headers().get("origin").and_then(|o| o.to_str().ok());
                if origins.allows(origin) { Ok(response) } else { Err(UpgradeError::Forbidden) }
            },
        )
    };
    let response = match answer {
        Ok(response) => response,
        Err(err) => return Err(refuse(io, err).await),
    };
    let mut head = Vec::with_capacity(160);
    write_response(&mut head, &response).map_err(|err| UpgradeError::BadRequest(err.to_string()))?;
    io.write_all(&head).await?;
    io.flush().await?;
    let _ = read.split_to(used);
    // What follows the request is kept only if there is some.
    Ok(if read.is_empty() { BytesMut::new() } else { BytesMut::from(&read[..]) })
}

/// Answers a refused upgrade with its HTTP status, best effort, and hands the error back.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, err: UpgradeError) -> UpgradeError {
    if let Some(status) = err.answer() {
        let body = err.to_string();
        let answer = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = io.write_all(answer.as_bytes()).await;
        let _ = io.shutdown().await;
    }
    err
}

/// One frame per binary message. Messages split into fragments are put together here (browsers
/// do not split small messages, so this buffer is almost never allocated).
#[derive(Debug, Default)]
pub struct WebSocketFraming {
    /// The fragments of a message not complete yet, unmasked. Boxed: every idle web device's task
    /// holds this struct, and a box is one word where a `Vec` is three.
    #[allow(clippy::box_collection)]
    fragments: Option<Box<Vec<u8>>>,
    /// The device's Close code, echoed in ours; 0 for none.
    peer_close: u16,
    close_sent: bool,
}

thread_local! {
    /// Where a masked payload is unmasked before it is decoded; one per thread.
    static UNMASKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key));
}

fn decode_message(bytes: &[u8]) -> Result<ClientFrame, FrameError> {
    if bytes.is_empty() {
        return Err(FrameError::ZeroLength);
    }
    Ok(ClientFrame::decode(bytes)?)
}

impl Framing for WebSocketFraming {
    fn decode(&mut self, buf: &[u8]) -> Result<Option<(Unit, usize)>, FrameError> {
        let mut cursor = Cursor::new(buf);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(_) => return Err(FrameError::WebSocket("reserved opcode")),
        };
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(FrameError::WebSocket("reserved bits set: no extension was agreed"));
        }
        let Some(mask) = header.mask else {
            return Err(FrameError::WebSocket("client frames must be masked"));
        };
        let is_control = matches!(header.opcode, OpCode::Control(_));
        if is_control && (len > MAX_CONTROL_PAYLOAD || !header.is_final) {
            return Err(FrameError::WebSocket("control frame too long or fragmented"));
        }
        let held = self.fragments.as_ref().map_or(0, |f| f.len());
        if len > (MAX_FRAME_LEN - held) as u64 {
            return Err(FrameError::TooLong(held.saturating_add(usize::try_from(len).unwrap_or(usize::MAX))));
        }
        // Within MAX_FRAME_LEN, so it fits.
        let len = len as usize;
        let start = cursor.position() as usize;
        let Some(payload) = buf.get(start..start + len) else { return Ok(None) };
        let used = start + len;
        let unit = match header.opcode {
            OpCode::Control(Control::Ping) => {
                let mut pong = Vec::with_capacity(2 + len);
                let mut body = Vec::with_capacity(len);
                unmask_into(&mut body, payload, mask);
                write_frame(&mut pong, OpCode::Control(Control::Pong), &body);
                Unit::Control { reply: Some(pong) }
            }
            OpCode::Control(Control::Pong) => Unit::Control { reply: None },
            OpCode::Control(Control::Close) => {
                let mut body = Vec::with_capacity(2);
                unmask_into(&mut body, payload.get(..2).unwrap_or_default(), mask);
                self.peer_close = body.get(..2).map_or(0, |code| u16::from_be_bytes([code[0], code[1]]));
                Unit::Close
            }
            OpCode::Data(Data::Text) => {
                return Err(FrameError::WebSocket("text message: frames travel as binary messages"));
            }
            OpCode::Data(Data::Binary) if self.fragments.is_some() => {
                return Err(FrameError::WebSocket("a new message inside a fragmented one"));
            }
            OpCode::Data(Data::Continue) if self.fragments.is_none() => {
                return Err(FrameError::WebSocket("a continuation without a message"));
            }
            OpCode::Data(Data::Binary) if header.is_final => {
                let frame = UNMASKED.with_borrow_mut(|unmasked| {
                    unmasked.clear();
                    unmask_into(unmasked, payload, mask);
                    decode_message(unmasked)
                })?;
                Unit::Frame(frame)
            }
            OpCode::Data(Data::Binary | Data::Continue) => {
                let fragments = self.fragments.get_or_insert_with(Box::default);
                unmask_into(fragments, payload, mask);
                if header.is_final {
                    let message = self.fragments.take().unwrap_or_default();
                    Unit::Frame(decode_message(&message)?)
                } else {
                    Unit::Control { reply: None }
                }
            }
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(FrameError::WebSocket("reserved opcode"));
            }
        };
        Ok(Some((unit, used)))
    }

    fn encode(&self, frame: &ServerFrame, out: &mut BytesMut) -> Result<(), FrameError> {
        let len = frame.encoded_len();
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLong(len));
        }
        let header = FrameHeader { opcode: OpCode::Data(Data::Binary), ..FrameHeader::default() };
        out.reserve(header.len(len as u64) + len);
        let mut writer = out.writer();
        header.format(len as u64, &mut writer).map_err(|_| FrameError::WebSocket("header"))?;
        let out = writer.into_inner();
        frame.encode(out).map_err(|_| FrameError::TooLong(len))?;
        Ok(())
    }

    fn encode_close(&mut self, closing: Closing, out: &mut BytesMut) {
        if std::mem::replace(&mut self.close_sent, true) {
            return;
        }
        let code = match (self.peer_close, closing) {
            (0, Closing::Normal) => u16::from(CloseCode::Normal),
            (0, Closing::GoingAway) => u16::from(CloseCode::Away),
            (0, Closing::ProtocolError) => u16::from(CloseCode::Protocol),
            (echoed, _) => echoed,
        };
        let mut frame = Vec::with_capacity(4);
        write_frame(&mut frame, OpCode::Control(Control::Close), &code.to_be_bytes());
        out.extend_from_slice(&frame);
    }
}

/// An unmasked (server) frame with a short payload.
fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::v1::{Heartbeat, HeartbeatAck, client_frame, server_frame};

    /// A client frame as a browser sends it: masked.
    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut wire = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => wire.push(0x80 | n as u8),
            n if n < 65536 => {
                wire.push(0x80 | 126);
                wire.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                wire.push(0x80 | 127);
                wire.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        wire.extend_from_slice(&mask);
        unmask_into(&mut wire, payload, mask);
        wire
    }

    fn heartbeat_bytes(t: u64) -> Vec<u8> {
        ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: t })) }
            .encode_to_vec()
    }

    fn decode_all(framing: &mut WebSocketFraming, mut wire: &[u8]) -> Result<Vec<Unit>, FrameError> {
        let mut units = Vec::new();
        while let Some((unit, used)) = framing.decode(wire)? {
            units.push(unit);
            wire = &wire[used..];
        }
        assert!(wire.is_empty(), "{} bytes left", wire.len());
        Ok(units)
    }

    fn heartbeat_time(unit: &Unit) -> u64 {
        match unit {
            Unit::Frame(ClientFrame { kind: Some(client_frame::Kind::Heartbeat(h)) }) => h.client_time_ms,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_binary_message_is_one_frame_and_incomplete_ones_wait() {
        let wire = masked(0x2, true, &heartbeat_bytes(7));
        let mut framing = WebSocketFraming::default();
        for cut in 0..wire.len() {
            assert!(framing.decode(&wire[..cut]).unwrap().is_none(), "decoded from {cut} bytes");
        }
        let (unit, used) = framing.decode(&wire).unwrap().unwrap();
        assert_eq!((heartbeat_time(&unit), used), (7, wire.len()));
    }

    #[test]
    fn fragments_and_interleaved_pings_make_one_message() {
        let body = heartbeat_bytes(1_700_000_000_000);
        let (a, b) = body.split_at(3);
        let mut wire = masked(0x2, false, a);
        wire.extend(masked(0x9, true, b"hi"));
        wire.extend(masked(0x0, true, b));
        let mut framing = WebSocketFraming::default();
        let units = decode_all(&mut framing, &wire).unwrap();
        assert!(matches!(units[0], Unit::Control { reply: None }));
        let Unit::Control { reply: Some(pong) } = &units[1] else { panic!("{:?}", units[1]) };
        assert_eq!(pong, &[0x8A, 2, b'h', b'i'], "an unmasked pong with the ping's payload");
        assert_eq!(heartbeat_time(&units[2]), 1_700_000_000_000);
        assert!(framing.fragments.is_none(), "the fragment buffer is freed");
    }

    #[test]
    fn what_breaks_the_rules_is_refused() {
        let frame = heartbeat_bytes(1);
        let cases: [(&str, Vec<u8>); 7] = [
            ("text", masked(0x1, true, b"hello")),
            ("unmasked", {
                let mut w = masked(0x2, true, &frame);
                w[1] &= 0x7F;
                w.drain(2..6);
                w
            }),
            ("empty", masked(0x2, true, b"")),
            ("not a ClientFrame", masked(0x2, true, &[0xFF, 0xFF, 0xFF])),
            ("continuation first", masked(0x0, true, &frame)),
            ("reserved bit", {
                let mut w = masked(0x2, true, &frame);
                w[0] |= 0x40;
                w
            }),
            ("too long", masked(0x2, true, &vec![0; MAX_FRAME_LEN + 1])),
        ];
        for (what, wire) in cases {
            let refused = WebSocketFraming::default().decode(&wire);
            let err = refused.err().unwrap_or_else(|| panic!("{what} accepted"));
            assert!(err.code().is_some(), "{what}: {err}");
        }
    }

    #[test]
    fn a_too_long_message_is_refused_from_its_header() {
        let wire = masked(0x2, true, &vec![0; MAX_FRAME_LEN + 1]);
        let refused = WebSocketFraming::default().decode(&wire[..14]);
        assert!(matches!(refused, Err(FrameError::TooLong(_))), "{refused:?}");
    }

    #[test]
    fn a_close_is_echoed_once() {
        let mut framing = WebSocketFraming::default();
        let units = decode_all(&mut framing, &masked(0x8, true, &1001u16.to_be_bytes())).unwrap();
        assert!(matches!(units[..], [Unit::Close]));
        let mut out = BytesMut::new();
        framing.encode_close(Closing::Normal, &mut out);
        framing.encode_close(Closing::Normal, &mut out);
        assert_eq!(&out[..], &[0x88, 2, 0x03, 0xE9]);
    }

    #[test]
    fn server_frames_are_unmasked_binary_messages() {
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::HeartbeatAck(HeartbeatAck { server_time_ms: 1_700_000_000_000 })),
        };
        let mut out = BytesMut::new();
        WebSocketFraming::default().encode(&frame, &mut out).unwrap();
        let body = frame.encode_to_vec();
        assert_eq!(out[0], 0x82);
        assert_eq!(usize::from(out[1]), body.len(), "short length, no mask bit");
        assert_eq!(&out[2..], &body[..]);
    }

    #[test]
    fn origins_are_matched_exactly_when_a_list_is_set() {
        let any = OriginPolicy::default();
        assert!(any.allows(None) && any.allows(Some("https://x.example")));
        let listed = OriginPolicy::new(["https://chat.example/".to_owned()]);
        assert!(listed.allows(Some("https://chat.example")));
        assert!(!listed.allows(Some("https://evil.example")));
        assert!(!listed.allows(None), "a browser always sends Origin; its absence is not on the list");
    }
}
