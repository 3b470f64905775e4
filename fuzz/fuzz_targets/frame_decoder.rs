//! Arbitrary bytes, arriving in arbitrary pieces, through both ends of the client-protocol
//! codec: decoding must end in a frame, "need more" or an error, never a panic, and whatever
//! decodes must encode again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use presence_proto::framing::{ClientCodec, FrameError, HEADER_LEN, ServerCodec, encode_frame};
use tokio_util::codec::Decoder;

/// Feeds `wire` in pieces of `piece` bytes, decoding after each, until an error or the end.
fn drive<D, M>(mut codec: D, wire: &[u8], piece: usize)
where
    D: Decoder<Item = M, Error = FrameError>,
    M: prost::Message,
{
    let mut buf = BytesMut::new();
    for chunk in wire.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(message)) => {
                    assert!(buf.len() < before - HEADER_LEN + 1, "a frame consumed its bytes");
                    let mut again = BytesMut::new();
                    // A body of unknown fields only decodes to an empty message: not framable.
                    match encode_frame(&message, &mut again) {
                        Ok(()) | Err(FrameError::ZeroLength) => {}
                        Err(err) => panic!("a decoded frame does not encode: {err}"),
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, wire)) = data.split_first() else { return };
    let piece = usize::from(first).max(1);
    drive(ServerCodec::new(), wire, piece);
    drive(ClientCodec::new(), wire, piece);
});
