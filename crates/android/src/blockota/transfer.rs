//! Transfer lists: a header, then one command per line.
//!
//! Header: the version (1 to 4), the blocks the commands write; from
//! version 2 on, the most stash entries and the most stashed blocks alive
//! at once. Commands, by version:
//!
//! | command | version 1 | version 2 | versions 3 and 4 |
//! |---|---|---|---|
//! | `move` | `SRC TGT` | `TGT SOURCE` | `HASH TGT SOURCE` |
//! | `bsdiff`, `imgdiff` | `OFF LEN SRC TGT` | `OFF LEN TGT SOURCE` | `OFF LEN SRCHASH TGTHASH TGT SOURCE` |
//! | `stash`, `free` | – | `ID RANGES`, `ID` | the same, the id being the SHA-1 of the blocks |
//! | `new`, `zero`, `erase` | `RANGES` | `RANGES` | `RANGES` |
//!
//! A `SOURCE` is a block count and then `RANGES` (the blocks in order), or
//! `- ID:LOC ...` (stashed blocks placed at buffer positions `LOC`), or
//! `RANGES LOC ID:LOC ...` (the image's blocks placed at `LOC`, stashes at
//! theirs). The positions of all pieces tile the buffer exactly.

use super::{RangeSet, MAX_BLOCKS};
use romdelta_format::FormatError;

/// The patch format of a patch command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `bsdiff`: a BSDIFF40 patch.
    Bsdiff,
    /// `imgdiff`: an IMGDIFF2 patch (chunks of a file holding deflate
    /// streams).
    Imgdiff,
}

/// Stashed blocks placed in a source buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StashPiece {
    /// The stash.
    pub id: String,
    /// Where its blocks go in the buffer, in order.
    pub at: RangeSet,
}

/// The source buffer of a `move` or patch command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its length in blocks.
    pub blocks: u64,
    /// Blocks of the image read into it.
    pub ranges: Option<RangeSet>,
    /// Where those go in the buffer; `None`: at its start, in order.
    pub at: Option<RangeSet>,
    /// Stashed blocks placed in it.
    pub stashes: Vec<StashPiece>,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Blocks that are no longer used (discarded on a device).
    Erase(RangeSet),
    /// Blocks that become zeros.
    Zero(RangeSet),
    /// Blocks written from the next bytes of new.dat.
    New(RangeSet),
    /// Saves blocks of the image under an id.
    Stash {
        /// The id (from version 3 on, the SHA-1 of the blocks).
        id: String,
        /// The blocks.
        ranges: RangeSet,
    },
    /// Drops a stash.
    Free {
        /// The id.
        id: String,
    },
    /// Copies the source buffer to the target blocks.
    Move {
        /// SHA-1 of the blocks (from version 3 on).
        hash: Option<String>,
        /// The target blocks.
        target: RangeSet,
        /// The source buffer.
        source: Source,
    },
    /// Patches the source buffer into the target blocks.
    Patch {
        /// The patch format.
        kind: PatchKind,
        /// Offset of the patch in patch.dat.
        offset: u64,
        /// Its length.
        len: u64,
        /// SHA-1 of the source buffer (from version 3 on).
        source_hash: Option<String>,
        /// SHA-1 of the target blocks (from version 3 on).
        target_hash: Option<String>,
        /// The target blocks.
        target: RangeSet,
        /// The source buffer.
        source: Source,
    },
}

