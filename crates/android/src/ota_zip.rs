//! A/B OTA zips as releasetools' `ota_from_target_files` lays them out:
//! `payload.bin` and `payload_properties.txt` stored (uncompressed, so that
//! a device can stream them from the zip by offset), `care_map.pb` when
//! partitions carry verity, and the package metadata twice, as
//! `META-INF/com/android/metadata` (sorted `key=value` lines) and
//! `META-INF/com/android/metadata.pb` (the `OtaMetadata` message of
//! releasetools' `ota_metadata.proto`), both stored and last.
//!
//! The metadata records the streaming property files: for each stored
//! entry a device may fetch by itself, `name:offset:size` of its bytes in
//! the zip (`ota-streaming-property-files`: payload.bin,
//! payload_properties.txt, care_map.pb, metadata, metadata.pb;
//! `ota-property-files`: the same after `payload_metadata.bin`, the
//! payload's header, manifest and metadata signature). The metadata
//! entries hold their own offsets, so they are written last, with the
//! offset each will have; the finished zip is read back and every offset
//! checked before it is declared done.

use prost::Message as _;
use romdelta_format::FormatError;
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};

/// The legacy metadata entry.
pub const METADATA: &str = "META-INF/com/android/metadata";
/// The protobuf metadata entry.
pub const METADATA_PB: &str = "META-INF/com/android/metadata.pb";
/// The care map entry.
pub const CARE_MAP: &str = "care_map.pb";

/// The build a package installs or starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildState {
    /// `ro.product.device`.
    pub device: String,
    /// `ro.build.fingerprint`.
    pub fingerprint: String,
    /// `ro.build.version.incremental`.
    pub incremental: String,
    /// `ro.build.date.utc`.
    pub timestamp: i64,
    /// `ro.build.version.security_patch`.
    pub security_patch_level: String,
}

/// One partition of the care map: the blocks a device's update_verifier
/// reads through dm-verity after the first boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareMapEntry {
    /// Partition name.
    pub name: String,
    /// Block ranges, `[start, end)`.
    pub ranges: Vec<(u64, u64)>,
    /// The build property that identifies the partition's build.
    pub id: String,
    /// Its value.
    pub fingerprint: String,
}

/// What goes into an OTA zip besides the payload.
#[derive(Debug, Clone, Default)]
pub struct OtaPackage {
    /// The build the package installs.
    pub post: BuildState,
    /// The build an incremental package applies to.
    pub pre: Option<BuildState>,
    /// Whether the package moves to an older build (allowed, and said).
    pub downgrade: bool,
    /// Partitions with verity.
    pub care_map: Vec<CareMapEntry>,
}

/// Protobuf messages of releasetools' `ota_metadata.proto` and
/// `care_map.proto`.
pub mod proto {
    use std::collections::BTreeMap;

