//! Unpacking one layer tar into an overlay lower directory, refusing anything that
//! would write outside it.
//!
//! The layer is a tar stream, plain, gzip or zstd (recognized by its magic bytes, not
//! trusted from a media type). Each entry lands under `dest` with its mode, owner,
//! mtime, and for whiteouts the overlayfs encoding:
//!
//! ```text
//! tar entry                 in the layer dir
//! etc/.wh.motd          →   etc/motd         character device 0/0 (hides the lower file)
//! var/cache/.wh..wh..opq →  var/cache/       xattr trusted.overlay.opaque=y (hides the
//!                                            lower directory's whole content)
//! ```
//!
//! Safety: `dest` is a fresh directory private to this unpack (under the store's
//! `tmp/`), so the only way out is through the entries themselves. Refused: any path
//! with a `..` component, any entry whose parent path goes through a symlink created
//! by an earlier entry, a hard link whose target is `..`-relative or goes through a
//! symlink. Absolute paths are taken relative to the layer root, as Docker does.
//! Symlink *targets* are stored verbatim and never followed here: they are resolved
//! later inside the container's root. Regular files are created with `O_EXCL` after
//! removing whatever was there, so an existing symlink is never written through.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tar::EntryType;

use super::content::HashingReader;
use super::error::{ImageError, IoContext};

/// What a successful unpack measured.
#[derive(Debug, Clone)]
pub(crate) struct Unpacked {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// Bytes in the uncompressed tar stream.
    pub size: u64,
}

/// The compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Looks at the first bytes of a layer to tell its compression.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for.
pub(crate) fn decompress<'a, R: Read + 'a>(
    what: &str,
    reader: R,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    let mut reader = BufReader::with_capacity(256 << 10, reader);
    let head = reader
        .fill_buf()
        .ctx(|| format!("cannot read {what}"))?
        .to_vec();
    Ok(match sniff(&head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(reader)
                .map_err(|e| ImageError::invalid(what, format!("bad zstd stream: {e}")))?,
        ),
    })
}

/// Unpacks the layer stream `reader` into the existing, empty directory `dest`.
///
/// # Errors
/// [`ImageError::UnsafePath`] for an entry escaping `dest`; [`ImageError::Invalid`] for
/// a broken stream or an unsupported entry type; [`ImageError::Io`] for a failed file
/// operation. On error `dest` holds a partial tree: the caller discards it.
pub(crate) fn unpack_layer(
    what: &str,
    reader: impl Read,
    dest: &Path,
) -> Result<Unpacked, ImageError> {
    let decompressed = decompress(what, reader)?;
    let mut hashing = HashingReader::new(decompressed);
    let mut extractor = Extractor {
        what,
        root: dest,
        is_root: nix::unistd::geteuid().is_root(),
        dir_times: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|e| ImageError::invalid(what, format!("not a tar stream: {e}")))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| ImageError::invalid(what, format!("broken tar stream: {e}")))?;
            extractor.entry(&mut entry)?;
        }
    }
    let (diff_id, size) = hashing
        .finish()
        .map_err(|e| ImageError::invalid(what, format!("broken layer stream: {e}")))?;
    extractor.finish()?;
    Ok(Unpacked { diff_id, size })
}

/// A layer path reduced to its normal components, or why it cannot be.
pub(crate) fn clean_path(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("contains a '..' component"),
            Component::Normal(c) => out.push(c),
        }
    }
    Ok(out)
}

struct Extractor<'a> {
    what: &'a str,
    root: &'a Path,
    /// Ownership is restored only when running as root (tests run unprivileged too).
    is_root: bool,
    /// Directory mtimes, applied at the end: creating entries inside changes them.
    dir_times: Vec<(PathBuf, i64)>,
}