impl Command {
    /// The command's name in the list.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Erase(_) => "erase",
            Command::Zero(_) => "zero",
            Command::New(_) => "new",
            Command::Stash { .. } => "stash",
            Command::Free { .. } => "free",
            Command::Move { .. } => "move",
            Command::Patch {
                kind: PatchKind::Bsdiff,
                ..
            } => "bsdiff",
            Command::Patch {
                kind: PatchKind::Imgdiff,
                ..
            } => "imgdiff",
        }
    }

    /// The blocks it writes, if any.
    pub fn target(&self) -> Option<&RangeSet> {
        match self {
            Command::Erase(r) | Command::Zero(r) | Command::New(r) => Some(r),
            Command::Move { target, .. } | Command::Patch { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Its source buffer, if it has one.
    pub fn source(&self) -> Option<&Source> {
        match self {
            Command::Move { source, .. } | Command::Patch { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A parsed transfer list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferList {
    /// 1 to 4.
    pub version: u32,
    /// Blocks the commands write, as the header says.
    pub total_blocks: u64,
    /// Most stash entries alive at once (version 2 on; else 0).
    pub max_stash_entries: u64,
    /// Most stashed blocks alive at once (version 2 on; else 0).
    pub max_stash_blocks: u64,
    /// The commands with their line numbers (1-based).
    pub commands: Vec<(usize, Command)>,
}

fn bad(line: usize, why: impl Into<String>) -> FormatError {
    FormatError::invalid("transfer list", format!("line {line}: {}", why.into()))
}

/// A stash id: 1 to 64 ASCII letters and digits (it names a file).
fn id(line: usize, s: &str) -> Result<String, FormatError> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad(line, format!("stash id {s:?}")));
    }
    Ok(s.to_string())
}

/// A SHA-1 in hex, lower-cased.
fn sha1_hex(line: usize, s: &str) -> Result<String, FormatError> {
    if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(line, format!("{s:?} is not a SHA-1")));
    }
    Ok(s.to_ascii_lowercase())
}

fn ranges(line: usize, s: Option<&str>) -> Result<RangeSet, FormatError> {
    let s = s.ok_or_else(|| bad(line, "a range set is missing"))?;
    RangeSet::parse(s).map_err(|e| bad(line, e.to_string()))
}

fn number(line: usize, s: Option<&str>, what: &str) -> Result<u64, FormatError> {
    s.and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(line, format!("{what} is missing or not a number")))
}

/// Parses a version-2+ source: `COUNT RANGES`, `COUNT - ID:LOC...` or
/// `COUNT RANGES LOC ID:LOC...`; the pieces must tile `0..COUNT`.
fn source<'a>(line: usize, w: &mut impl Iterator<Item = &'a str>) -> Result<Source, FormatError> {
    let blocks = number(line, w.next(), "the source block count")?;
    if blocks == 0 || blocks > MAX_BLOCKS {
        return Err(bad(line, format!("a source of {blocks} blocks")));
    }
    let first = w.next().ok_or_else(|| bad(line, "the source is missing"))?;
    let mut src = Source {
        blocks,
        ranges: None,
        at: None,
        stashes: Vec::new(),
    };
    if first != "-" {
        src.ranges = Some(ranges(line, Some(first))?);
    }
    let rest: Vec<&str> = w.collect();
    let mut pieces = rest.as_slice();
    if src.ranges.is_some() && !pieces.is_empty() {
        src.at = Some(ranges(line, Some(pieces[0]))?);
        pieces = &pieces[1..];
        if pieces.is_empty() {
            return Err(bad(line, "buffer positions without stashes"));
        }
    }
    if src.ranges.is_none() && pieces.is_empty() {
        return Err(bad(line, "a source of stashes names none"));
    }
    for p in pieces {
        let (i, at) = p
            .split_once(':')
            .ok_or_else(|| bad(line, format!("{p:?} is not ID:RANGES")))?;
        src.stashes.push(StashPiece {
            id: id(line, i)?,
            at: ranges(line, Some(at))?,
        });
    }
    // The buffer positions of every piece tile 0..blocks.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    match (&src.ranges, &src.at) {
        (Some(r), Some(at)) => {
            if r.blocks() != at.blocks() {
                return Err(bad(
                    line,
                    format!(
                        "{} source blocks placed at {} positions",
                        r.blocks(),
                        at.blocks()
                    ),
                ));
            }
            spans.extend(&at.0);
        }
        (Some(r), None) => spans.push((0, r.blocks())),
        _ => {}
    }
    for s in &src.stashes {
        spans.extend(&s.at.0);
    }
    spans.sort_unstable();
    let mut next = 0;
    for (a, b) in spans {
        if a != next {
            return Err(bad(
                line,
                format!(
                    "the source's pieces do not tile its {blocks} blocks (a gap or overlap at {a})"
                ),
            ));
        }
        next = b;
    }
    if next != blocks {
        return Err(bad(
            line,
            format!("the source's pieces fill {next} of its {blocks} blocks"),
        ));
    }
    Ok(src)
}

