use thiserror::Error;

/// Why bytes are not a valid package (or operation data).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The input ended before a field was complete.
    #[error("truncated: {what} needs {need} more bytes, {have} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes it needed.
        need: u64,
        /// Bytes that were left.
        have: u64,
    },
    /// The file does not start with the package magic.
    #[error("not a romdelta package (bad magic)")]
    BadMagic,
    /// A format version this reader does not know.
    #[error(
        "unsupported package format version {found} (this romdelta reads versions {oldest} to {newest})"
    )]
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
        /// The oldest version this reader reads.
        oldest: u32,
        /// The newest version this reader reads (and writes).
        newest: u32,
    },
    /// A field holds a value outside its allowed range.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A count or length exceeds a hard limit or the bytes that remain.
    #[error("{what} too large: {value} (limit {limit})")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit it broke.
        limit: u64,
    },
    /// Bytes left over after a structure that must fill its section.
    #[error("{what}: {extra} trailing bytes")]
    Trailing {
        /// The section.
        what: &'static str,
        /// How many bytes were left.
        extra: u64,
    },
}

impl FormatError {
    /// An [`FormatError::Invalid`] about `what`.
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}