impl Extractor<'_> {
    fn unsafe_path(&self, entry: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafePath {
            what: self.what.to_string(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry
            .path()
            .map_err(|e| ImageError::invalid(self.what, format!("bad entry path: {e}")))?
            .into_owned();
        let rel = clean_path(&raw).map_err(|r| self.unsafe_path(&raw, r))?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            if rel.as_os_str().is_empty() {
                // The layer root itself ("./"): its metadata is the mount's, not ours.
                return Ok(());
            }
            return Err(ImageError::invalid(
                self.what,
                format!("entry name {raw:?} is not UTF-8"),
            ));
        };
        if let Some(hidden) = name.strip_prefix(".wh.") {
            return self.whiteout(&raw, &rel, hidden);
        }
        let path = self.prepare_parent(&raw, &rel)?;
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| ImageError::invalid(self.what, format!("{raw:?}: bad mode: {e}")))?
            & 0o7777;
        let uid = owner_id(header.uid(), &header.as_old().uid)
            .map_err(|r| ImageError::invalid(self.what, format!("{raw:?}: uid {r}")))?;
        let gid = owner_id(header.gid(), &header.as_old().gid)
            .map_err(|r| ImageError::invalid(self.what, format!("{raw:?}: gid {r}")))?;
        let mtime = header.mtime().unwrap_or(0).min(i64::MAX as u64) as i64;
        let ctx = |op: &str| format!("{}: cannot {op} {}", self.what, path.display());

        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&path).ctx(|| ctx("replace"))?;
                        fs::create_dir(&path).ctx(|| ctx("create directory"))?;
                    }
                    Err(_) => fs::create_dir(&path).ctx(|| ctx("create directory"))?,
                }
                self.set_owner_mode(&path, uid, gid, Some(mode))?;
                self.dir_times.push((path, mtime));
                return Ok(());
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_existing(&path).ctx(|| ctx("replace"))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .ctx(|| ctx("create"))?;
                io::copy(entry, &mut file).map_err(|e| {
                    ImageError::invalid(self.what, format!("{raw:?}: cannot extract: {e}"))
                })?;
                drop(file);
                self.set_owner_mode(&path, uid, gid, Some(mode))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| ImageError::invalid(self.what, format!("{raw:?}: {e}")))?
                    .ok_or_else(|| {
                        ImageError::invalid(self.what, format!("symlink {raw:?} has no target"))
                    })?
                    .into_owned();
                remove_existing(&path).ctx(|| ctx("replace"))?;
                std::os::unix::fs::symlink(&target, &path).ctx(|| ctx("create symlink"))?;
                self.set_owner_mode(&path, uid, gid, None)?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(|e| ImageError::invalid(self.what, format!("{raw:?}: {e}")))?
                    .ok_or_else(|| {
                        ImageError::invalid(self.what, format!("hard link {raw:?} has no target"))
                    })?
                    .into_owned();
                let target_rel = clean_path(&target_raw)
                    .map_err(|r| self.unsafe_path(&raw, format!("links to a path that {r}")))?;
                let target = self.existing(&raw, &target_rel)?;
                if target == path {
                    return Ok(());
                }
                remove_existing(&path).ctx(|| ctx("replace"))?;
                fs::hard_link(&target, &path).ctx(|| ctx("create hard link"))?;
                // A hard link shares the target's inode: owner, mode and times are its.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let kind = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_existing(&path).ctx(|| ctx("replace"))?;
                mknod(
                    &path,
                    kind,
                    Mode::from_bits_truncate(mode),
                    makedev(major.into(), minor.into()),
                )
                .map_err(|e| ImageError::io(ctx("create device node"), e.into()))?;
                self.set_owner_mode(&path, uid, gid, Some(mode))?;
            }
            other => {
                return Err(ImageError::invalid(
                    self.what,
                    format!("{raw:?}: unsupported tar entry type {other:?}"),
                ))
            }
        }
        self.capability(entry, &path)?;
        filetime::set_symlink_file_times(
            &path,
            filetime::FileTime::from_unix_time(mtime, 0),
            filetime::FileTime::from_unix_time(mtime, 0),
        )
        .ctx(|| ctx("set the times of"))?;
        Ok(())
    }

    /// Restores `security.capability` (e.g. ping's `cap_net_raw`) from a PAX header.
    /// Other extended attributes are dropped: `trusted.overlay.*` from a tarball could
    /// forge whiteouts or redirects.
    fn capability<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<(), ImageError> {
        let Ok(Some(extensions)) = entry.pax_extensions() else {
            return Ok(());
        };
        for ext in extensions.flatten() {
            if ext.key_bytes() == b"SCHILY.xattr.security.capability" && self.is_root {
                xattr::set(path, "security.capability", ext.value_bytes()).ctx(|| {
                    format!(
                        "{}: cannot set capabilities on {}",
                        self.what,
                        path.display()
                    )
                })?;
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, raw: &Path, rel: &Path, hidden: &str) -> Result<(), ImageError> {
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        if hidden == ".wh..opq" {
            let dir = self.ensure_dir(raw, parent_rel)?;
            xattr::set(&dir, "trusted.overlay.opaque", b"y").ctx(|| {
                format!(
                    "{}: cannot mark {} opaque (trusted xattrs need root)",
                    self.what,
                    dir.display()
                )
            })?;
            return Ok(());
        }
        if hidden.starts_with(".wh.") {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless to overlayfs.
            return Ok(());
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(self.unsafe_path(raw, "is a whiteout of no valid name"));
        }
        let path = self.prepare_parent(raw, &parent_rel.join(hidden))?;
        remove_existing(&path)
            .ctx(|| format!("{}: cannot replace {}", self.what, path.display()))?;
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| {
            ImageError::io(
                format!(
                    "{}: cannot create whiteout {} (needs root)",
                    self.what,
                    path.display()
                ),
                e.into(),
            )
        })?;
        Ok(())
    }

    /// Makes sure every ancestor of `rel` is a real directory inside the root (created
    /// 0755 if missing, refused if a symlink), and returns the entry's full path.
    fn prepare_parent(&self, raw: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(raw, parent)?;
        }
        Ok(self.root.join(rel))
    }

    /// Makes `rel` and its ancestors real directories under the root.
    fn ensure_dir(&self, raw: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
        let mut path = self.root.to_path_buf();
        for component in rel.components() {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_path(
                        raw,
                        format!(
                            "goes through the symlink {}",
                            path.strip_prefix(self.root).unwrap_or(&path).display()
                        ),
                    ))
                }
                Ok(_) => {
                    return Err(ImageError::invalid(
                        self.what,
                        format!(
                            "{raw:?}: {} is not a directory",
                            path.strip_prefix(self.root).unwrap_or(&path).display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).ctx(|| {
                        format!("{}: cannot create directory {}", self.what, path.display())
                    })?;
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                        .ctx(|| format!("{}: cannot chmod {}", self.what, path.display()))?;
                }
                Err(e) => {
                    return Err(ImageError::io(
                        format!("{}: cannot inspect {}", self.what, path.display()),
                        e,
                    ))
                }
            }
        }
        Ok(path)
    }

    /// The full path of an already extracted entry (a hard link's target), refusing one
    /// reached through a symlink.
    fn existing(&self, raw: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
        let mut path = self.root.to_path_buf();
        let count = rel.components().count();
        for (i, component) in rel.components().enumerate() {
            path.push(component);
            let meta = fs::symlink_metadata(&path).map_err(|_| {
                ImageError::invalid(
                    self.what,
                    format!(
                        "hard link {raw:?} points to {}, which is not earlier in the layer",
                        rel.display()
                    ),
                )
            })?;
            if i + 1 < count && !meta.is_dir() {
                return Err(self.unsafe_path(
                    raw,
                    format!("links through {}, which is not a directory", rel.display()),
                ));
            }
            if i + 1 == count && meta.is_dir() {
                return Err(ImageError::invalid(
                    self.what,
                    format!("hard link {raw:?} points to a directory"),
                ));
            }
        }
        if count == 0 {
            return Err(self.unsafe_path(raw, "links to the layer root"));
        }
        Ok(path)
    }

    fn set_owner_mode(
        &self,
        path: &Path,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> Result<(), ImageError> {
        if self.is_root {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .ctx(|| format!("{}: cannot chown {}", self.what, path.display()))?;
        }
        // After chown, which clears set-id bits.
        if let Some(mode) = mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .ctx(|| format!("{}: cannot chmod {}", self.what, path.display()))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ImageError> {
        for (dir, mtime) in self.dir_times.iter().rev() {
            let t = filetime::FileTime::from_unix_time(*mtime, 0);
            filetime::set_symlink_file_times(dir, t, t)
                .ctx(|| format!("{}: cannot set the times of {}", self.what, dir.display()))?;
        }
        Ok(())
    }
}

/// A uid or gid from a header field; a blank field (all NUL or spaces, as some tools
/// write) is 0, like GNU tar reads it.
fn owner_id(parsed: io::Result<u64>, field: &[u8]) -> Result<u32, &'static str> {
    match parsed {
        Ok(id) => u32::try_from(id).map_err(|_| "does not fit in 32 bits"),
        Err(_) if field.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(_) => Err("is not a number"),
    }
}

