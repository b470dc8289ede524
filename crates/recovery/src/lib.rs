//! A simulated device that installs romdelta packages the way an A/B
//! recovery or update client does.
//!
//! A device is a directory:
//! - `NAME_a.img`, `NAME_b.img`: the partition images of slots `a` and `b`;
//! - `build_a.prop`, `build_b.prop`: the build installed in each slot (the
//!   `build.prop` keys romdelta reads), when known;
//! - `state.json`: which slot is active, the partitions, and the update in
//!   progress, if any; always replaced whole (written, synced, renamed).
//!
//! [`Device::install`] checks the package (signature, then the update rules
//! against the build of the active slot) before writing anything, writes
//! the inactive slot from the active one through a resumable apply, and
//! switches the active slot only after every partition verified. Until that
//! switch the active slot is untouched, so whatever happens during an
//! install (an error, a kill, a power cut) the device still boots the old
//! build; running the same install again resumes it.
//!
//! A device's own paths are never followed through a symbolic link: one
//! found where the device keeps a slot being written, its staged output or
//! its journal is refused and left alone (the device directory itself may
//! be named through a link).

use romdelta_apply::rules::{check_rules, Allow};
use romdelta_apply::{ApplyError, PackageFile, Plan};
use romdelta_format::{buildprop, BuildInfo, PackageKind};
use romdelta_rom::{Access, Rom};
use romdelta_storage::{Made, OpenMode, RealFs, Storage};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The package was refused or did not apply.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The device directory is not a usable device.
    #[error("device {dir}: {reason}")]
    Device {
        /// The device directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
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

impl RecoveryError {
    /// Exit code: 1 for a refused or failed package, 2 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            RecoveryError::Apply(e) => e.exit_code(),
            _ => 2,
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A slot of an A/B device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot `a`.
    A,
    /// Slot `b`.
    B,
}

impl Slot {
    /// The suffix letter.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// An update being written to the inactive slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    /// The slot being written.
    pub target_slot: Slot,
    /// SHA-256 (hex) of the manifest of the package being installed.
    pub manifest_sha256: String,
    /// `writing` until every partition verified, then `verified` until the
    /// slot switch is recorded.
    pub status: String,
}

/// How a device keeps its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slots {
    /// Two slots: an update writes the inactive one, then switches.
    #[default]
    Ab,
    /// One slot, updated in place (`NAME.img`, `build.prop`): between the
    /// first write and the last, the device boots only into recovery, which
    /// resumes the update.
    Single,
}

/// The device's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// State file version (1).
    pub version: u32,
    /// A/B or single slot.
    #[serde(default)]
    pub slots: Slots,
    /// The slot the device boots.
    pub active: Slot,
    /// Partitions of each slot, by name.
    pub partitions: Vec<String>,
    /// The update in progress, if any.
    pub update: Option<UpdateState>,
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The state file.
    pub state: State,
    /// The build of slot `a`, if known.
    pub build_a: Option<BuildInfo>,
    /// The build of slot `b`, if known.
    pub build_b: Option<BuildInfo>,
}

/// What an install did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    /// The slot written, now active.
    pub slot: Slot,
    /// The build now active.
    pub build: BuildInfo,
    /// Partitions written.
    pub partitions: Vec<romdelta_apply::WrittenPartition>,
    /// Operations an interrupted earlier attempt had finished.
    pub resumed_ops: u64,
    /// Whether the package was compared with the build the device runs
    /// (false when that build is unknown, or the check was skipped).
    pub rules_checked: bool,
}

/// The signature check of an install: given the manifest bytes and the
/// signatures, accept or refuse.
pub type Admit<'a> = dyn Fn(&[u8], &[romdelta_format::Signature]) -> Result<(), ApplyError> + 'a;

/// A simulated A/B device.
pub struct Device {
    fs: Arc<dyn Storage>,
    checkpoint: romdelta_apply::CheckpointEvery,
    dir: PathBuf,
    state: State,
}

