//! The errors of reading an EROFS image.

/// Why an image could not be mapped. Every malformed input ends in one of
/// these, never in a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErofsError {
    /// A structure reaches past the end of the image.
    #[error("{what}: needs {need} bytes at offset {offset}, the image has {have}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Its byte offset in the image.
        offset: u64,
        /// Its length in bytes.
        need: u64,
        /// The length of the image.
        have: u64,
    },
    /// The superblock does not carry the EROFS magic number.
    #[error("not an EROFS image: magic {0:#010x} at byte 1024")]
    BadMagic(u32),
    /// A field holds a value the format does not allow.
    #[error("{what}: {why}")]
    Invalid {
        /// The structure or field.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The image uses a feature this reader does not map.
    #[error("unsupported: {what}: {why}")]
    Unsupported {
        /// The feature.
        what: &'static str,
        /// Where, or which value.
        why: String,
    },
    /// A directory entry leads back to a directory already being walked
    /// (itself, an ancestor, or a directory reached by another path).
    #[error("directory cycle: {path} refers to directory nid {nid} a second time")]
    DirectoryCycle {
        /// The path of the entry, as far as it was walked.
        path: String,
        /// The directory's inode number.
        nid: u64,
    },
    /// The directory tree is deeper than [`crate::MAX_DEPTH`].
    #[error("directory tree deeper than {limit} levels at {path}")]
    TooDeep {
        /// The path where the limit was reached.
        path: String,
        /// The limit.
        limit: usize,
    },
}

impl ErofsError {
    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        ErofsError::Invalid {
            what,
            why: why.into(),
        }
    }

    pub(crate) fn unsupported(what: &'static str, why: impl Into<String>) -> Self {
        ErofsError::Unsupported {
            what,
            why: why.into(),
        }
    }
}
