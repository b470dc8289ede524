//! A block-based OTA as found on disk: a directory, or a zip (a recovery
//! ROM or an incremental OTA), holding per partition `NAME.transfer.list`,
//! `NAME.new.dat` (or `.new.dat.br`, `.new.dat.lzma`) and
//! `NAME.patch.dat`. The files are mapped, never copied; in a zip, a
//! stored member is read in place and a deflated new.dat is inflated as it
//! streams (a deflated patch.dat is inflated into memory, at most
//! [`MAX_INFLATED_PATCH`] bytes).

use super::{NewData, NewDataKind, TransferList, MAX_LIST};
use romdelta_format::{Digest, FormatError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most bytes a deflated patch.dat may inflate to.
pub const MAX_INFLATED_PATCH: u64 = 1 << 30;
/// Where a zip's updater script is.
const UPDATER_SCRIPT: &str = "META-INF/com/google/android/updater-script";
/// Most partitions a package may hold.
const MAX_PARTITIONS: usize = 64;

/// Why a package could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes are not a block-based OTA romdelta reads.
    #[error("{name}: {source}")]
    Format {
        /// The file (or partition) concerned.
        name: String,
        /// What is wrong.
        source: FormatError,
    },
    /// Nothing there is a block-based OTA.
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes of a member: a range of a mapped file, or inflated ones.
#[derive(Clone)]
enum Bytes {
    Mapped(Arc<memmap2::Mmap>, usize, usize),
    Owned(Arc<Vec<u8>>),
    Empty,
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m, at, len) => &m[*at..*at + *len],
            Bytes::Owned(v) => v,
            Bytes::Empty => &[],
        }
    }
}

/// One partition's files.
pub struct PartitionOta {
    /// The partition name (`system`, `vendor`, ...).
    pub name: String,
    /// The parsed transfer list.
    pub list: TransferList,
    /// SHA-256 of the transfer list's bytes (what a resume journal names).
    pub list_sha256: Digest,
    /// How new.dat is stored.
    pub new_kind: NewDataKind,
    patch: Bytes,
    new_data: Bytes,
    new_deflated: bool,
}

impl PartitionOta {
    /// patch.dat.
    pub fn patch(&self) -> &[u8] {
        self.patch.get()
    }

    /// A reader of new.dat from its first block.
    pub fn new_data(&self) -> Result<NewData<'_>, FormatError> {
        let bytes = self.new_data.get();
        if self.new_deflated {
            NewData::new(flate2::read::DeflateDecoder::new(bytes), self.new_kind)
        } else {
            NewData::new(bytes, self.new_kind)
        }
    }

    /// Bytes of new.dat as stored (compressed, when it is).
    pub fn new_data_len(&self) -> u64 {
        self.new_data.get().len() as u64
    }
}

/// A block-based OTA's partitions, in name order.
pub struct Package {
    /// The partitions.
    pub partitions: Vec<PartitionOta>,
}

fn map(path: &Path) -> Result<Bytes, PackageError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len() as usize;
    if len == 0 {
        return Ok(Bytes::Empty);
    }
    // SAFETY: the package is not changed while it is read; every use of
    // the map checks lengths first.
    let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io(path))?;
    Ok(Bytes::Mapped(Arc::new(m), 0, len))
}

/// A member's bytes as stored, and whether they are deflated.
struct Member {
    bytes: Bytes,
    deflated: bool,
}

