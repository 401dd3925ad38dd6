//! The little of RFC 6455 the live console needs, without I/O: the opening handshake's
//! key and accept value, and masked client frames carrying one text message in
//! fragments (the official runner sends each batch as one text message split into
//! frames of at most 1024 bytes). The server never sends data back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::Digest as _;

/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The official runner's fragment size.
pub(crate) const MAX_FRAME_PAYLOAD: usize = 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;

/// A `Sec-WebSocket-Key` from 16 random bytes.
pub(crate) fn handshake_key(nonce: [u8; 16]) -> String {
    STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` a server must answer for `key`.
pub(crate) fn accept_value(key: &str) -> String {
    let mut hash = sha1::Sha1::new();
    hash.update(key.trim().as_bytes());
    hash.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(hash.finalize())
}

/// One masked client frame.
fn frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// A text message as masked frames whose payloads are at most `max_payload` bytes (a
/// fragment may end inside a UTF-8 sequence: only the whole message must be valid).
/// `mask` supplies a fresh masking key per frame.
pub(crate) fn text_message(text: &str, max_payload: usize, mut mask: impl FnMut() -> [u8; 4]) -> Vec<u8> {
    let bytes = text.as_bytes();
    let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(max_payload.max(1)).collect() };
    let mut out = Vec::with_capacity(bytes.len() + chunks.len() * 14);
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        frame(&mut out, i == last, if i == 0 { OP_TEXT } else { OP_CONTINUATION }, chunk, mask());
    }
    out
}

/// A close frame with status 1000 (normal closure).
pub(crate) fn close_message(mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    frame(&mut out, true, OP_CLOSE, &1000u16.to_be_bytes(), mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads frames back: (fin, opcode, unmasked payload).
    fn parse(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (fin, opcode) = (bytes[0] & 0x80 != 0, bytes[0] & 0x0f);
            assert!(bytes[1] & 0x80 != 0, "client frames are masked");
            let (len, mut at) = match bytes[1] & 0x7f {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) as usize, 10),
                n => (n as usize, 2),
            };
            let mask = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
            at += 4;
            let payload = bytes[at..at + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            out.push((fin, opcode, payload));
            bytes = &bytes[at + len..];
        }
        out
    }

    #[test]
    fn the_accept_value_is_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_value("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(handshake_key(*b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn a_long_message_is_fragmented_into_1024_byte_frames() {
        let text = "é".repeat(1500); // 3000 bytes; fragments split the two-byte characters
        let mut n = 0u8;
        let frames = parse(&text_message(&text, MAX_FRAME_PAYLOAD, || {
            n = n.wrapping_add(1);
            [n, 0x5a, 0xa5, 0xff]
        }));
        let shape: Vec<(bool, u8, usize)> = frames.iter().map(|(f, o, p)| (*f, *o, p.len())).collect();
        assert_eq!(shape, [(false, OP_TEXT, 1024), (false, OP_CONTINUATION, 1024), (true, OP_CONTINUATION, 952)]);
        let joined: Vec<u8> = frames.into_iter().flat_map(|(_, _, p)| p).collect();
        assert_eq!(String::from_utf8(joined).expect("utf-8"), text);
    }

    #[test]
    fn short_and_empty_messages_are_one_frame_and_close_carries_1000() {
        let frames = parse(&text_message("hi", MAX_FRAME_PAYLOAD, || [1, 2, 3, 4]));
        assert_eq!(frames, [(true, OP_TEXT, b"hi".to_vec())]);
        assert_eq!(parse(&text_message("", 1024, || [0; 4])), [(true, OP_TEXT, Vec::new())]);
        assert_eq!(parse(&close_message([9, 9, 9, 9])), [(true, OP_CLOSE, vec![0x03, 0xe8])]);
        // 200 bytes need the 16-bit length form.
        assert_eq!(parse(&text_message(&"x".repeat(200), 1024, || [7; 4]))[0].2.len(), 200);
    }
}
