//! Layers: applying a layer tarball to a directory safely (whiteouts, owners, modes,
//! links), and decompressing layer blobs by media type.

pub mod compression;
pub mod unpack;
