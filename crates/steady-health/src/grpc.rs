//! The few bytes of `grpc.health.v1` a health check needs, encoded by hand.
//!
//! ```proto
//! message HealthCheckRequest { string service = 1; }
//! message HealthCheckResponse { ServingStatus status = 1; }  // 1 = SERVING
//! ```
//!
//! Each message travels in one gRPC frame: a compressed flag byte (always 0 here), a
//! big-endian `u32` length, then the protobuf bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// Path of the standard health method.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.status` of a server that answers requests.
pub const SERVING: u64 = 1;

/// Returns one gRPC frame holding `HealthCheckRequest { service }`.
pub fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    // proto3 leaves a default (empty) string out.
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, wire type 2 (length-delimited)
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

/// Why a response body is not a `HealthCheckResponse`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is shorter than its frame header says.
    #[error("truncated gRPC frame")]
    Truncated,
    /// The frame is compressed, which the request did not allow.
    #[error("compressed gRPC frame")]
    Compressed,
    /// The protobuf bytes do not parse.
    #[error("malformed protobuf in health response")]
    Malformed,
}

/// Returns `HealthCheckResponse.status` from the first gRPC frame of `body`.
///
/// A missing status field is 0 (`UNKNOWN`), as proto3 defaults it.
pub fn decode_response(body: &[u8]) -> Result<u64, DecodeError> {
    let [flag, l0, l1, l2, l3, rest @ ..] = body else {
        return Err(DecodeError::Truncated);
    };
    if *flag != 0 {
        return Err(DecodeError::Compressed);
    }
    let len = u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize;
    let mut message = rest.get(..len).ok_or(DecodeError::Truncated)?;
    let mut status = 0;
    while !message.is_empty() {
        let key = take_varint(&mut message)?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                let value = take_varint(&mut message)?;
                if field == 1 {
                    status = value;
                }
            }
            1 => skip(&mut message, 8)?,
            2 => {
                let n = take_varint(&mut message)?;
                skip(
                    &mut message,
                    usize::try_from(n).map_err(|_| DecodeError::Malformed)?,
                )?;
            }
            5 => skip(&mut message, 4)?,
            _ => return Err(DecodeError::Malformed),
        }
    }
    Ok(status)
}

/// Returns the name of a `ServingStatus` value, for error messages.
pub fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unrecognised status",
    }
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn take_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or(DecodeError::Malformed)?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed)
}

fn skip(buf: &mut &[u8], n: usize) -> Result<(), DecodeError> {
    *buf = buf.get(n..).ok_or(DecodeError::Malformed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_bytes() {
        assert_eq!(&encode_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("app")[..],
            [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'p']
        );
        let long = "s".repeat(200);
        let frame = encode_request(&long);
        // A 200-byte string needs a two-byte length varint.
        assert_eq!(&frame[..8], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 5 + 203);
    }

    #[test]
    fn response_status() {
        assert_eq!(decode_response(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(SERVING));
        assert_eq!(decode_response(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(2));
        assert_eq!(decode_response(&[0, 0, 0, 0, 0]), Ok(0));
        // Unknown fields of every wire type are skipped.
        let body = [
            0, 0, 0, 0, 22, //
            0x10, 0x96, 0x01, // field 2 varint
            0x19, 1, 2, 3, 4, 5, 6, 7, 8, // field 3 fixed64
            0x22, 1, b'x', // field 4 bytes
            0x2d, 1, 2, 3, 4, // field 5 fixed32
            0x08, 1, // status
        ];
        assert_eq!(decode_response(&body), Ok(SERVING));
        assert_eq!(
            decode_response(&body[..body.len() - 1]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn bad_responses() {
        assert_eq!(decode_response(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 3, 8]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_response(&[1, 0, 0, 0, 2, 8, 1]),
            Err(DecodeError::Compressed)
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 1, 8]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x0b, 0]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 3, 0x0a, 5, 0]),
            Err(DecodeError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_response(&body);
        }

        #[test]
        fn varints_round_trip(value in any::<u64>()) {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            let mut slice = &buf[..];
            prop_assert_eq!(take_varint(&mut slice), Ok(value));
            prop_assert!(slice.is_empty());
        }
    }
}