    /// `DeviceState`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeviceState {
        /// Device names.
        #[prost(string, repeated, tag = "1")]
        pub device: Vec<String>,
        /// Fingerprints.
        #[prost(string, repeated, tag = "2")]
        pub build: Vec<String>,
        /// `ro.build.version.incremental`.
        #[prost(string, tag = "3")]
        pub build_incremental: String,
        /// Build time.
        #[prost(int64, tag = "4")]
        pub timestamp: i64,
        /// `ro.build.version.sdk`.
        #[prost(string, tag = "5")]
        pub sdk_level: String,
        /// Security patch level.
        #[prost(string, tag = "6")]
        pub security_patch_level: String,
    }

    /// `OtaMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OtaMetadata {
        /// 1: AB, 2: BLOCK.
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        /// Wipe after the update.
        #[prost(bool, tag = "2")]
        pub wipe: bool,
        /// The post build is older than the pre build.
        #[prost(bool, tag = "3")]
        pub downgrade: bool,
        /// Property files by name.
        #[prost(btree_map = "string, string", tag = "4")]
        pub property_files: BTreeMap<String, String>,
        /// The device state the package requires.
        #[prost(message, optional, tag = "5")]
        pub precondition: Option<DeviceState>,
        /// The device state after it.
        #[prost(message, optional, tag = "6")]
        pub postcondition: Option<DeviceState>,
        /// Retrofits dynamic partitions.
        #[prost(bool, tag = "7")]
        pub retrofit_dynamic_partitions: bool,
        /// Cache bytes a non-A/B update needs.
        #[prost(int64, tag = "8")]
        pub required_cache: i64,
    }

    /// `CareMap.PartitionInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CareMapPartition {
        /// Partition name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Ranges as releasetools' `RangeSet.to_string_raw` writes them.
        #[prost(string, tag = "2")]
        pub ranges: String,
        /// The build property naming the partition's build.
        #[prost(string, tag = "3")]
        pub id: String,
        /// Its value.
        #[prost(string, tag = "4")]
        pub fingerprint: String,
    }

    /// `CareMap`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CareMap {
        /// One per partition.
        #[prost(message, repeated, tag = "1")]
        pub partitions: Vec<CareMapPartition>,
    }
}

/// The care map message of `entries`.
pub fn care_map(entries: &[CareMapEntry]) -> Vec<u8> {
    proto::CareMap {
        partitions: entries
            .iter()
            .map(|e| {
                let mut raw = vec![(e.ranges.len() * 2).to_string()];
                for (a, b) in &e.ranges {
                    raw.push(a.to_string());
                    raw.push(b.to_string());
                }
                proto::CareMapPartition {
                    name: e.name.clone(),
                    ranges: raw.join(","),
                    id: e.id.clone(),
                    fingerprint: e.fingerprint.clone(),
                }
            })
            .collect(),
    }
    .encode_to_vec()
}

fn device_state(b: &BuildState, post: bool) -> proto::DeviceState {
    proto::DeviceState {
        device: vec![b.device.clone()],
        build: vec![b.fingerprint.clone()],
        build_incremental: b.incremental.clone(),
        timestamp: if post { b.timestamp } else { 0 },
        sdk_level: String::new(),
        security_patch_level: if post {
            b.security_patch_level.clone()
        } else {
            String::new()
        },
    }
}

impl OtaPackage {
    /// The `OtaMetadata` message with `property_files`.
    pub fn metadata(&self, property_files: &BTreeMap<String, String>) -> proto::OtaMetadata {
        let post = device_state(&self.post, true);
        let pre = match &self.pre {
            Some(p) => device_state(p, false),
            None => proto::DeviceState {
                device: post.device.clone(),
                ..Default::default()
            },
        };
        proto::OtaMetadata {
            r#type: 1,
            downgrade: self.downgrade,
            property_files: property_files.clone(),
            precondition: Some(pre),
            postcondition: Some(post),
            ..Default::default()
        }
    }

