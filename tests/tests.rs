//! romdelta's integration tests: one binary, one module per area.

mod archives;
mod bench;
mod branchdelta;
mod bsdiff40;
mod cli;
mod common;
mod crosspart;
mod deflate;
mod faults;
mod fielddelta;
mod fuzz_seeds;
mod hardening;
mod hostile;
mod inplace;
mod lz4_boot;
mod newdata;
mod payload;
mod recompress;
mod recovery;
mod resume;
mod roundtrip;
mod rules;
mod sparse;
mod symlinks;
mod xz_files;
mod xz_kernel;
