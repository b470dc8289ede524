//! The Update Framework (TUF, specification 1.0) for romdelta's release
//! repositories.
//!
//! - [`metadata`]: the roles' JSON, signature envelopes and their checks;
//! - [`canonical`]: canonical JSON, the bytes signatures are made over;
//! - [`client`]: the client's update workflow (specification §5): root
//!   rotation, then timestamp, snapshot and targets, with the rollback,
//!   freeze, mix-and-match and endless-data checks; then target lookup
//!   through delegations and checked downloads;
//! - [`repo`]: the repository writer: keys per role, thresholds,
//!   consistent snapshots, root rotation.
//!
//! Fetching is the caller's: a [`client::Fetcher`] gets a URL and the most
//! bytes it may return. Metadata is the only untrusted input read here, and
//! each file is bounded before it is parsed.

#![warn(missing_docs)]

pub mod canonical;
pub mod client;
pub mod metadata;
pub mod repo;
pub mod time;

pub use client::{Client, FetchError, Fetcher};

/// What can go wrong with TUF metadata or targets. Each message says what
/// was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    /// A file could not be fetched.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// Metadata that does not parse or breaks the specification's rules.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which file or role.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Too few valid signatures.
    #[error("{role} metadata has {have} valid signature(s) of its role's keys, {need} needed: it is not signed by the repository's keys")]
    Threshold {
        /// The role.
        role: String,
        /// Valid signatures found.
        have: u64,
        /// The threshold.
        need: u64,
    },
    /// An older version than the trusted one (a rollback attack).
    #[error("{role} metadata version {got} is older than the trusted version {have}: refused as a rollback")]
    Rollback {
        /// The role.
        role: String,
        /// The trusted version.
        have: u64,
        /// The version received.
        got: u64,
    },
    /// Not the version another role names (a mix-and-match attack).
    #[error("{role} metadata is version {got}, but {by} names version {expected}: refused, they were not published together")]
    Version {
        /// The role.
        role: String,
        /// Which role names it.
        by: String,
        /// The version named.
        expected: u64,
        /// The version received.
        got: u64,
    },
    /// Expired metadata (a freeze attack, or an unmaintained repository).
    #[error(
        "{role} metadata expired at {expires} (now {now}): refused, the repository may be frozen"
    )]
    Expired {
        /// The role.
        role: String,
        /// Its expiry.
        expires: String,
        /// The time it was checked at.
        now: String,
    },
    /// A file of the wrong length.
    #[error("{what} is {got} bytes, its signed metadata says {expected}")]
    Length {
        /// The file.
        what: String,
        /// The signed length.
        expected: u64,
        /// The length received.
        got: u64,
    },
    /// A file with another hash than signed.
    #[error("{what} has hash {got}, its signed metadata says {expected}: refused as tampered")]
    Hash {
        /// The file.
        what: String,
        /// The signed hash.
        expected: String,
        /// The hash received.
        got: String,
    },
    /// No role trusted for the path lists it.
    #[error("no target {0:?} in the repository's signed targets")]
    NoSuchTarget(String),
    /// Local metadata or target files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl TufError {
    pub(crate) fn invalid(what: &str, reason: impl Into<String>) -> TufError {
        TufError::Invalid {
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TufError + '_ {
        move |source| TufError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// `name` with every byte but `A-Za-z0-9-._~` percent-encoded, as role
/// names and target paths become file names and URL parts (python-tuf's
/// `quote(name, "")`).
pub fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
