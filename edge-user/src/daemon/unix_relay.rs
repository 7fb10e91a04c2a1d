//! Unix-socket connections, relayed to the gRPC server with their `:authority` mended.
//!
//! Stock gRPC clients put the socket's path in the HTTP/2 `:authority` of every request
//! (grpcio and the C core percent-encode it, grpc-java and grpcurl send it as is). The h2
//! server under tonic refuses such a request as malformed (RST_STREAM, PROTOCOL_ERROR), so
//! every call from them failed, health checks included. A socket has no authority to check, so
//! each accepted connection is relayed through an in-memory pipe, and on the way in every
//! request header block is decoded (with the client's own HPACK state), its `:authority` set
//! to `localhost`, and encoded again as literals without indexing (no shared table to keep in
//! step on our side). Every other frame, and everything the server sends back, passes as is.
//! Written here rather than patching h2: it is a few dozen lines against a stable wire format
//! (RFC 9113 framing, RFC 7541 literals), and the one part with state, the decoder, comes
//! from `fluke-hpack`.
use std::io;

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's floor): blocks we
/// write are cut to it.
const FRAME_MAX: usize = 16_384;
/// Largest header block accepted from a client (a gRPC request's headers are a few hundred
/// bytes).
const BLOCK_MAX: usize = 1 << 20;
/// What an authority on a Unix socket means.
const AUTHORITY: &[u8] = b"localhost";

/// Accepts connections on `listener` and hands the server one relayed stream per connection.
pub fn relay(listener: UnixListener) -> ReceiverStream<io::Result<DuplexStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(client, _)| {
                let (ours, server) = tokio::io::duplex(64 * 1024);
                tokio::spawn(connection(client, ours));
                server
            });
            if tx.send(accepted).await.is_err() {
                return; // the server stopped
            }
        }
    });
    ReceiverStream::new(rx)
}

async fn connection(client: UnixStream, server: DuplexStream) {
    let (client_read, mut client_write) = client.into_split();
    let (server_read, server_write) = tokio::io::split(server);
    let inbound = mend(client_read, server_write);
    let outbound = async move {
        let mut server_read = server_read;
        tokio::io::copy(&mut server_read, &mut client_write).await
    };
    // Either side ending ends the connection.
    tokio::select! {
        result = inbound => if let Err(e) = result { debug!("relayed connection: {e}") },
        _ = outbound => {}
    }
}

/// Copies a client's HTTP/2 stream to the server, mending the `:authority` of every request.
async fn mend(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) -> io::Result<()> {
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: the server answers it as it would have.
        tokio::io::copy(&mut from, &mut to).await?;
        return Ok(());
    }
    let mut decoder = fluke_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(64 * 1024);
    loop {
        let Some((kind, flags, stream, payload)) = read_frame(&mut from).await? else {
            return Ok(());
        };
        if kind != HEADERS {
            to.write_all(&frame(kind, flags, stream, &payload)).await?;
            continue;
        }
        let mut block = fragment(flags, &payload)?.to_vec();
        let mut end = flags & END_HEADERS != 0;
        while !end {
            let Some((kind, more, id, payload)) = read_frame(&mut from).await? else {
                return Ok(());
            };
            if kind != CONTINUATION || id != stream || block.len() + payload.len() > BLOCK_MAX {
                return Err(invalid("a header block broken off or too large"));
            }
            block.extend_from_slice(&payload);
            end = more & END_HEADERS != 0;
        }
        let headers = decoder.decode(&block).map_err(|e| invalid(&format!("HPACK: {e:?}")))?;
        let mut mended = Vec::with_capacity(block.len() + 64);
        for (name, value) in &headers {
            let value = if name.as_slice() == b":authority" { AUTHORITY } else { value };
            literal(name, value, &mut mended);
        }
        // HEADERS (its END_STREAM kept), then CONTINUATION frames; priority hints are dropped.
        let mut chunks = mended.chunks(FRAME_MAX).peekable();
        let mut kind = HEADERS;
        let mut flags = flags & END_STREAM;
        if chunks.peek().is_none() {
            to.write_all(&frame(HEADERS, flags | END_HEADERS, stream, &[])).await?;
        }
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() {
                flags |= END_HEADERS;
            }
            to.write_all(&frame(kind, flags, stream, chunk)).await?;
            (kind, flags) = (CONTINUATION, 0);
        }
    }
}

