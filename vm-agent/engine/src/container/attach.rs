//! Attaching to a container through its monitor's socket (see docs/internals.md).
