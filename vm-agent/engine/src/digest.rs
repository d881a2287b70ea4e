//! Content digests (`sha256:<hex>`): computing them while bytes stream past, and checking
//! them against what a manifest or a reference promised.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("unsupported digest {0:?}: only sha256 digests are supported")]
    Unsupported(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
}

/// The hex part of a `sha256:` digest, checked for shape.
pub fn sha256_hex(digest: &str) -> Result<&str, DigestError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(DigestError::Unsupported(digest.to_string())),
    }
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Fails unless `bytes` hash to `expected`.
pub fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<(), DigestError> {
    sha256_hex(expected)?;
    let actual = sha256_of(bytes);
    if actual != expected {
        return Err(DigestError::Mismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// A running sha256 with a byte count.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, buf: &[u8]) {
        self.inner.update(buf);
        self.len += buf.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.inner.finalize()))
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::default(),
        }
    }
    /// Reads the rest of the stream (a tar reader stops at its end blocks, but the digest
    /// covers every byte) and returns the digest and total length.
    pub fn finish(mut self) -> io::Result<(String, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        let len = self.hasher.len();
        Ok((self.hasher.finish(), len, self.inner))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::default(),
        }
    }
    pub fn finish(self) -> (String, u64, W) {
        let len = self.hasher.len();
        (self.hasher.finish(), len, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest() {
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn verify_rejects_mismatch_and_bad_shape() {
        let d = sha256_of(b"abc");
        verify("blob", b"abc", &d).unwrap();
        let err = verify("blob x", b"abd", &d).unwrap_err().to_string();
        assert!(err.contains("digest mismatch for blob x"), "{err}");
        assert!(verify("b", b"abc", "md5:abc").is_err());
        assert!(sha256_hex("sha256:ABCDEF").is_err());
    }

    #[test]
    fn hashing_reader_counts_rest_of_stream() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        let (d, n, _) = r.finish().unwrap();
        assert_eq!(n, 11);
        assert_eq!(d, sha256_of(b"hello world"));
    }
}