impl Package {
    /// Reads the package at `path`: a directory or a zip.
    pub fn open(path: &Path) -> Result<Package, PackageError> {
        let meta = std::fs::metadata(path).map_err(io(path))?;
        let mut members: Vec<(String, Member)> = Vec::new();
        if meta.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(path)
                .map_err(io(path))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.contains(".transfer.list")
                        || n.contains(".new.dat")
                        || n.contains(".patch.dat")
                })
                .collect();
            names.sort();
            for n in names {
                let bytes = map(&path.join(&n))?;
                members.push((
                    n,
                    Member {
                        bytes,
                        deflated: false,
                    },
                ));
            }
        } else {
            members = zip_members(path)?;
        }
        let find = |n: &str| members.iter().find(|(m, _)| m == n).map(|(_, m)| m);
        let script = find(UPDATER_SCRIPT).and_then(|m| inflate_small(m, MAX_LIST).ok());
        let script = script.map(|s| String::from_utf8_lossy(&s).into_owned());
        let mut names: Vec<String> = members
            .iter()
            .filter_map(|(n, _)| n.strip_suffix(".transfer.list").map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(PackageError::Refused(format!(
                "{}: no NAME.transfer.list: not a block-based OTA (an A/B OTA holds payload.bin: use `romdelta payload`)",
                path.display()
            )));
        }
        if names.len() > MAX_PARTITIONS {
            return Err(PackageError::Refused(format!(
                "{} partitions, more than {MAX_PARTITIONS}",
                names.len()
            )));
        }
        let mut partitions = Vec::new();
        for name in names {
            let fmt = |file: &str| {
                let name = file.to_string();
                move |source| PackageError::Format { name, source }
            };
            let list_name = format!("{name}.transfer.list");
            let list_m = find(&list_name).expect("listed");
            let list_bytes = inflate_small(list_m, MAX_LIST).map_err(fmt(&list_name))?;
            let patch_name = format!("{name}.patch.dat");
            let patch = match find(&patch_name) {
                Some(m) if m.deflated => Bytes::Owned(Arc::new(
                    inflate_small(m, MAX_INFLATED_PATCH).map_err(fmt(&patch_name))?,
                )),
                Some(m) => m.bytes.clone(),
                None => Bytes::Empty,
            };
            let list = TransferList::parse(&list_bytes, patch.get().len() as u64)
                .map_err(fmt(&list_name))?;
            // Of several forms, the one the updater script extracts, else
            // the first of raw, .br, .lzma (releasetools makes .br from
            // the raw one).
            let kinds = [NewDataKind::Raw, NewDataKind::Brotli, NewDataKind::Lzma];
            let named = |k: &NewDataKind| {
                script
                    .as_deref()
                    .is_some_and(|s| s.contains(&format!("\"{name}.new.dat{}\"", k.suffix())))
            };
            let new = kinds
                .iter()
                .filter(|k| named(k))
                .chain(kinds.iter())
                .find_map(|&k| find(&format!("{name}.new.dat{}", k.suffix())).map(|m| (k, m)));
            let (new_kind, new_data, new_deflated) = match new {
                Some((k, m)) => (k, m.bytes.clone(), m.deflated),
                None if list.new_blocks() == 0 => (NewDataKind::Raw, Bytes::Empty, false),
                None => {
                    return Err(PackageError::Refused(format!(
                        "{name}: the list writes {} blocks from new.dat, and there is no {name}.new.dat (.br, .lzma)",
                        list.new_blocks()
                    )))
                }
            };
            if new_kind == NewDataKind::Raw
                && !new_deflated
                && new_data.get().len() as u64 != list.new_blocks() * super::BLOCK
            {
                return Err(PackageError::Format {
                    name: format!("{name}.new.dat"),
                    source: FormatError::invalid(
                        "new.dat",
                        format!(
                            "{} bytes, the list writes {} blocks from it",
                            new_data.get().len(),
                            list.new_blocks()
                        ),
                    ),
                });
            }
            partitions.push(PartitionOta {
                list_sha256: romdelta_format::sha256(&list_bytes),
                name,
                list,
                new_kind,
                patch,
                new_data,
                new_deflated,
            });
        }
        Ok(Package { partitions })
    }

    /// The partitions `names` selects (all when empty); an unknown name is
    /// an error that lists the package's.
    pub fn select(&self, names: &[String]) -> Result<Vec<&PartitionOta>, PackageError> {
        if names.is_empty() {
            return Ok(self.partitions.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.partitions
                    .iter()
                    .find(|p| &p.name == n)
                    .ok_or_else(|| {
                        PackageError::Refused(format!(
                            "no partition {n:?} in the package (it has {})",
                            self.partitions
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
            })
            .collect()
    }
}

/// A member inflated (if it is deflated) into memory, at most `max` bytes.
fn inflate_small(m: &Member, max: u64) -> Result<Vec<u8>, FormatError> {
    let src = m.bytes.get();
    if !m.deflated {
        if src.len() as u64 > max {
            return Err(FormatError::invalid(
                "member",
                format!("{} bytes, more than {max}", src.len()),
            ));
        }
        return Ok(src.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(src)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| FormatError::invalid("member", format!("inflate: {e}")))?;
    if out.len() as u64 > max {
        return Err(FormatError::invalid(
            "member",
            format!("inflates to more than {max} bytes"),
        ));
    }
    Ok(out)
}

/// The block-OTA members of the zip at `path` (at its top level), each as
/// its stored bytes.
fn zip_members(path: &Path) -> Result<Vec<(String, Member)>, PackageError> {
    let Bytes::Mapped(map, _, len) = map(path)? else {
        return Err(PackageError::Refused(format!(
            "{}: an empty file",
            path.display()
        )));
    };
    let refuse = |why: String| PackageError::Refused(format!("{}: {why}", path.display()));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&map[..]))
        .map_err(|e| refuse(format!("not a directory nor a zip: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let e = zip
            .by_index_raw(i)
            .map_err(|e| refuse(format!("zip entry {i}: {e}")))?;
        let name = e
            .name()
            .map_err(|e| refuse(format!("zip entry {i}: {e}")))?
            .to_string();
        if name != UPDATER_SCRIPT
            && (name.contains('/')
                || !(name.contains(".transfer.list")
                    || name.contains(".new.dat")
                    || name.contains(".patch.dat")))
        {
            continue;
        }
        if e.encrypted() {
            return Err(refuse(format!("{name} is encrypted")));
        }
        let deflated = match e.compression() {
            zip::CompressionMethod::Stored => false,
            zip::CompressionMethod::Deflated => true,
            other => return Err(refuse(format!("{name}: compression {other}"))),
        };
        let start = e
            .data_start()
            .ok_or_else(|| refuse(format!("{name}: no data offset")))?;
        let stored = e.compressed_size();
        if start.checked_add(stored).is_none_or(|end| end > len as u64) {
            return Err(refuse(format!("{name} ends past the end of the zip")));
        }
        out.push((
            name,
            Member {
                bytes: Bytes::Mapped(map.clone(), start as usize, stored as usize),
                deflated,
            },
        ));
    }
    Ok(out)
}