/// The next frame: (type, flags, stream id, payload); `None` at a clean end of stream.
async fn read_frame(
    from: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<(u8, u8, u32, Vec<u8>)>> {
    let mut head = [0u8; 9];
    match from.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    if len > BLOCK_MAX {
        return Err(invalid("a frame larger than any this server accepts"));
    }
    let mut payload = vec![0; len];
    from.read_exact(&mut payload).await?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Ok(Some((head[3], head[4], stream, payload)))
}

/// The header block fragment of a HEADERS payload, without padding and priority.
fn fragment(flags: u8, payload: &[u8]) -> io::Result<&[u8]> {
    let mut body = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = *body.first().ok_or_else(|| invalid("padding without its length"))? as usize;
        body = &body[1..];
    }
    if flags & PRIORITY != 0 {
        body = body.get(5..).ok_or_else(|| invalid("a priority field cut short"))?;
    }
    body.get(..body.len().checked_sub(pad).ok_or_else(|| invalid("more padding than frame"))?)
        .ok_or_else(|| invalid("more padding than frame"))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header as an RFC 7541 "literal header field without indexing, new name", strings not
/// Huffman-coded: nothing enters the server's dynamic table.
fn literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    for text in [name, value] {
        integer(text.len(), 7, out);
        out.extend_from_slice(text);
    }
}

/// An RFC 7541 integer with an `prefix`-bit prefix (the prefix's other bits zero).
fn integer(mut value: usize, prefix: u32, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_decode_back_with_a_reference_decoder() {
        let mut block = Vec::new();
        let long = vec![b'x'; 300];
        literal(b":authority", AUTHORITY, &mut block);
        literal(b"grpc-timeout", &long, &mut block);
        let headers = fluke_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(headers[0], (b":authority".to_vec(), AUTHORITY.to_vec()));
        assert_eq!(headers[1], (b"grpc-timeout".to_vec(), long));
    }

    #[tokio::test]
    async fn authority_is_mended_and_other_frames_pass_as_they_are() {
        // A client's request: HEADERS with a socket path as :authority (incremental indexing,
        // so its second request can name it by index), split over a CONTINUATION, then DATA.
        let mut encoder = fluke_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"POST"), (b":authority", b"tmp%2Fedge.sock"), (b":path", b"/x")];
        let block = encoder.encode(headers.iter().copied());
        let again = encoder.encode(headers.iter().copied());
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, PADDED, 1, &[[2u8].as_slice(), &block[..3], &[0, 0]].concat()));
        wire.extend(frame(CONTINUATION, END_HEADERS, 1, &block[3..]));
        wire.extend(frame(0x0, END_STREAM, 1, b"data"));
        wire.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &again));
        let mut out = Vec::new();
        mend(wire.as_slice(), &mut out).await.unwrap();

        assert_eq!(&out[..24], PREFACE);
        let mut rest = &out[24..];
        let mut decoder = fluke_hpack::Decoder::new();
        let mut seen = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[9..9 + len];
            if kind == HEADERS {
                assert_ne!(flags & END_HEADERS, 0);
                let decoded = decoder.decode(payload).unwrap();
                let authority = decoded.iter().find(|(n, _)| n == b":authority").unwrap();
                assert_eq!(authority.1, AUTHORITY);
                seen.push((kind, flags & END_STREAM));
            } else {
                assert_eq!(payload, b"data");
                seen.push((kind, flags));
            }
            rest = &rest[9 + len..];
        }
        assert_eq!(seen, [(HEADERS, 0), (0x0, END_STREAM), (HEADERS, END_STREAM)]);
    }
}
