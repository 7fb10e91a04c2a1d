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
use std::{io, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream},
    net::{UnixListener, UnixStream},
    sync::{mpsc, Semaphore},
};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame either side may send: SETTINGS_MAX_FRAME_SIZE's default, which the server
/// behind the relay keeps (a client sending more breaks the protocol anyway). Blocks we write
/// are cut to it too.
const FRAME_MAX: usize = 16_384;
/// Largest header block accepted from a client, compressed (a gRPC request's headers are a few
/// hundred bytes; stock clients cap their metadata at 8 KiB to 16 KiB).
const BLOCK_MAX: usize = 256 * 1024;
/// Largest header list a block may decode to, counted as RFC 7541 counts (name + value + 32
/// per header). HPACK lets a short block name one big table entry many times over: without this
/// cap, a 256 KiB block could ask for gigabytes.
const LIST_MAX: usize = 256 * 1024;
/// The decoder's dynamic table: the HPACK default the server behind the relay advertises.
const TABLE_MAX: usize = 4_096;
/// Connections relayed at once; more wait in the socket's backlog.
const CONNECTIONS_MAX: usize = 256;
/// How long a new connection may take to send the HTTP/2 preface.
const PREFACE_WAIT: Duration = Duration::from_secs(10);
/// What an authority on a Unix socket means.
const AUTHORITY: &[u8] = b"localhost";

/// Accepts connections on `listener` and hands the server one relayed stream per connection.
pub fn relay(listener: UnixListener) -> ReceiverStream<io::Result<DuplexStream>> {
    let (tx, rx) = mpsc::channel(16);
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::spawn(async move {
        loop {
            let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    // Out of descriptors or memory: retrying at once would spin.
                    warn!("API socket: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (ours, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                connection(client, ours).await;
                drop(slot);
            });
            if tx.send(Ok(server)).await.is_err() {
                return; // the server stopped
            }
        }
    });
    ReceiverStream::new(rx)
}

async fn connection(client: UnixStream, server: DuplexStream) {
    let (client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = tokio::io::split(server);
    let inbound = async move {
        mend(client_read, &mut server_write).await?;
        // The client is done sending: the server still answers what is in flight.
        server_write.shutdown().await
    };
    let outbound = async move {
        let mut server_read = server_read;
        tokio::io::copy(&mut server_read, &mut client_write).await
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        result = &mut inbound => match result {
            Ok(()) => {
                let _ = outbound.await;
            }
            Err(e) => debug!("relayed connection: {e}"),
        },
        _ = &mut outbound => {}
    }
}

/// Copies a client's HTTP/2 stream to the server, mending the `:authority` of every request.
async fn mend(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) -> io::Result<()> {
    let mut preface = [0u8; 24];
    tokio::time::timeout(PREFACE_WAIT, from.read_exact(&mut preface))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no HTTP/2 preface"))??;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: the server answers it as it would have.
        tokio::io::copy(&mut from, &mut to).await?;
        return Ok(());
    }
    let mut decoder = fluke_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(TABLE_MAX);
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
        let mended = mended_block(&mut decoder, &block)?;
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

/// A request's header block decoded with the connection's decoder and written again as
/// literals, its `:authority` replaced; refused past LIST_MAX decoded bytes.
fn mended_block(decoder: &mut fluke_hpack::Decoder, block: &[u8]) -> io::Result<Vec<u8>> {
    let mut mended = Vec::with_capacity(block.len() + 64);
    let mut listed = 0usize;
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        decoder.decode_with_cb(block, |name, value| {
            listed += name.len() + value.len() + 32;
            if listed <= LIST_MAX {
                let value = if name.as_ref() == b":authority" { AUTHORITY } else { &value };
                literal(&name, value, &mut mended);
            }
        })
    }));
    match decoded {
        Ok(Ok(())) if listed <= LIST_MAX => Ok(mended),
        Ok(Ok(())) => Err(invalid("a header list larger than any this server accepts")),
        Ok(Err(e)) => Err(invalid(&format!("HPACK: {e:?}"))),
        // fluke-hpack unwraps a size update cut short instead of returning its error.
        Err(_) => Err(invalid("HPACK: a malformed block")),
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
    if len > FRAME_MAX {
        return Err(invalid("a frame larger than SETTINGS_MAX_FRAME_SIZE"));
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

    #[test]
    fn a_block_that_decodes_to_too_much_is_refused() {
        // One 4,000-byte entry put in the table, then named by index 100 times: 101 bytes of
        // block that would decode to 400 KB.
        let mut block = vec![0x40];
        integer(1, 7, &mut block);
        block.push(b'x');
        integer(4_000, 7, &mut block);
        block.extend(std::iter::repeat_n(b'v', 4_000));
        block.extend(std::iter::repeat_n(0x80 | 62, 100));
        let error = mended_block(&mut fluke_hpack::Decoder::new(), &block).unwrap_err();
        assert!(error.to_string().contains("header list larger"), "{error}");
        // The same entry named a few times is an ordinary block.
        let small = &block[..block.len() - 95];
        assert!(mended_block(&mut fluke_hpack::Decoder::new(), small).is_ok());
    }

    #[test]
    fn a_size_update_cut_short_is_an_error_not_a_panic() {
        let error = mended_block(&mut fluke_hpack::Decoder::new(), &[0x3f]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn frames_over_the_maximum_frame_size_are_refused() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(0x0, 0, 1, &vec![0; FRAME_MAX + 1]));
        let error = mend(wire.as_slice(), &mut Vec::new()).await.unwrap_err();
        assert!(error.to_string().contains("SETTINGS_MAX_FRAME_SIZE"), "{error}");
    }

    #[tokio::test]
    async fn a_client_that_stops_sending_still_gets_its_answers() {
        let (mut client, relayed) = UnixStream::pair().unwrap();
        let (ours, mut server) = tokio::io::duplex(64 * 1024);
        let relay = tokio::spawn(connection(relayed, ours));
        let mut request = PREFACE.to_vec();
        request.extend(frame(0x0, END_STREAM, 1, b"ask"));
        client.write_all(&request).await.unwrap();
        client.shutdown().await.unwrap();
        // The server reads the whole request, sees its end, and only then answers.
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, request);
        server.write_all(b"answer").await.unwrap();
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        relay.await.unwrap();
    }
}
