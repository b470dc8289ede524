use romdelta_format::{hex_digest, Digest, Extent, FormatError, OpKind};
use std::path::PathBuf;

/// Why a package was not applied (or did not verify).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The package is malformed.
    #[error("invalid package: {0}")]
    Format(#[from] FormatError),
    /// The package does not fit the given source or output.
    #[error("refused: {0}")]
    Refused(String),
    /// A hash did not match.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    /// Operation data that passed its hash check could not be decoded.
    #[error("partition {partition}, operation {op} ({kind}): {source}")]
    Decode {
        /// Partition name.
        partition: String,
        /// Operation index.
        op: usize,
        /// Operation kind.
        kind: OpKind,
        /// What the decoder found.
        source: FormatError,
    },
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What was hashed when a hash mismatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    /// The operation's data in the package.
    Data,
    /// The source blocks the operation reads.
    Source,
    /// A whole source partition image.
    SourceImage,
    /// A whole written partition image.
    TargetImage,
}

/// A hash mismatch, with where it happened.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// What was hashed.
    pub what: Hashed,
    /// Partition name.
    pub partition: String,
    /// Operation index and kind, for per-operation hashes.
    pub op: Option<(usize, OpKind)>,
    /// The blocks involved (source blocks for source hashes, else destination).
    pub extents: Vec<Extent>,
    /// The hash the package expects.
    pub expected: Digest,
    /// The hash found.
    pub actual: Digest,
}

fn describe_extents(e: &[Extent]) -> String {
    const SHOW: usize = 8;
    let mut s: Vec<String> = e.iter().take(SHOW).map(|x| x.to_string()).collect();
    if e.len() > SHOW {
        s.push(format!("... ({} extents)", e.len()));
    }
    s.join(", ")
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.what {
            Hashed::Data => "package data hash mismatch",
            Hashed::Source => "source hash mismatch (the source is not the build this package was made from, or is damaged)",
            Hashed::SourceImage => "source image hash mismatch (the source is not the build this package was made from, or is damaged)",
            Hashed::TargetImage => "written image hash mismatch",
        };
        write!(f, "partition {}", self.partition)?;
        if let Some((i, k)) = self.op {
            write!(f, ", operation {i} ({k})")?;
        }
        write!(f, ": {what}")?;
        if !self.extents.is_empty() {
            let side = if self.what == Hashed::Source {
                "source"
            } else {
                "target"
            };
            write!(f, "; {side} blocks {}", describe_extents(&self.extents))?;
        }
        write!(
            f,
            "; expected sha256 {}, found {}",
            hex_digest(&self.expected),
            hex_digest(&self.actual)
        )
    }
}

impl ApplyError {
    /// The process exit code for this error: 1 for a package that is
    /// refused or does not verify, 2 for an I/O error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ApplyError::Io { .. } => 2,
            _ => 1,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ApplyError {
        let path = path.into();
        move |source| ApplyError::Io { path, source }
    }
}

impl From<Mismatch> for ApplyError {
    fn from(m: Mismatch) -> Self {
        ApplyError::Mismatch(Box::new(m))
    }
}

impl From<romdelta_rom::RomError> for ApplyError {
    fn from(e: romdelta_rom::RomError) -> Self {
        match e {
            romdelta_rom::RomError::Io { path, source } => ApplyError::Io { path, source },
            romdelta_rom::RomError::Invalid { path, reason } => ApplyError::Io {
                path,
                source: std::io::Error::other(reason),
            },
        }
    }
}
