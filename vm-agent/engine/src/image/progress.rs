//! Progress of long image work (pull, push, load), reported to whoever renders it.

/// Receives progress; every method has a do-nothing default.
pub trait Progress: Send + Sync {
    /// A step such as "Trying to pull …" or "Writing manifest to image destination".
    fn message(&self, _msg: &str) {}
    /// A blob transfer starts; `size` when known.
    fn blob_start(&self, _digest: &str, _size: Option<u64>) {}
    /// `bytes` more of the blob moved.
    fn blob_advance(&self, _digest: &str, _bytes: u64) {}
    /// The blob is done; `skipped` when it was already there.
    fn blob_done(&self, _digest: &str, _skipped: bool) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}
