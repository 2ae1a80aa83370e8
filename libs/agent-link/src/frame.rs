//! What travels after the hello: length-delimited frames.
//!
//! Every frame is a 4-byte big-endian length (tokio-util's `LengthDelimitedCodec`, capped at
//! [`crate::LinkOptions::max_frame_len`]) followed by a payload whose first byte is its kind:
//!
//! - `0x00` message: the rest is one JSON [`Message`].
//! - `0x01` data: an 8-byte big-endian request id, then raw bytes of that request's upload.
//!
//! Package bytes travel raw rather than base64 inside JSON, as Halibut sends DataStreams after
//! its messages, and in chunks so other requests interleave and memory stays bounded.

use crate::messages::{Progress, Request, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Identifies one request on one connection; chosen by the requesting side, counting from 1.
pub type RequestId = u64;

const KIND_MESSAGE: u8 = 0x00;
const KIND_DATA: u8 = 0x01;

/// Bytes before the payload in a data frame: the kind and the request id.
pub const DATA_HEADER_LEN: usize = 1 + 8;

/// The envelope of every message frame, internally tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Requester to server: a new request.
    Request {
        /// Its id, unique among this connection's requests.
        id: RequestId,
        /// What is asked.
        request: Request,
    },
    /// Server to requester: an intermediate message about request `id`.
    Progress {
        /// The request.
        id: RequestId,
        /// What happened.
        progress: Progress,
    },
    /// Server to requester: the final answer to request `id`.
    Response {
        /// The request.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// Server to requester: the server consumed chunks of upload `id`; send that many more.
    Credit {
        /// The request.
        id: RequestId,
        /// How many more chunks may be in flight.
        chunks: u32,
    },
    /// Requester to server: the upload of request `id` stops early and will not complete.
    AbortUpload {
        /// The request.
        id: RequestId,
        /// Why, for the agent's log.
        reason: String,
    },
    /// Either way: are you there? Sent every keep-alive interval.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Either way: the answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// A decoded frame.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A JSON message.
    Message(Message),
    /// Upload bytes for a request.
    Data { id: RequestId, bytes: Bytes },
}

/// Encodes a message frame payload (kind byte and JSON), without the length prefix.
pub fn encode_message(message: &Message) -> Bytes {
    let mut buffer = BytesMut::with_capacity(128).writer();
    buffer.get_mut().put_u8(KIND_MESSAGE);
    // Serializing these types to a growable buffer cannot fail: every key is a string and no
    // value has a fallible Serialize impl.
    if let Err(err) = serde_json::to_writer(&mut buffer, message) {
        unreachable!("link messages always serialize: {err}");
    }
    buffer.into_inner().freeze()
}

/// Starts a data frame payload for `id` with room for `len` bytes after the header.
pub(crate) fn data_frame(id: RequestId, len: usize) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(DATA_HEADER_LEN + len);
    buffer.put_u8(KIND_DATA);
    buffer.put_u64(id);
    buffer
}

/// Decodes a frame payload.
pub(crate) fn decode(mut payload: Bytes) -> Result<Frame, String> {
    if payload.is_empty() {
        return Err("empty frame".to_owned());
    }
    match payload.get_u8() {
        KIND_MESSAGE => serde_json::from_slice(&payload)
            .map(Frame::Message)
            .map_err(|err| format!("undecodable message: {err}")),
        KIND_DATA if payload.len() >= 8 => {
            let id = payload.get_u64();
            Ok(Frame::Data { id, bytes: payload })
        }
        KIND_DATA => Err("data frame shorter than its header".to_owned()),
        other => Err(format!("unknown frame kind {other:#04x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_frame_is_a_kind_byte_and_json() {
        let payload = encode_message(&Message::Ping { nonce: 7 });
        assert_eq!(&payload[..], b"\x00{\"type\":\"ping\",\"nonce\":7}");
        assert!(matches!(
            decode(payload),
            Ok(Frame::Message(Message::Ping { nonce: 7 }))
        ));
    }

    #[test]
    fn a_data_frame_carries_its_request_id_and_raw_bytes() {
        let mut frame = data_frame(42, 3);
        frame.extend_from_slice(b"abc");
        match decode(frame.freeze()) {
            Ok(Frame::Data { id, bytes }) => {
                assert_eq!(id, 42);
                assert_eq!(&bytes[..], b"abc");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_frame_kinds_are_refused() {
        assert!(decode(Bytes::from_static(b"\x07hello")).is_err());
        assert!(decode(Bytes::new()).is_err());
    }
}