/// Removes whatever is at `path` (file, symlink, device, directory tree); absent is
/// fine.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => remove_any(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    /// Writes a raw path into the header (the tar crate's `append_data` refuses `..`,
    /// a hostile tarball does not).
    fn raw_entry(
        b: &mut tar::Builder<Vec<u8>>,
        kind: EntryType,
        path: &str,
        link: &str,
        data: &[u8],
    ) {
        let mut h = header(kind, data.len() as u64, 0o644);
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn unpacks_files_dirs_links_and_measures_the_diff_id() {
        let data = tar_with(|b| {
            b.append_data(
                &mut header(EntryType::Directory, 0, 0o750),
                "d/",
                io::empty(),
            )
            .unwrap();
            b.append_data(
                &mut header(EntryType::Regular, 5, 0o640),
                "d/f",
                &b"hello"[..],
            )
            .unwrap();
            let mut h = header(EntryType::Symlink, 0, 0o777);
            b.append_link(&mut h, "d/s", "f").unwrap();
            let mut h = header(EntryType::Link, 0, 0o644);
            b.append_link(&mut h, "d/h", "d/f").unwrap();
            // An absolute path whose parents are not in the archive.
            raw_entry(b, EntryType::Regular, "/x/y/z", "", b"z");
        });
        let dir = tempfile::tempdir().unwrap();
        let out = unpack_layer("test layer", &data[..], dir.path()).unwrap();
        assert_eq!(out.diff_id, super::super::content::digest_of(&data));
        assert_eq!(out.size, data.len() as u64);
        let d = dir.path().join("d");
        assert_eq!(fs::read(d.join("f")).unwrap(), b"hello");
        assert_eq!(fs::read_link(d.join("s")).unwrap(), Path::new("f"));
        assert_eq!(fs::read(d.join("h")).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
            0o750
        );
        assert_eq!(fs::read(dir.path().join("x/y/z")).unwrap(), b"z");
    }

    #[test]
    fn gzip_layers_hash_the_uncompressed_stream() {
        let data = tar_with(|b| {
            b.append_data(&mut header(EntryType::Regular, 1, 0o644), "a", &b"a"[..])
                .unwrap();
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &data).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = unpack_layer("gz", &gz[..], dir.path()).unwrap();
        assert_eq!(out.diff_id, super::super::content::digest_of(&data));
    }

    #[test]
    fn refuses_dot_dot_paths() {
        let data = tar_with(|b| raw_entry(b, EntryType::Regular, "../escape", "", b"x"));
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("layer");
        fs::create_dir(&inner).unwrap();
        let err = unpack_layer("evil", &data[..], &inner).unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn refuses_writing_through_a_symlink_from_the_same_layer() {
        let outside = tempfile::tempdir().unwrap();
        let data = tar_with(|b| {
            raw_entry(
                b,
                EntryType::Symlink,
                "evil",
                outside.path().to_str().unwrap(),
                b"",
            );
            raw_entry(b, EntryType::Regular, "evil/pwned", "", b"x");
        });
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_layer("evil", &data[..], dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn a_symlink_replaced_by_a_file_is_not_written_through() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "safe").unwrap();
        let data = tar_with(|b| {
            raw_entry(b, EntryType::Symlink, "f", victim.to_str().unwrap(), b"");
            raw_entry(b, EntryType::Regular, "f", "", b"pwned");
        });
        let dir = tempfile::tempdir().unwrap();
        unpack_layer("layer", &data[..], dir.path()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"safe");
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"pwned");
    }

    #[test]
    fn refuses_hard_links_out_of_the_layer() {
        for target in ["../../etc/passwd", "missing"] {
            let data = tar_with(|b| raw_entry(b, EntryType::Link, "h", target, b""));
            let dir = tempfile::tempdir().unwrap();
            assert!(
                unpack_layer("evil", &data[..], dir.path()).is_err(),
                "{target}"
            );
            assert!(!dir.path().join("h").exists());
        }
    }

    #[test]
    fn blank_owner_fields_mean_root() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..1].copy_from_slice(b"f");
        h.as_gnu_mut().unwrap().uid = [0; 8];
        h.as_gnu_mut().unwrap().gid = [b' '; 8];
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack_layer("blank", &data[..], dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"x");
    }

    #[test]
    fn refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_layer("junk", &[0x1f, 0x8b, 1, 2, 3][..], dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::Invalid { .. }), "{err}");
    }
}