    /// The legacy metadata text: sorted `key=value` lines.
    pub fn legacy_metadata(&self, property_files: &BTreeMap<String, String>) -> String {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        m.insert("ota-type".into(), "AB".into());
        if self.downgrade {
            m.insert("ota-downgrade".into(), "yes".into());
        }
        m.insert("ota-required-cache".into(), "0".into());
        m.insert("post-build".into(), self.post.fingerprint.clone());
        m.insert(
            "post-build-incremental".into(),
            self.post.incremental.clone(),
        );
        m.insert(
            "post-security-patch-level".into(),
            self.post.security_patch_level.clone(),
        );
        m.insert("post-timestamp".into(), self.post.timestamp.to_string());
        m.insert(
            "pre-device".into(),
            self.pre.as_ref().unwrap_or(&self.post).device.clone(),
        );
        if let Some(pre) = &self.pre {
            m.insert("pre-build".into(), pre.fingerprint.clone());
            m.insert("pre-build-incremental".into(), pre.incremental.clone());
        }
        m.extend(property_files.iter().map(|(k, v)| (k.clone(), v.clone())));
        m.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// A stored entry's bytes in a zip: `name:offset:size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

/// A writer that tells where it is without being asked (the zip writer
/// owns it).
struct Counted<W> {
    inner: W,
    pos: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.pos.set(self.pos.get() + n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for Counted<W> {
    fn seek(&mut self, p: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(p)?;
        self.pos.set(at);
        Ok(at)
    }
}

/// Bytes of a zip local file header before the name.
const LOCAL_HEADER: u64 = 30;
/// Reserved width of a metadata entry's `offset:size` (releasetools' 15).
const RESERVED: usize = 15;

/// The property-file strings, with the metadata entries' `offset:size`
/// given or left as reserved spaces.
fn property_files(
    spans: &[(&str, Span)],
    payload_metadata: Span,
    metadata: Option<(Span, Span)>,
) -> BTreeMap<String, String> {
    let tok = |n: &str, s: Span| format!("{n}:{}:{}", s.offset, s.size);
    let mut streaming: Vec<String> = spans.iter().map(|(n, s)| tok(n, *s)).collect();
    match metadata {
        Some((m, pb)) => {
            streaming.push(tok("metadata", m));
            streaming.push(tok("metadata.pb", pb));
        }
        None => {
            streaming.push(format!("metadata:{}", " ".repeat(RESERVED)));
            streaming.push(format!("metadata.pb:{}", " ".repeat(RESERVED)));
        }
    }
    let ab = std::iter::once(tok("payload_metadata.bin", payload_metadata))
        .chain(streaming.iter().cloned())
        .collect::<Vec<_>>()
        .join(",");
    let mut out = BTreeMap::new();
    out.insert("ota-streaming-property-files".into(), streaming.join(","));
    out.insert("ota-property-files".into(), ab);
    out
}

/// Pads each final string to the reserved placeholder's length.
fn padded(
    final_: BTreeMap<String, String>,
    reserved: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FormatError> {
    final_
        .into_iter()
        .map(|(k, v)| {
            let want = reserved[&k].len();
            if v.len() > want {
                return Err(FormatError::invalid(
                    "OTA zip",
                    format!("{k} needs {} bytes, {want} were reserved", v.len()),
                ));
            }
            let pad = " ".repeat(want - v.len());
            Ok((k, v + &pad))
        })
        .collect()
}

/// What [`write`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OtaZipSummary {
    /// `ota-streaming-property-files`, trimmed.
    pub streaming_property_files: String,
    /// `ota-property-files`, trimmed.
    pub property_files: String,
    /// Bytes of the zip.
    pub zip_bytes: u64,
}

/// Writes an A/B OTA zip to `out` from the payload (`payload_len` bytes
/// read from `payload`; its header, manifest and metadata signature take
/// `payload_metadata_len`), its properties file and `package`. The zip is
/// read back and every property-file offset checked against the bytes it
/// names.
pub fn write<W: Write + Read + Seek>(
    out: W,
    payload: &mut dyn Read,
    payload_len: u64,
    payload_metadata_len: u64,
    properties: &str,
    package: &OtaPackage,
) -> Result<(W, OtaZipSummary), FormatError> {
    use zip::write::SimpleFileOptions;
    let io = |e: std::io::Error| FormatError::invalid("OTA zip", e.to_string());
    let ze = |e: zip::result::ZipError| FormatError::invalid("OTA zip", e.to_string());
    let stored = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let pos = std::rc::Rc::new(std::cell::Cell::new(0));
    let start = {
        let mut out = out;
        let at = out.stream_position().map_err(io)?;
        pos.set(at);
        Counted {
            inner: out,
            pos: pos.clone(),
        }
    };
    let mut z = zip::ZipWriter::new(start);
    let mut spans: Vec<(&str, Span)> = Vec::new();
    // Each entry's data follows its local header: 30 bytes, the name, and
    // the extra field (a zip64 one for large files).
    let add = |z: &mut zip::ZipWriter<Counted<W>>,
               name: &'static str,
               size: u64,
               data: &mut dyn Read|
     -> Result<Span, FormatError> {
        let large = size >= 0xffff_ffff;
        let at = pos.get();
        z.start_file(name, stored.large_file(large)).map_err(ze)?;
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = data.read(&mut buf).map_err(io)?;
            if k == 0 {
                break;
            }
            z.write_all(&buf[..k]).map_err(io)?;
            n += k as u64;
        }
        if n != size {
            return Err(FormatError::invalid(
                "OTA zip",
                format!("{name}: {n} bytes, {size} expected"),
            ));
        }
        let extra = if large { 20 } else { 0 };
        Ok(Span {
            offset: at + LOCAL_HEADER + name.len() as u64 + extra,
            size,
        })
    };
    let payload_span = add(&mut z, "payload.bin", payload_len, payload)?;
    spans.push(("payload.bin", payload_span));
    let props = properties.as_bytes();
    let s = add(
        &mut z,
        "payload_properties.txt",
        props.len() as u64,
        &mut &props[..],
    )?;
    spans.push(("payload_properties.txt", s));
    if !package.care_map.is_empty() {
        let cm = care_map(&package.care_map);
        let s = add(&mut z, CARE_MAP, cm.len() as u64, &mut &cm[..])?;
        spans.push((CARE_MAP, s));
    }
    let payload_metadata = Span {
        offset: payload_span.offset,
        size: payload_metadata_len,
    };
    // The metadata entries: their sizes are those of the placeholder
    // strings; their offsets follow from where they start.
    let reserved = property_files(&spans, payload_metadata, None);
    let pb_len = package.metadata(&reserved).encoded_len() as u64;
    let text_len = package.legacy_metadata(&reserved).len() as u64;
    let here = pos.get();
    let meta_pb = Span {
        offset: here + LOCAL_HEADER + METADATA_PB.len() as u64,
        size: pb_len,
    };
    let meta = Span {
        offset: meta_pb.offset + pb_len + LOCAL_HEADER + METADATA.len() as u64,
        size: text_len,
    };
    let files = padded(
        property_files(&spans, payload_metadata, Some((meta, meta_pb))),
        &reserved,
    )?;
    let pb = package.metadata(&files).encode_to_vec();
    let text = package.legacy_metadata(&files);
    if pb.len() as u64 != pb_len || text.len() as u64 != text_len {
        return Err(FormatError::invalid(
            "OTA zip",
            "the metadata changed size when its offsets were filled in",
        ));
    }
    add(&mut z, METADATA_PB, pb_len, &mut &pb[..])?;
    add(&mut z, METADATA, text_len, &mut &text.as_bytes()[..])?;
    let mut out = z.finish().map_err(ze)?.inner;
    // Read back: every span must be where the metadata says.
    let zip_bytes = out.seek(std::io::SeekFrom::End(0)).map_err(io)?;
    out.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    let mut check = zip::ZipArchive::new(&mut out).map_err(ze)?;
    let names = [
        ("payload.bin", payload_span),
        ("payload_properties.txt", spans[1].1),
        (METADATA_PB, meta_pb),
        (METADATA, meta),
    ];
    for (name, span) in names.into_iter().chain(spans.iter().skip(2).copied()) {
        let e = check.by_name(name).map_err(ze)?;
        let found = (e.data_start().unwrap_or(u64::MAX), e.size());
        if found != (span.offset, span.size) || e.compression() != zip::CompressionMethod::Stored {
            return Err(FormatError::invalid(
                "OTA zip",
                format!(
                    "{name} lies at {}:{} in the written zip, not {}:{}",
                    found.0, found.1, span.offset, span.size
                ),
            ));
        }
    }
    drop(check);
    let summary = OtaZipSummary {
        streaming_property_files: files["ota-streaming-property-files"].trim_end().to_string(),
        property_files: files["ota-property-files"].trim_end().to_string(),
        zip_bytes,
    };
    Ok((out, summary))
}

/// Parses property-file strings (`name:offset:size,...`, trailing spaces
/// allowed) into spans by name.
pub fn parse_property_files(s: &str) -> Result<BTreeMap<String, Span>, FormatError> {
    let bad = |d: String| FormatError::invalid("property files", d);
    let mut out = BTreeMap::new();
    for tok in s.trim_end().split(',') {
        let mut it = tok.rsplitn(3, ':');
        let (Some(size), Some(offset), Some(name)) = (it.next(), it.next(), it.next()) else {
            return Err(bad(format!("{tok:?} is not name:offset:size")));
        };
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{tok:?}: {v:?} is not a number")))
        };
        out.insert(
            name.to_string(),
            Span {
                offset: num(offset)?,
                size: num(size)?,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> OtaPackage {
        OtaPackage {
            post: BuildState {
                device: "walleye".into(),
                fingerprint: "g/walleye/walleye:14/B/2:user/release-keys".into(),
                incremental: "2".into(),
                timestamp: 1_767_225_600,
                security_patch_level: "2026-11-05".into(),
            },
            pre: Some(BuildState {
                device: "walleye".into(),
                fingerprint: "g/walleye/walleye:14/A/1:user/release-keys".into(),
                incremental: "1".into(),
                timestamp: 1_764_547_200,
                security_patch_level: "2026-10-05".into(),
            }),
            downgrade: false,
            care_map: vec![CareMapEntry {
                name: "system".into(),
                ranges: vec![(0, 1536)],
                id: "ro.system.build.fingerprint".into(),
                fingerprint: "g/walleye/walleye:14/B/2:user/release-keys".into(),
            }],
        }
    }

    #[test]
    fn every_property_file_points_at_its_bytes() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let props = "FILE_HASH=x\nFILE_SIZE=100000\n";
        let (mut out, s) = write(
            std::io::Cursor::new(Vec::new()),
            &mut &payload[..],
            payload.len() as u64,
            300,
            props,
            &package(),
        )
        .unwrap();
        let zip = out.get_mut().clone();
        let spans = parse_property_files(&s.streaming_property_files).unwrap();
        let at = |sp: &Span| &zip[sp.offset as usize..(sp.offset + sp.size) as usize];
        assert_eq!(at(&spans["payload.bin"]), &payload[..]);
        assert_eq!(at(&spans["payload_properties.txt"]), props.as_bytes());
        assert_eq!(at(&spans[CARE_MAP]), &care_map(&package().care_map)[..]);
        let text = std::str::from_utf8(at(&spans["metadata"])).unwrap();
        assert!(
            text.contains("ota-type=AB\n") && text.contains("pre-build=g/walleye/walleye:14/A/1"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "ota-streaming-property-files={}",
                s.streaming_property_files
            )),
            "{text}"
        );
        let m = proto::OtaMetadata::decode(at(&spans["metadata.pb"])).unwrap();
        assert_eq!(m.postcondition.unwrap().timestamp, 1_767_225_600);
        let ab = parse_property_files(&s.property_files).unwrap();
        assert_eq!(
            ab["payload_metadata.bin"],
            Span {
                offset: spans["payload.bin"].offset,
                size: 300
            }
        );
        assert_eq!(
            care_map(&package().care_map)[..],
            proto::CareMap {
                partitions: vec![proto::CareMapPartition {
                    name: "system".into(),
                    ranges: "2,0,1536".into(),
                    id: "ro.system.build.fingerprint".into(),
                    fingerprint: "g/walleye/walleye:14/B/2:user/release-keys".into(),
                }],
            }
            .encode_to_vec()[..]
        );
    }
}
