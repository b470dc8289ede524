//! Bit-exact codecs.
//!
//! Content-aware operations diff compressed data in its decompressed form
//! and compress the result again at apply. That only works if the applier's
//! compressor writes exactly the bytes the image holds, so each codec here
//! is one pinned library version, built statically into romdelta, and
//! names that version ([`lz4::LIBRARY_VERSION`], [`xz::library_version`],
//! [`deflate::library_version`], [`zstd_frame::library_version`]): a package records it,
//! and an applier built with another version refuses the operation before
//! writing anything.

#![warn(missing_docs)]

pub mod deflate;
pub mod lz4;
pub mod lz4_stream;
pub mod xz;
pub mod zstd_frame;
