//! Android's update formats, the only code in romdelta that parses their
//! bytes: update_engine's `payload.bin` ([`payload`]).
//!
//! Every length read from input is checked against the bytes that exist
//! before it is used, as in `romdelta-format`, whose basic types
//! ([`romdelta_format::Extent`], [`romdelta_format::FormatError`]) this
//! crate shares.

pub mod payload;
