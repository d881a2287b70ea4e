//! Layer compression by media type: gzip, zstd or none.

use std::io::{self, BufRead, BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("unknown layer media type {0:?}")]
    UnknownMediaType(String),
}

impl Compression {
    /// The compression a layer media type announces. Foreign (non-distributable) layers
    /// are treated like their distributable twins.
    pub fn from_media_type(media_type: &str) -> Result<Self, CompressionError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Self::Zstd),
            other => Err(CompressionError::UnknownMediaType(other.to_string())),
        }
    }

    /// Guesses from the first bytes (for archives whose layers carry no media type).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// Wraps `r` in the matching decoder.
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::None => Box::new(r),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                256 * 1024,
                r,
            ))),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

/// Decoder chosen by sniffing the stream's first bytes.
pub fn sniffing_decoder<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let c = Compression::sniff(br.fill_buf()?);
    c.decoder(br)
}
