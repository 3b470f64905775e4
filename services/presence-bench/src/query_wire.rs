//! The registry's `Query` call as a load generator makes it: each request encoded once, before the
//! clock starts, and each reply checked by walking its fields instead of building 500 results.
//! redis-benchmark does the same for MGET (it frames the reply, it does not build values), so the
//! client's CPU, which shares the cores with the server, is as close to the peer's as it can be.

use bytes::{Buf, BufMut, Bytes};
use presence_proto::v1::QueryRequest;
use prost::{
    Message,
    encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field},
};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// The method's path, as tonic's generated client names it.
pub const QUERY_PATH: &str = "/presence.v1.PresenceRegistry/Query";

/// A `QueryRequest`, encoded.
#[derive(Clone)]
pub struct EncodedQuery(Bytes);

impl EncodedQuery {
    pub fn new(request: &QueryRequest) -> Self {
        Self(request.encode_to_vec().into())
    }
}

/// A reply that is not a well-framed `QueryReply`.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    #[error("a result runs past the end of the reply")]
    Truncated,
}

/// What the load generator keeps of a `QueryReply`: how many results it holds, and its position.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplySummary {
    pub results: usize,
    pub as_of_seq: u64,
}

impl ReplySummary {
    /// Walks the reply's top-level fields. Each result must be a well-framed length-delimited
    /// field; its inside is not read.
    pub fn read(mut buf: impl Buf) -> Result<Self, ReplyError> {
        let mut summary = Self::default();
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match (tag, wire_type) {
                (1, WireType::LengthDelimited) => {
                    let len = decode_varint(&mut buf)?;
                    if len > buf.remaining() as u64 {
                        return Err(ReplyError::Truncated);
                    }
                    let len = len as usize; // at most `remaining`
                    buf.advance(len);
                    summary.results += 1;
                }
                (2, WireType::Varint) => summary.as_of_seq = decode_varint(&mut buf)?,
                _ => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
        Ok(summary)
    }
}

/// [`Codec`] of [`EncodedQuery`] out and [`ReplySummary`] back.
#[derive(Clone, Copy, Default)]
pub struct LightQueryCodec;

impl Codec for LightQueryCodec {
    type Encode = EncodedQuery;
    type Decode = ReplySummary;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for LightQueryCodec {
    type Item = EncodedQuery;
    type Error = Status;

    fn encode(&mut self, item: EncodedQuery, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Decoder for LightQueryCodec {
    type Item = ReplySummary;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ReplySummary>, Status> {
        ReplySummary::read(src).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use presence_proto::v1::{PresenceStatus, QueryReply, UserPresence};

    use super::*;

    fn reply(n: usize, as_of_seq: u64) -> Vec<u8> {
        let result = |i: usize| UserPresence {
            user_id: if i.is_multiple_of(2) { format!("u{i}") } else { String::new() },
            status: if i.is_multiple_of(3) { PresenceStatus::Online } else { PresenceStatus::Offline } as i32,
            user_version: i as u64,
            ..Default::default()
        };
        QueryReply { results: (0..n).map(result).collect(), as_of_seq }.encode_to_vec()
    }

    #[test]
    fn a_reply_is_counted_as_prost_decodes_it() {
        for n in [0, 1, 7, 500] {
            let bytes = reply(n, 40 + n as u64);
            let decoded = QueryReply::decode(bytes.as_slice()).map(|r| (r.results.len(), r.as_of_seq));
            let summary = ReplySummary::read(bytes.as_slice()).map(|s| (s.results, s.as_of_seq));
            assert_eq!(summary.ok(), decoded.ok(), "{n} results");
        }
    }

    #[test]
    fn a_cut_reply_is_read_as_prost_reads_it() {
        let bytes = reply(3, 9);
        for cut in 0..bytes.len() {
            // A cut inside a result or a varint is an error; one between fields is a shorter reply.
            let decoded = QueryReply::decode(&bytes[..cut]).map(|r| (r.results.len(), r.as_of_seq));
            let summary = ReplySummary::read(&bytes[..cut]).map(|s| (s.results, s.as_of_seq));
            assert_eq!(summary.ok(), decoded.ok(), "cut at {cut}");
        }
    }

    #[test]
    fn the_request_is_prost_encoding() {
        let request = QueryRequest {
            app_id: "a".into(),
            user_ids: ["x", "y"].into_iter().collect(),
            ..Default::default()
        };
        let EncodedQuery(bytes) = EncodedQuery::new(&request);
        assert_eq!(QueryRequest::decode(bytes).ok(), Some(request));
    }
}
