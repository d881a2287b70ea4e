//! Framing: how frames sit on the one byte stream between host and agent.
//!
//! ```text
//! +----------------+----------------+------+-------------------+
//! | length: u32 BE | channel: u32 BE| kind | payload (length)  |
//! +----------------+----------------+------+-------------------+
//! ```
//!
//! `length` counts the payload only. Control kinds carry JSON; stream kinds carry raw
//! bytes, so stdio costs nine bytes of header and no encoding. Unknown kinds decode as
//! [`Kind::Unknown`] (the length still says where the next frame starts), so a peer that
//! is newer than us never desynchronises the stream.

use serde::{Serialize, de::DeserializeOwned};

/// Bytes before the payload: length, channel, kind.
pub const HEADER_LEN: usize = 9;
/// Largest payload accepted or produced; a larger length is taken as garbage on the wire.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// Largest payload of one [`Kind::Data`] frame; bigger writes are split.
pub const MAX_DATA_CHUNK: usize = 64 * 1024;
/// Bytes a stream's sender may send before the receiver grants more with
/// [`Kind::Credit`]. Each stream starts with this much credit.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// What a frame carries. Codes are part of the wire format and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// JSON [`crate::Hello`]; the first frame each side sends, channel 0.
    Hello,
    /// JSON [`crate::Request`]; the channel is the request id, chosen by the host.
    Request,
    /// JSON [`crate::Response`]; the channel is the id of the request it answers.
    Response,
    /// JSON [`crate::Event`]; unsolicited, channel 0.
    Event,
    /// JSON [`crate::ErrorBody`]: a frame on this channel could not be handled (unknown
    /// kind, bad handshake). The connection stays up unless the error says otherwise.
    Error,
    /// Raw bytes of the stream whose id is the channel.
    Data,
    /// End of the stream whose id is the channel (the sender will send no more data).
    Close,
    /// u32 BE: the receiver of the stream whose id is the channel grants this many more
    /// bytes to its sender.
    Credit,
    /// A kind this build does not know (from a newer peer).
    Unknown(u8),
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::Request => 2,
            Kind::Response => 3,
            Kind::Event => 4,
            Kind::Error => 5,
            Kind::Data => 16,
            Kind::Close => 17,
            Kind::Credit => 18,
            Kind::Unknown(code) => code,
        }
    }

    pub fn from_code(code: u8) -> Kind {
        match code {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Event,
            5 => Kind::Error,
            16 => Kind::Data,
            17 => Kind::Close,
            18 => Kind::Credit,
            other => Kind::Unknown(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "frame payload of {len} bytes exceeds the maximum of {max} bytes (garbage on the channel?)"
    )]
    Oversize { len: usize, max: usize },
    #[error("stream ended inside a frame: {have} of {need} bytes received")]
    Truncated { have: usize, need: usize },
    #[error("malformed JSON in {kind:?} frame on channel {channel}: {source}")]
    Json {
        kind: Kind,
        channel: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("malformed {kind:?} frame on channel {channel}: {reason}")]
    Malformed {
        kind: Kind,
        channel: u32,
        reason: &'static str,
    },
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub channel: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, channel: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            channel,
            payload,
        }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json<T: Serialize>(kind: Kind, channel: u32, value: &T) -> Frame {
        // Serializing our own plain data types cannot fail (no maps with non-string keys).
        let payload = serde_json::to_vec(value).expect("wire types serialize");
        Frame::new(kind, channel, payload)
    }

    pub fn credit(channel: u32, bytes: u32) -> Frame {
        Frame::new(Kind::Credit, channel, bytes.to_be_bytes().to_vec())
    }

    /// The payload parsed as JSON.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|source| FrameError::Json {
            kind: self.kind,
            channel: self.channel,
            source,
        })
    }

    /// The bytes granted by a [`Kind::Credit`] frame.
    pub fn credit_bytes(&self) -> Result<u32, FrameError> {
        let bytes: [u8; 4] =
            self.payload
                .as_slice()
                .try_into()
                .map_err(|_| FrameError::Malformed {
                    kind: self.kind,
                    channel: self.channel,
                    reason: "credit payload is not 4 bytes",
                })?;
        Ok(u32::from_be_bytes(bytes))
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        encode(self.kind, self.channel, &self.payload, out)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// Appends one frame to `out`.
pub fn encode(
    kind: Kind,
    channel: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::Oversize {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&channel.to_be_bytes());
    out.push(kind.code());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the first frame of `buf`: `Ok(None)` when `buf` holds only part of it,
/// otherwise the frame and how many bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    decode_with_max(buf, MAX_PAYLOAD)
}

fn decode_with_max(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    // Checked before waiting for the payload: garbage must fail now, not after we have
    // buffered gigabytes of it.
    if len > max {
        return Err(FrameError::Oversize { len, max });
    }
    let channel = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
    let kind = Kind::from_code(buf[8]);
    let total = HEADER_LEN + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Frame::new(kind, channel, buf[HEADER_LEN..total].to_vec()),
        total,
    )))
}

/// An incremental decoder: feed it whatever the transport returned, take whole frames out.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    failed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::with_max_payload(MAX_PAYLOAD)
    }

    pub fn with_max_payload(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max,
            failed: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        // Compact before growing so a long-lived connection does not keep every byte
        // it ever read.
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` when more input is needed. After an error the
    /// stream cannot be resynchronised: every later call returns the same kind of error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match decode_with_max(&self.buf[self.start..], self.max) {
            Ok(Some((frame, used))) => {
                self.start += used;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                self.failed = true;
                Err(err)
            }
        }
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Call at end of stream: an error when it ended in the middle of a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        let rest = &self.buf[self.start..];
        if rest.is_empty() || self.failed {
            return Ok(());
        }
        let need = if rest.len() < HEADER_LEN {
            HEADER_LEN
        } else {
            HEADER_LEN + u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize
        };
        Err(FrameError::Truncated {
            have: rest.len(),
            need,
        })
    }
}
