//! The gRPC codec of every generated service: prost's, decoding from a plain byte slice and
//! encoding without a sizing pass.
//!
//! tonic hands a decoder the message as a `DecodeBuf` over one contiguous `BytesMut`; prost
//! reading through it pays two bounds checks and a `BytesMut` advance for every varint. A batch
//! query's reply is 500 small messages of a few varints each, so the facade spent a fifth of its
//! CPU there (docs/benchmarks.md, batch query). Decoding the same bytes as a `&[u8]` costs a
//! pointer bump per read. On the way out, prost's `encode` sizes the whole message to check that
//! the buffer holds it, but tonic's buffer grows as it is written: `encode_raw` skips that pass.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// [`Codec`] of prost messages, `T` out and `U` in.
#[derive(Debug, Clone, Copy)]
pub struct SliceCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SliceEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SliceEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// The [`Encoder`] of [`SliceCodec`].
#[derive(Debug)]
pub struct SliceEncoder<T>(PhantomData<fn(T)>);

impl<T: Message> Encoder for SliceEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_raw(buf);
        Ok(())
    }
}

/// The [`Decoder`] of [`SliceCodec`].
#[derive(Debug)]
pub struct SliceDecoder<U>(PhantomData<fn() -> U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let decoded = if buf.chunk().len() == len {
            let decoded = U::decode(buf.chunk());
            buf.advance(len);
            decoded
        } else {
            // Not contiguous (tonic does not do this today): prost reads across the chunks.
            U::decode(buf)
        };
        // As prost's own codec maps decode errors (gRPC's status codes guide).
        decoded.map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}
