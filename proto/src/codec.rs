//! The gRPC codec of every generated client and server: tonic's prost codec with smaller
//! per-call buffers.
//!
//! tonic allocates one encode and one decode buffer of `buffer_size` per call (8 KiB by
//! default) and grows them as a message needs. Nearly every etcd request and response is a
//! few hundred bytes, and an 8 KiB block is past glibc's per-thread cache, so each unary
//! call paid two trips through the allocator's shared bins (splitting and coalescing
//! chunks): ~5 % of a store member's CPU at 256 clients of 256 B puts, by `perf`. 1 KiB
//! blocks are served from the per-thread cache; larger messages grow the buffer
//! (BytesMut doubles its capacity), so nothing is limited by it. The yield threshold —
//! how many bytes of a server stream are gathered into one send — stays tonic's.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::BufferSettings;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Bytes allocated up front for encoding or decoding the messages of one call.
pub const BUFFER_SIZE: usize = 1024;
/// Bytes of a server stream gathered before they are sent (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// A prost codec with [`BUFFER_SIZE`] buffers; the generated code names it through
/// `codec_path` and builds it with `default()`.
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
