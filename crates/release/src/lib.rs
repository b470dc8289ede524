//! romdelta's release repositories and the device's side of them.
//!
//! - [`publish`]: adds builds and their packages to a TUF repository
//!   (`romdelta-tuf`), one [`catalog`] per line (device, region, channel);
//! - [`fetch`]: `file://` and `http(s)://` reads, whole or by byte range,
//!   bounded, with bounded retries;
//! - [`update`]: a device's update: refresh the metadata, read its line's
//!   catalog, choose the package, install it while it downloads.

#![warn(missing_docs)]

pub mod catalog;
pub mod fetch;
pub mod publish;
pub mod remote;
pub mod update;

/// What can go wrong publishing or updating.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// TUF metadata or a target failed a check, or could not be fetched.
    #[error(transparent)]
    Tuf(#[from] romdelta_tuf::TufError),
    /// A package could not be read or applied.
    #[error(transparent)]
    Apply(#[from] romdelta_apply::ApplyError),
    /// The device refused or failed the install.
    #[error(transparent)]
    Recovery(#[from] romdelta_recovery::RecoveryError),
    /// A package download that failed (after its retries): what was
    /// written is kept, and the next run resumes.
    #[error(
        "downloading {url}: {reason}; what was written is kept: run the update again to resume"
    )]
    Download {
        /// The package.
        url: String,
        /// Why.
        reason: String,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Invalid(String),
}