fn done<'a>(line: usize, mut w: impl Iterator<Item = &'a str>) -> Result<(), FormatError> {
    match w.next() {
        Some(extra) => Err(bad(line, format!("unexpected {extra:?}"))),
        None => Ok(()),
    }
}

impl TransferList {
    /// Parses `text`; `patch_len` is the size of patch.dat, which every
    /// patch must lie within.
    pub fn parse(text: &[u8], patch_len: u64) -> Result<Self, FormatError> {
        if text.len() as u64 > super::MAX_LIST {
            return Err(FormatError::invalid(
                "transfer list",
                format!("{} bytes, more than {}", text.len(), super::MAX_LIST),
            ));
        }
        let text = std::str::from_utf8(text)
            .map_err(|_| FormatError::invalid("transfer list", "not text"))?;
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
        let mut header = |what: &str| -> Result<(usize, u64), FormatError> {
            match lines.next() {
                Some((n, l)) => l
                    .parse()
                    .map(|v| (n, v))
                    .map_err(|_| bad(n, format!("{what} {l:?} is not a number"))),
                None => Err(FormatError::Truncated {
                    what: "transfer list header",
                    need: 1,
                    have: 0,
                }),
            }
        };
        let (n, version) = header("the version")?;
        if !(1..=4).contains(&version) {
            return Err(bad(
                n,
                format!("version {version}; versions 1 to 4 are read"),
            ));
        }
        let version = version as u32;
        let (_, total_blocks) = header("the block count")?;
        let (mut max_stash_entries, mut max_stash_blocks) = (0, 0);
        if version >= 2 {
            max_stash_entries = header("the stash entry count")?.1;
            max_stash_blocks = header("the stash block count")?.1;
        }
        let mut commands = Vec::new();
        for (n, l) in lines {
            if l.is_empty() {
                continue;
            }
            let mut w = l.split(' ');
            let name = w.next().unwrap_or_default();
            let c = match name {
                "erase" | "zero" | "new" => {
                    let r = ranges(n, w.next())?;
                    match name {
                        "erase" => Command::Erase(r),
                        "zero" => Command::Zero(r),
                        _ => Command::New(r),
                    }
                }
                "stash" if version >= 2 => {
                    let i = id(n, w.next().unwrap_or_default())?;
                    Command::Stash {
                        id: i,
                        ranges: ranges(n, w.next())?,
                    }
                }
                "free" if version >= 2 => Command::Free {
                    id: id(n, w.next().unwrap_or_default())?,
                },
                "move" => {
                    if version == 1 {
                        let src = ranges(n, w.next())?;
                        let target = ranges(n, w.next())?;
                        Command::Move {
                            hash: None,
                            source: v1_source(n, src, &target)?,
                            target,
                        }
                    } else {
                        let hash = if version >= 3 {
                            Some(sha1_hex(n, w.next().unwrap_or_default())?)
                        } else {
                            None
                        };
                        let target = ranges(n, w.next())?;
                        let source = source(n, &mut w)?;
                        if source.blocks != target.blocks() {
                            return Err(bad(
                                n,
                                format!(
                                    "a move of {} source blocks to {} target blocks",
                                    source.blocks,
                                    target.blocks()
                                ),
                            ));
                        }
                        Command::Move {
                            hash,
                            target,
                            source,
                        }
                    }
                }
                "bsdiff" | "imgdiff" => {
                    let kind = if name == "bsdiff" {
                        PatchKind::Bsdiff
                    } else {
                        PatchKind::Imgdiff
                    };
                    let offset = number(n, w.next(), "the patch offset")?;
                    let len = number(n, w.next(), "the patch length")?;
                    if offset.checked_add(len).is_none_or(|e| e > patch_len) {
                        return Err(bad(
                            n,
                            format!("a patch at {offset}+{len}, patch.dat has {patch_len} bytes"),
                        ));
                    }
                    let (mut source_hash, mut target_hash) = (None, None);
                    let (target, src) = if version == 1 {
                        let src = ranges(n, w.next())?;
                        let target = ranges(n, w.next())?;
                        (target, Source::whole(src))
                    } else {
                        if version >= 3 {
                            source_hash = Some(sha1_hex(n, w.next().unwrap_or_default())?);
                            target_hash = Some(sha1_hex(n, w.next().unwrap_or_default())?);
                        }
                        let target = ranges(n, w.next())?;
                        (target, source(n, &mut w)?)
                    };
                    Command::Patch {
                        kind,
                        offset,
                        len,
                        source_hash,
                        target_hash,
                        target,
                        source: src,
                    }
                }
                other => {
                    return Err(bad(
                        n,
                        format!("unknown command {other:?} for version {version}"),
                    ))
                }
            };
            // An applier holds a command's buffers whole (as recovery
            // does): their size is bounded here.
            let buffer = match &c {
                Command::Stash { ranges, .. } => ranges.blocks(),
                Command::Move { source, .. } | Command::Patch { source, .. } => {
                    source.blocks.max(c.target().map_or(0, RangeSet::blocks))
                }
                _ => 0,
            };
            if buffer > super::MAX_BUFFER_BLOCKS {
                return Err(bad(
                    n,
                    format!(
                        "a {name} of {buffer} blocks; at most {} are read or written by one",
                        super::MAX_BUFFER_BLOCKS
                    ),
                ));
            }
            if matches!(
                c,
                Command::Erase(_) | Command::Zero(_) | Command::New(_) | Command::Free { .. }
            ) || matches!(c, Command::Stash { .. })
                || version == 1
            {
                done(n, w)?;
            }
            commands.push((n, c));
        }
        let list = TransferList {
            version,
            total_blocks,
            max_stash_entries,
            max_stash_blocks,
            commands,
        };
        // releasetools counts the blocks new, zero, move and the patches
        // write: a list cut at a line boundary, or altered, is found here.
        let written = list.written_blocks();
        if written != total_blocks {
            return Err(FormatError::invalid(
                "transfer list",
                format!("the commands write {written} blocks, the header says {total_blocks} (a cut or altered list)"),
            ));
        }
        Ok(list)
    }

