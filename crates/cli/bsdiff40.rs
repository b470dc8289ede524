//! `romdelta bsdiff` and `romdelta bspatch`: BSDIFF40 patches, compatible
//! with Debian's `bsdiff`/`bspatch` 4.3 in both directions.

use crate::{print_json, Failure};
use anyhow::Context as _;
use std::io::Write;
use std::path::Path;

/// Reads a whole input file.
fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    Ok(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
}

/// Writes `out` through a temporary file beside `path`, renamed into place
/// only when `fill` succeeded: a failed run leaves no file that looks done.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<u64, Failure>,
) -> Result<u64, Failure> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".romdelta-")
        .suffix(".partial")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut w = std::io::BufWriter::new(tmp.as_file());
    let n = fill(&mut w)?;
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    drop(w);
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(n)
}

#[derive(serde::Serialize)]
struct Report<'a> {
    old: &'a Path,
    new: &'a Path,
    patch: &'a Path,
    old_bytes: u64,
    new_bytes: u64,
    patch_bytes: u64,
}

fn report(old: &Path, new: &Path, patch: &Path, json: bool, verb: &str) -> Result<(), Failure> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let r = Report {
        old,
        new,
        patch,
        old_bytes: len(old),
        new_bytes: len(new),
        patch_bytes: len(patch),
    };
    if json {
        print_json(&r);
    } else {
        say!(
            "{verb}: {} ({} bytes) -> {} ({} bytes), patch {} ({} bytes)",
            old.display(),
            r.old_bytes,
            new.display(),
            r.new_bytes,
            patch.display(),
            r.patch_bytes
        );
    }
    Ok(())
}

/// `romdelta bsdiff OLD NEW PATCH`.
pub fn diff(old: &Path, new: &Path, patch: &Path, json: bool) -> Result<(), Failure> {
    let (o, n) = (read(old)?, read(new)?);
    write_atomically(patch, |w| {
        Ok(romdelta_format::bsdiff40::diff(&o, &n, w)
            .with_context(|| format!("writing {}", patch.display()))?)
    })?;
    report(old, new, patch, json, "bsdiff")
}

/// `romdelta bspatch OLD NEW PATCH`.
pub fn patch(old: &Path, new: &Path, patch: &Path, json: bool) -> Result<(), Failure> {
    let (o, p) = (read(old)?, read(patch)?);
    write_atomically(new, |w| {
        romdelta_format::bsdiff40::apply(&p, &o, w).map_err(|e| Failure {
            code: 1,
            error: anyhow::Error::new(e).context(format!("{}", patch.display())),
        })
    })?;
    report(old, new, patch, json, "bspatch")
}
