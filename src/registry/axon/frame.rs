//! The wire format of axon 1.0's PUB socket, the original registry's push channel (the framing
//! predates axon 2's AMP). Each part is a 4-byte header and a body: header byte 0 is a codec id
//! (1 = raw bytes), bytes 1-3 the body length, big-endian. A multipart message is one outer
//! frame with codec 0 whose body is its parts' frames, concatenated. No handshake, no reply.

use bytes::{BufMut, Bytes, BytesMut};

/// Codec id of a multipart envelope.
const MULTIPART: u8 = 0;
/// Codec id of a raw-bytes part (every part the original registry sent).
const RAW: u8 = 1;
const HEADER_LEN: usize = 4;
/// The length field has 24 bits.
pub const MAX_BODY: usize = (1 << 24) - 1;

/// A message too large for the 24-bit length field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an axon message of {0} bytes does not fit the 24-bit length field")]
pub struct TooLarge(pub usize);

/// Encodes `parts` (raw codec each) as one multipart message.
pub fn multipart(parts: &[&[u8]]) -> Result<Bytes, TooLarge> {
    let inner: usize = parts.iter().map(|part| HEADER_LEN + part.len()).sum();
    if inner > MAX_BODY {
        return Err(TooLarge(inner));
    }
    let mut out = BytesMut::with_capacity(HEADER_LEN + inner);
    put_header(&mut out, MULTIPART, inner);
    for part in parts {
        put_header(&mut out, RAW, part.len());
        out.put_slice(part);
    }
    Ok(out.freeze())
}

fn put_header(out: &mut BytesMut, codec: u8, len: usize) {
    // The caller checked `len <= MAX_BODY`, so the top byte of the u32 is free for the codec.
    let len = u32::try_from(len).unwrap_or(u32::MAX) & 0x00ff_ffff;
    out.put_u32(u32::from(codec) << 24 | len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offline_message_is_an_envelope_of_two_raw_parts() {
        let message = multipart(&[b"/a/1/h/80", b"offline"]).unwrap();
        let mut expected = vec![0, 0, 0, 4 + 9 + 4 + 7];
        expected.extend_from_slice(&[1, 0, 0, 9]);
        expected.extend_from_slice(b"/a/1/h/80");
        expected.extend_from_slice(&[1, 0, 0, 7]);
        expected.extend_from_slice(b"offline");
        assert_eq!(message.as_ref(), expected.as_slice());
    }

    #[test]
    fn lengths_use_all_24_bits_and_no_more() {
        let big = vec![b'x'; 70_000];
        let message = multipart(&[&big]).unwrap();
        assert_eq!(&message[..4], &[0, 0x01, 0x11, 0x74]); // 70_004
        assert_eq!(&message[4..8], &[1, 0x01, 0x11, 0x70]); // 70_000
        let too_big = vec![0u8; MAX_BODY];
        assert_eq!(multipart(&[&too_big]), Err(TooLarge(MAX_BODY + HEADER_LEN)));
    }
}