    /// Blocks the `new`, `zero`, `move` and patch commands write.
    pub fn written_blocks(&self) -> u64 {
        self.commands
            .iter()
            .map(|(_, c)| match c {
                Command::Erase(_) => 0,
                c => c.target().map_or(0, RangeSet::blocks),
            })
            .sum()
    }

    /// Blocks of new.dat the commands consume.
    pub fn new_blocks(&self) -> u64 {
        self.commands
            .iter()
            .map(|(_, c)| match c {
                Command::New(r) => r.blocks(),
                _ => 0,
            })
            .sum()
    }

    /// The partition's size in blocks as far as the list knows it: the end
    /// of the last block any command names.
    pub fn blocks_named(&self) -> u64 {
        let written = self.commands.iter().filter_map(|(_, c)| c.target());
        written
            .map(RangeSet::end)
            .fold(self.blocks_read(), u64::max)
    }

    /// The end of the last block any command reads from the image: the
    /// size an image must have at least (writes past its end extend it).
    pub fn blocks_read(&self) -> u64 {
        let mut end = 0;
        for (_, c) in &self.commands {
            if let Some(r) = c.source().and_then(|s| s.ranges.as_ref()) {
                end = end.max(r.end());
            }
            if let Command::Stash { ranges, .. } = c {
                end = end.max(ranges.end());
            }
        }
        end
    }

    /// Whether any command reads the old image (an incremental).
    pub fn reads_source(&self) -> bool {
        self.commands.iter().any(|(_, c)| {
            matches!(
                c,
                Command::Move { .. } | Command::Patch { .. } | Command::Stash { .. }
            )
        })
    }
}

impl Source {
    /// A buffer of `ranges`, in order.
    pub fn whole(ranges: RangeSet) -> Self {
        Source {
            blocks: ranges.blocks(),
            ranges: Some(ranges),
            at: None,
            stashes: Vec::new(),
        }
    }
}

fn v1_source(line: usize, src: RangeSet, target: &RangeSet) -> Result<Source, FormatError> {
    if src.blocks() != target.blocks() {
        return Err(bad(
            line,
            format!(
                "a move of {} source blocks to {} target blocks",
                src.blocks(),
                target.blocks()
            ),
        ));
    }
    Ok(Source::whole(src))
}