impl Device {
    /// Creates a device at `dir` (new or empty) with both slots holding the
    /// images of `rom` (a directory of `NAME.img`, or one image), slot `a`
    /// active. `build` is the build installed (default: `rom/build.prop`).
    pub fn init(
        dir: &Path,
        rom: &Path,
        build: Option<BuildInfo>,
        slots: Slots,
    ) -> Result<Device, RecoveryError> {
        let dir = romdelta_storage::resolve_link(dir).map_err(io(dir))?;
        Self::init_on(Arc::new(RealFs), &dir, rom, build, slots)
    }

    /// [`Device::init`] with the device's files on `fs` (the ROM is read
    /// from the real file system).
    pub fn init_on(
        fs: Arc<dyn Storage>,
        dir: &Path,
        rom: &Path,
        build: Option<BuildInfo>,
        slots: Slots,
    ) -> Result<Device, RecoveryError> {
        let exists = fs.entry(dir).map_err(io(dir))?.is_some();
        if exists && !fs.read_dir(dir).map_err(io(dir))?.is_empty() {
            return Err(RecoveryError::Device {
                dir: dir.to_path_buf(),
                reason: "exists and is not empty".into(),
            });
        }
        let source = Rom::open_with(rom, Access::Read).map_err(|e| RecoveryError::Device {
            dir: rom.to_path_buf(),
            reason: e.to_string(),
        })?;
        let build = match build {
            Some(b) => Some(b),
            None if rom.join("build.prop").is_file() => {
                let p = rom.join("build.prop");
                let text = std::fs::read_to_string(&p).map_err(io(&p))?;
                Some(
                    buildprop::parse_build_prop(&text).map_err(|e| RecoveryError::Device {
                        dir: p.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        if !exists {
            fs.create_dir(dir).map_err(io(dir))?;
            let parent = romdelta_storage::parent_of(dir);
            fs.sync_dir(&parent).map_err(io(&parent))?;
        }
        let device = Device {
            fs,
            checkpoint: Default::default(),
            dir: dir.to_path_buf(),
            state: State {
                version: 1,
                slots,
                active: Slot::A,
                partitions: source.partitions.iter().map(|p| p.name.clone()).collect(),
                update: None,
            },
        };
        for p in &source.partitions {
            for slot in device.slots() {
                copy_in(&*device.fs, p, &device.image_path(&p.name, slot))?;
            }
        }
        device.fs.sync_dir(dir).map_err(io(dir))?;
        if let Some(b) = &build {
            for slot in device.slots() {
                device.write_build(slot, b)?;
            }
        }
        device.save()?;
        Ok(device)
    }

    /// Opens the device at `dir`.
    pub fn open(dir: &Path) -> Result<Device, RecoveryError> {
        let dir = romdelta_storage::resolve_link(dir).map_err(io(dir))?;
        Self::open_on(Arc::new(RealFs), &dir)
    }

    /// [`Device::open`] on `fs`.
    pub fn open_on(fs: Arc<dyn Storage>, dir: &Path) -> Result<Device, RecoveryError> {
        let path = dir.join("state.json");
        let bytes = romdelta_storage::read_file(&*fs, &path, 1 << 20).map_err(io(&path))?;
        let state: State = serde_json::from_slice(&bytes).map_err(|e| RecoveryError::Device {
            dir: dir.to_path_buf(),
            reason: format!("state.json: {e}"),
        })?;
        if state.version != 1 {
            return Err(RecoveryError::Device {
                dir: dir.to_path_buf(),
                reason: format!("state.json version {}, expected 1", state.version),
            });
        }
        for name in &state.partitions {
            romdelta_format::check_partition_name(name).map_err(|e| RecoveryError::Device {
                dir: dir.to_path_buf(),
                reason: format!("state.json: {e}"),
            })?;
        }
        Ok(Device {
            fs,
            checkpoint: Default::default(),
            dir: dir.to_path_buf(),
            state,
        })
    }

    /// Checks that `path`, a path of the device where romdelta makes
    /// `made` (`what` names it), holds nothing else: a symbolic link there
    /// is refused and left alone. Returns whether anything is there.
    fn own(&self, path: &Path, made: Made, what: &str) -> Result<bool, RecoveryError> {
        let found = self.fs.entry(path).map_err(io(path))?;
        romdelta_storage::check_made(found, made, path, what)
            .map(|k| k.is_some())
            .map_err(|reason| RecoveryError::Device {
                dir: self.dir.clone(),
                reason,
            })
    }

    /// The state file as loaded.
    pub fn state(&self) -> &State {
        &self.state
    }

    fn save(&self) -> Result<(), RecoveryError> {
        let bytes = serde_json::to_vec_pretty(&self.state).expect("serializable");
        let path = self.dir.join("state.json");
        romdelta_storage::write_durably(&*self.fs, &path, &bytes).map_err(io(&path))
    }

    /// The slots the device has: `a` and `b`, or only `a`.
    pub fn slots(&self) -> Vec<Slot> {
        match self.state.slots {
            Slots::Ab => vec![Slot::A, Slot::B],
            Slots::Single => vec![Slot::A],
        }
    }

    fn build_path(&self, slot: Slot) -> PathBuf {
        match self.state.slots {
            Slots::Ab => self.dir.join(format!("build_{}.prop", slot.letter())),
            Slots::Single => self.dir.join("build.prop"),
        }
    }

    fn write_build(&self, slot: Slot, b: &BuildInfo) -> Result<(), RecoveryError> {
        let path = self.build_path(slot);
        romdelta_storage::write_durably(&*self.fs, &path, buildprop::build_prop_text(b).as_bytes())
            .map_err(io(&path))
    }

    /// The build installed in `slot`, if recorded.
    pub fn build(&self, slot: Slot) -> Result<Option<BuildInfo>, RecoveryError> {
        let p = self.build_path(slot);
        let text = romdelta_storage::read_file(&*self.fs, &p, 1 << 20)
            .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8")));
        match text {
            Ok(text) => {
                buildprop::parse_build_prop(&text)
                    .map(Some)
                    .map_err(|e| RecoveryError::Device {
                        dir: p.clone(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// The partition images of `slot`, as a ROM read through bounded buffers.
    pub fn slot_rom(&self, slot: Slot) -> Result<Rom, RecoveryError> {
        let files: Vec<(String, PathBuf)> = self
            .state
            .partitions
            .iter()
            .map(|n| (n.clone(), self.image_path(n, slot)))
            .collect();
        Rom::from_storage(&files, &*self.fs).map_err(|e| RecoveryError::Device {
            dir: self.dir.clone(),
            reason: e.to_string(),
        })
    }

    /// Where partition `name` of `slot` lives.
    pub fn image_path(&self, name: &str, slot: Slot) -> PathBuf {
        match self.state.slots {
            Slots::Ab => self.dir.join(format!("{name}_{}.img", slot.letter())),
            Slots::Single => self.dir.join(format!("{name}.img")),
        }
    }

    /// The state and both slots' builds.
    pub fn status(&self) -> Result<Status, RecoveryError> {
        Ok(Status {
            state: self.state.clone(),
            build_a: self.build(Slot::A)?,
            build_b: match self.state.slots {
                Slots::Ab => self.build(Slot::B)?,
                Slots::Single => None,
            },
        })
    }

    /// Installs the package at `package` into the inactive slot and makes
    /// it active. `admit` checks the signatures (it gets the manifest bytes
    /// and signatures); the update rules are checked against the active
    /// slot's build. Nothing is written before both pass.
    pub fn install(
        &mut self,
        package: &Path,
        admit: &Admit<'_>,
        allow: Allow,
    ) -> Result<InstallReport, RecoveryError> {
        self.install_from(&PackageFile::open(package)?, admit, allow)
    }

    /// Installs the package `file` reads (a local file, or a remote one
    /// read by ranges as the install needs its bytes), as
    /// [`Device::install`] does.
    pub fn install_from(
        &mut self,
        file: &PackageFile,
        admit: &Admit<'_>,
        allow: Allow,
    ) -> Result<InstallReport, RecoveryError> {
        let prefix = file.prefix();
        admit(&prefix.manifest_bytes, &prefix.signatures)?;
        // Decoded from the very bytes whose signature was checked.
        let manifest = file.manifest()?;
        romdelta_apply::check_memory(&manifest, allow.max_memory_mib)?;
        let manifest_sha = romdelta_format::hex_digest(&prefix.manifest_sha256());
        let active = self.state.active;
        let installed = self.build(active)?;
        // An update of this very package that was under way passed the
        // rules when it started; an in-place one may have recorded the new
        // build already, before it could record that it had finished.
        let resuming = self
            .state
            .update
            .as_ref()
            .is_some_and(|u| u.manifest_sha256 == manifest_sha);
        // A resumed install passed the rules when it started.
        let rules_checked = resuming || check_rules(&manifest, installed.as_ref(), allow)?;
        if self.state.slots == Slots::Single {
            return self.install_in_place(&manifest, file, manifest_sha, rules_checked);
        }
        romdelta_apply::check_ab_package(&manifest)?;
        let target = active.other();
        let out = self.new_dir(target);
        let (staged, journal) = romdelta_apply::staging_paths(&out);
        self.own(&out, Made::Dir, "the slot directory")?;
        let has_staged = self.own(&staged, Made::FileOrDir, "the staged slot")?;
        let has_journal = self.own(&journal, Made::File, "the resume journal")?;
        // A run of this package that verified every image and died before
        // the switch has nothing left to write.
        let this_one =
            |u: &UpdateState| u.target_slot == target && u.manifest_sha256 == manifest_sha;
        let mut verified = self
            .state
            .update
            .as_ref()
            .is_some_and(|u| this_one(u) && u.status == "verified");
        // Or it finished writing and verifying, and died before it could
        // record so (the journal already removed, the images staged or put
        // in place): they are checked again rather than written (and
        // downloaded) again.
        if !verified && !has_journal && self.state.update.as_ref().is_some_and(this_one) {
            let fs = &*self.fs;
            let hold = |dir: &Path| {
                romdelta_apply::images_hold(fs, &manifest, |n| dir.join(format!("{n}.img")))
            };
            if !has_staged {
                verified = hold(&out)?;
            } else if hold(&staged)? {
                romdelta_storage::remove_all(fs, &out).map_err(io(&out))?;
                fs.rename(&staged, &out).map_err(io(&out))?;
                verified = true;
            }
        }
        if self
            .state
            .update
            .as_ref()
            .is_some_and(|u| u.manifest_sha256 != manifest_sha)
        {
            // Another package was being written to the inactive slot: its
            // progress cannot serve this one. Start over.
            let fs = &*self.fs;
            if has_journal {
                fs.remove_file(&journal).map_err(io(&journal))?;
            }
            if has_staged {
                romdelta_storage::remove_all(fs, &staged).map_err(io(&staged))?;
            }
        }
        let source = match manifest.kind {
            PackageKind::Delta => Some(self.slot_rom(active)?),
            PackageKind::Full => None,
        };
        let mut resumed_ops = 0;
        if !verified {
            // Record the update before the first write to the inactive slot.
            self.state.update = Some(UpdateState {
                target_slot: target,
                manifest_sha256: manifest_sha.clone(),
                status: "writing".into(),
            });
            self.save()?;
            let fs = &*self.fs;
            romdelta_storage::remove_all(fs, &out).map_err(io(&out))?;
            fs.create_dir(&out).map_err(io(&out))?;
            let plan = Plan::for_file_on(&manifest, file, source.as_ref(), &out, fs)?
                .checkpoint_every(self.checkpoint);
            resumed_ops = plan.execute(&|_| {})?.resumed_ops;
        }
        self.state.update.as_mut().expect("set above").status = "verified".into();
        self.save()?;
        // Move the verified images into the slot, then switch.
        let fs = &*self.fs;
        for p in &manifest.partitions {
            let from = out.join(format!("{}.img", p.name));
            let to = self.image_path(&p.name, target);
            if romdelta_storage::exists(fs, &from).map_err(io(&from))? {
                fs.rename(&from, &to).map_err(io(&to))?;
            }
        }
        for name in &self.state.partitions {
            if manifest.partitions.iter().all(|p| &p.name != name) {
                let old = self.image_path(name, target);
                not_found_is_fine(fs.remove_file(&old)).map_err(io(&old))?;
            }
        }
        not_found_is_fine(fs.remove_dir(&out)).map_err(io(&out))?;
        let build = self.record_installed(target, &manifest)?;
        Ok(InstallReport {
            slot: target,
            build,
            partitions: written(&manifest),
            resumed_ops,
            rules_checked,
        })
    }

    /// Updates a single-slot device in place; run again after any
    /// interruption, it resumes.
    fn install_in_place(
        &mut self,
        manifest: &romdelta_format::Manifest,
        file: &PackageFile,
        manifest_sha: String,
        rules_checked: bool,
    ) -> Result<InstallReport, RecoveryError> {
        let fs = &*self.fs;
        romdelta_apply::check_in_place_package(manifest)?;
        let (journal, _) = romdelta_apply::in_place_paths(&self.dir, false);
        let has_journal = self.own(&journal, Made::File, "the resume journal")?;
        let same = self
            .state
            .update
            .as_ref()
            .is_some_and(|u| u.manifest_sha256 == manifest_sha);
        // This package already wrote and verified every image, and the run
        // stopped before recording the new build: nothing left to write.
        let plan = romdelta_apply::InPlacePlan::for_file_on(manifest, file, &self.dir, fs)?
            .checkpoint_every(self.checkpoint);
        let finished = same && !has_journal && plan.images_are_new()?;
        let mut resumed_ops = 0;
        if !finished {
            self.state.update = Some(UpdateState {
                target_slot: Slot::A,
                manifest_sha256: manifest_sha,
                status: "writing".into(),
            });
            self.save()?;
            resumed_ops = plan.execute(&|_| {})?.resumed_ops;
        }
        let build = self.record_installed(Slot::A, manifest)?;
        Ok(InstallReport {
            slot: Slot::A,
            build,
            partitions: written(manifest),
            resumed_ops,
            rules_checked,
        })
    }

    /// Records that `slot` holds the target build of `m` and boots it: its
    /// build file first, then the state (partitions, active slot, no update
    /// in progress). Returns the build.
    fn record_installed(
        &mut self,
        slot: Slot,
        m: &romdelta_format::Manifest,
    ) -> Result<BuildInfo, RecoveryError> {
        let build = m.target_build.clone();
        self.write_build(slot, &build)?;
        self.state.partitions = m.partitions.iter().map(|p| p.name.clone()).collect();
        self.state.active = slot;
        self.state.update = None;
        self.save()?;
        Ok(build)
    }

    /// How often installs checkpoint.
    pub fn checkpoint(&self) -> romdelta_apply::CheckpointEvery {
        self.checkpoint
    }

    /// Makes installs checkpoint at `every` (default: 16 MiB or 0.5 s).
    pub fn checkpoint_every(&mut self, every: romdelta_apply::CheckpointEvery) {
        self.checkpoint = every;
    }

    fn new_dir(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("slot_{}.new", slot.letter()))
    }
}

/// A removal's result, where nothing there (already removed) is success.
fn not_found_is_fine(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Copies the image of `p` to `to` on `fs`, synced.
fn copy_in(fs: &dyn Storage, p: &romdelta_rom::Partition, to: &Path) -> Result<(), RecoveryError> {
    let f = fs.open(to, OpenMode::CreateNew).map_err(io(to))?;
    let mut at = 0u64;
    let mut res = Ok(());
    let extent = romdelta_format::Extent::new(0, p.blocks());
    p.for_each_piece(&[extent], |b| {
        if res.is_ok() && at < p.size() {
            let n = (b.len() as u64).min(p.size() - at) as usize;
            res = f.write_at(&b[..n], at);
            at += n as u64;
        }
    })
    .map_err(|e| RecoveryError::Device {
        dir: p.path.clone(),
        reason: e.to_string(),
    })?;
    res.map_err(io(to))?;
    f.sync().map_err(io(to))
}

/// The partitions a package writes, as an install reports them.
fn written(m: &romdelta_format::Manifest) -> Vec<romdelta_apply::WrittenPartition> {
    m.partitions
        .iter()
        .map(|p| romdelta_apply::WrittenPartition {
            name: p.name.clone(),
            size: p.new.size,
            sha256: romdelta_format::hex_digest(&p.new.sha256),
        })
        .collect()
}
