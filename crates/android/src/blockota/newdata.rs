//! new.dat: the blocks of the `new` commands, in the order of the list,
//! raw, brotli-compressed (`.new.dat.br`) or LZMA-compressed
//! (`.new.dat.lzma`, the `lzma_alone` form).

use super::BLOCK;
use romdelta_format::FormatError;
use std::io::Read;

/// Memory the LZMA decoder may use (its dictionary).
const LZMA_MEMLIMIT: u64 = 256 << 20;

/// How new.dat is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewDataKind {
    /// The blocks as they are.
    Raw,
    /// One brotli stream.
    Brotli,
    /// One `lzma_alone` stream.
    Lzma,
}

impl NewDataKind {
    /// The file name suffix after `NAME.new.dat`.
    pub fn suffix(self) -> &'static str {
        match self {
            NewDataKind::Raw => "",
            NewDataKind::Brotli => ".br",
            NewDataKind::Lzma => ".lzma",
        }
    }
}

/// A reader of new.dat's blocks, one after another.
pub struct NewData<'a> {
    inner: Box<dyn Read + Send + 'a>,
    kind: NewDataKind,
    /// Blocks read so far.
    read: u64,
}

impl<'a> NewData<'a> {
    /// Reads `r`, stored as `kind`.
    pub fn new(r: impl Read + Send + 'a, kind: NewDataKind) -> Result<Self, FormatError> {
        let inner: Box<dyn Read + Send + 'a> = match kind {
            NewDataKind::Raw => Box::new(r),
            NewDataKind::Brotli => Box::new(brotli_decompressor::Decompressor::new(r, 1 << 16)),
            NewDataKind::Lzma => {
                let s = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT)
                    .map_err(|e| FormatError::invalid("new.dat", format!("lzma: {e}")))?;
                Box::new(liblzma::read::XzDecoder::new_stream(r, s))
            }
        };
        Ok(NewData {
            inner,
            kind,
            read: 0,
        })
    }

    /// Blocks read so far.
    pub fn position(&self) -> u64 {
        self.read
    }

    /// Fills `out` (whole blocks) with the next blocks.
    pub fn read_blocks(&mut self, out: &mut [u8]) -> Result<(), FormatError> {
        debug_assert_eq!(out.len() as u64 % BLOCK, 0);
        let mut at = 0;
        while at < out.len() {
            match self.inner.read(&mut out[at..]) {
                Ok(0) => {
                    return Err(FormatError::invalid(
                        "new.dat",
                        format!(
                            "ends after {} blocks{}, the list needs more",
                            self.read + at as u64 / BLOCK,
                            self.kind.suffix()
                        ),
                    ))
                }
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FormatError::invalid(
                        "new.dat",
                        format!("after {} blocks: {e}", self.read + at as u64 / BLOCK),
                    ))
                }
            }
        }
        self.read += out.len() as u64 / BLOCK;
        Ok(())
    }

    /// Skips `blocks` blocks (a resumed run's blocks already written).
    pub fn skip(&mut self, blocks: u64) -> Result<(), FormatError> {
        let mut buf = vec![0u8; (BLOCK * 256) as usize];
        let mut left = blocks;
        while left > 0 {
            let n = left.min(256);
            self.read_blocks(&mut buf[..(n * BLOCK) as usize])?;
            left -= n;
        }
        Ok(())
    }

    /// Checks that nothing follows the blocks read (a new.dat longer than
    /// its list is not the one the list was made with).
    pub fn finish(mut self) -> Result<(), FormatError> {
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(FormatError::invalid(
                        "new.dat",
                        format!(
                            "holds more than the {} blocks the list writes from it",
                            self.read
                        ),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(FormatError::invalid(
                        "new.dat",
                        format!("after {} blocks: {e}", self.read),
                    ))
                }
            }
        }
    }
}
