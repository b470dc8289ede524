//! Android's update formats, the only code in romdelta that parses their
//! bytes: update_engine's `payload.bin` ([`payload`]), dm-verity hash
//! trees ([`verity`]), their error correction ([`fec`]) and the AVB
//! footers that say where both lie in an image ([`avb`]), and the block-based
//! OTAs of non-A/B devices ([`blockota`]).
//!
//! Every length read from input is checked against the bytes that exist
//! before it is used, as in `romdelta-format`, whose basic types
//! ([`romdelta_format::Extent`], [`romdelta_format::FormatError`]) this
//! crate shares.

pub mod avb;
pub mod blockota;
pub mod fec;
pub mod lz4diff;
pub mod ota_zip;
pub mod payload;
pub mod puffin;
pub mod signature;
pub mod verity;
