//! kiln's own tar writer for OCI layers. It uses the `tar` crate only for the 512-byte header
//! layout; every choice that matters for reproducibility is made here: ustar headers with a PAX
//! extended header when a name, link target, size, id or xattr does not fit (never GNU long-name
//! or sparse entries), numeric uid/gid with empty user/group names, permission bits including
//! setuid/setgid/sticky, mtimes in whole seconds clamped to SOURCE_DATE_EPOCH on request, hard
//! links as link entries pointing at the first path of the inode, and no padding beyond the two
//! zero blocks that end the archive.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result, stream};
use crate::fsutil;

/// Largest value an octal ustar numeric field of `width` bytes can hold.
fn octal_max(width: u32) -> u64 {
    (1u64 << (3 * (width - 1))) - 1
}

/// What kind of entry to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

impl EntryKind {
    fn flag(self) -> u8 {
        match self {
            EntryKind::File => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::Char => b'3',
            EntryKind::Block => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// A header's worth of facts about one entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryHeader {
    pub(crate) name: Vec<u8>,
    pub(crate) kind: EntryKind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) size: u64,
    pub(crate) mtime: i64,
    pub(crate) link: Vec<u8>,
    pub(crate) dev: (u32, u32),
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
}

/// Streams tar entries into `out`.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    epoch: Option<i64>,
    /// (dev, ino) of multiply-linked files already written → their entry name in
    /// `link_names` (start, length): a few bytes per file, however many there are (every file
    /// of an incremental COPY's layer is a hard link to the previous result's).
    links: HashMap<(u64, u64), (usize, usize)>,
    link_names: Vec<u8>,
    /// The buffer file data is copied through, allocated once.
    buf: Vec<u8>,
    /// Bytes written so far.
    written: u64,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W, epoch: Option<i64>) -> Self {
        Self {
            out,
            epoch,
            links: HashMap::new(),
            link_names: Vec::new(),
            buf: Vec::new(),
            written: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(stream("write layer"))?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let rem = (len % 512) as usize;
        if rem != 0 {
            self.put(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    /// Writes the entry for the file at `disk` (whose `lstat` is `meta`) under the layer path
    /// `rel` (no leading `/`, no trailing `/`).
    pub(crate) fn append_path(
        &mut self,
        rel: &[u8],
        disk: &Path,
        meta: &fs::Metadata,
    ) -> Result<()> {
        let ft = meta.file_type();
        let xattrs: Vec<(String, Vec<u8>)> = fsutil::list_xattrs(disk)?
            .into_iter()
            .filter(|(n, _)| !crate::overlay::is_overlay_xattr(n))
            .collect();
        let mut h = EntryHeader {
            name: rel.to_vec(),
            kind: EntryKind::File,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            size: 0,
            mtime: meta.mtime(),
            link: Vec::new(),
            dev: (0, 0),
            xattrs,
        };
        if ft.is_dir() {
            h.kind = EntryKind::Dir;
            return self.append_header(&h);
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            let id = (meta.dev(), meta.ino());
            if let Some(&(start, len)) = self.links.get(&id) {
                h.kind = EntryKind::HardLink;
                h.link = self.link_names[start..start + len].to_vec();
                return self.append_header(&h);
            }
            self.links.insert(id, (self.link_names.len(), rel.len()));
            self.link_names.extend_from_slice(rel);
        }
        if ft.is_file() {
            h.size = meta.len();
            self.append_header(&h)?;
            let f = fs::File::open(disk).ctx("open", disk)?;
            let copied = self.copy_data(f.take(h.size)).ctx("read", disk)?;
            if copied != h.size {
                return Err(Error::Unrepresentable {
                    path: disk.to_path_buf(),
                    reason: format!(
                        "file shrank from {} to {copied} bytes while written",
                        h.size
                    ),
                });
            }
            return self.pad(h.size);
        }
        if ft.is_symlink() {
            h.kind = EntryKind::Symlink;
            h.link = fsutil::path_bytes(&fs::read_link(disk).ctx("readlink", disk)?).to_vec();
        } else if ft.is_char_device() || ft.is_block_device() {
            h.kind = if ft.is_char_device() {
                EntryKind::Char
            } else {
                EntryKind::Block
            };
            let rdev = meta.rdev();
            h.dev = (libc::major(rdev), libc::minor(rdev));
        } else if ft.is_fifo() {
            h.kind = EntryKind::Fifo;
        } else {
            // Sockets cannot be stored in a tar layer; like containerd and Docker, leave them
            // out rather than fail a build over a daemon's leftover socket.
            return Ok(());
        }
        self.append_header(&h)
    }

    /// Copies file data in large chunks (fewer, bigger writes into hashers and compressors).
    fn copy_data(&mut self, mut from: impl Read) -> io::Result<u64> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(256 * 1024, 0);
        let r = kiln_image::copy_with_buffer(&mut from, &mut self.out, &mut buf);
        self.buf = buf;
        let n = r?;
        self.written += n;
        Ok(n)
    }

    /// Writes an empty regular file entry (used for `.wh.` whiteouts), mtime 0, mode 0.
    pub(crate) fn append_marker(&mut self, rel: &[u8]) -> Result<()> {
        self.append_header(&EntryHeader {
            name: rel.to_vec(),
            kind: EntryKind::File,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        })
    }

    /// Writes one header (with a PAX header first when needed). Data follows from the caller.
    pub(crate) fn append_header(&mut self, h: &EntryHeader) -> Result<()> {
        let mut name = h.name.clone();
        if h.kind == EntryKind::Dir && !name.ends_with(b"/") {
            name.push(b'/');
        }
        let mtime = match self.epoch {
            Some(e) if h.mtime > e => e,
            _ => h.mtime,
        }
        .max(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut hdr = tar::Header::new_ustar();
        let ustar_name = split_ustar(&name);
        if ustar_name.is_none() {
            pax.push(("path".into(), name.clone()));
        }
        if h.link.len() > 100 {
            pax.push(("linkpath".into(), h.link.clone()));
        }
        if h.size > octal_max(12) {
            pax.push(("size".into(), h.size.to_string().into_bytes()));
        }
        if h.uid > octal_max(8) {
            pax.push(("uid".into(), h.uid.to_string().into_bytes()));
        }
        if h.gid > octal_max(8) {
            pax.push(("gid".into(), h.gid.to_string().into_bytes()));
        }
        if mtime as u64 > octal_max(12) {
            pax.push(("mtime".into(), mtime.to_string().into_bytes()));
        }
        for (k, v) in &h.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            self.write_pax(&name, &pax)?;
        }
        {
            let u = hdr.as_ustar_mut().ok_or_else(|| Error::InvalidLayer {
                entry: String::from_utf8_lossy(&name).into_owned(),
                reason: "ustar header".into(),
            })?;
            if let Some((prefix, base)) = ustar_name {
                u.prefix[..prefix.len()].copy_from_slice(prefix);
                u.name[..base.len()].copy_from_slice(base);
            } else {
                // PAX carries the real name; the header keeps a truncated stand-in.
                let n = name.len().min(100);
                u.name[..n].copy_from_slice(&name[..n]);
            }
            if h.link.len() <= 100 {
                u.linkname[..h.link.len()].copy_from_slice(&h.link);
            }
        }
        octal(&mut hdr.as_old_mut().mode, u64::from(h.mode));
        octal(&mut hdr.as_old_mut().uid, h.uid.min(octal_max(8)));
        octal(&mut hdr.as_old_mut().gid, h.gid.min(octal_max(8)));
        let size = if matches!(h.kind, EntryKind::File) {
            h.size
        } else {
            0
        };
        octal(
            &mut hdr.as_old_mut().size,
            if size > octal_max(12) { 0 } else { size },
        );
        octal(
            &mut hdr.as_old_mut().mtime,
            (mtime as u64).min(octal_max(12)),
        );
        hdr.as_old_mut().linkflag = [h.kind.flag()];
        if let Some(u) = hdr.as_ustar_mut() {
            if matches!(h.kind, EntryKind::Char | EntryKind::Block) {
                octal(&mut u.dev_major, u64::from(h.dev.0));
                octal(&mut u.dev_minor, u64::from(h.dev.1));
            } else {
                octal(&mut u.dev_major, 0);
                octal(&mut u.dev_minor, 0);
            }
        }
        hdr.set_cksum();
        self.put(hdr.as_bytes())
    }

    fn write_pax(&mut self, name: &[u8], records: &[(String, Vec<u8>)]) -> Result<()> {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + rest.to_string().len();
            if (len).to_string().len() != rest.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        // Name like Go's archive/tar: <dir>/PaxHeaders.0/<base>, truncated to fit.
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        let (dir, base) = match trimmed.iter().rposition(|b| *b == b'/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        let mut pax_name = dir.to_vec();
        pax_name.extend_from_slice(b"PaxHeaders.0/");
        pax_name.extend_from_slice(base);
        pax_name.truncate(100);
        let mut hdr = tar::Header::new_ustar();
        if let Some(u) = hdr.as_ustar_mut() {
            u.name[..pax_name.len()].copy_from_slice(&pax_name);
        }
        octal(&mut hdr.as_old_mut().mode, 0o644);
        octal(&mut hdr.as_old_mut().uid, 0);
        octal(&mut hdr.as_old_mut().gid, 0);
        octal(&mut hdr.as_old_mut().size, body.len() as u64);
        octal(&mut hdr.as_old_mut().mtime, 0);
        hdr.as_old_mut().linkflag = [b'x'];
        if let Some(u) = hdr.as_ustar_mut() {
            octal(&mut u.dev_major, 0);
            octal(&mut u.dev_minor, 0);
        }
        hdr.set_cksum();
        self.put(hdr.as_bytes())?;
        self.put(&body)?;
        self.pad(body.len() as u64)
    }

    /// Writes the end-of-archive marker and returns the sink.
    pub(crate) fn finish(mut self) -> Result<W> {
        self.put(&[0u8; 1024])?;
        self.out.flush().map_err(stream("flush layer"))?;
        Ok(self.out)
    }
}

/// Zero-padded octal with a trailing NUL, as ustar wants.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    let b = s.as_bytes();
    let start = b.len().saturating_sub(width);
    field[..width].copy_from_slice(&b[start..]);
    field[width] = 0;
}

/// Splits `name` into ustar (prefix, name) fields, or `None` when it needs PAX.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    if name.len() > 256 {
        return None;
    }
    // Split at a '/' so the prefix has at most 155 bytes and the rest at most 100 (non-empty).
    let limit = name.len().min(156);
    let i = name[..limit]
        .iter()
        .rposition(|b| *b == b'/')
        .filter(|&i| name.len() - i - 1 <= 100 && name.len() - i > 1 && i > 0)?;
    Some((&name[..i], &name[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_split() {
        assert_eq!(split_ustar(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = [vec![b'x'; 120], b"/".to_vec(), vec![b'y'; 50]].concat();
        let (p, n) = split_ustar(&long).unwrap();
        assert_eq!(p.len(), 120);
        assert_eq!(n.len(), 50);
        assert!(split_ustar(&[b'z'; 101]).is_none());
    }

    #[test]
    fn large_sizes_go_to_pax() {
        let mut w = TarWriter::new(Vec::new(), None);
        let size = 9 * (1u64 << 30);
        w.append_header(&EntryHeader {
            name: b"huge".to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 1,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        })
        .unwrap();
        let mut a = tar::Archive::new(&w.out[..]);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.size(), size);
        assert_eq!(&*e.path_bytes(), b"huge");
    }

    #[test]
    fn pax_length_counts_itself() {
        let mut w = TarWriter::new(Vec::new(), None);
        w.write_pax(b"f", &[("path".into(), vec![b'a'; 95])])
            .unwrap();
        let body = &w.out[512..];
        let rec_len: usize = std::str::from_utf8(&body[..3]).unwrap().parse().unwrap();
        assert_eq!(body[rec_len - 1], b'\n');
        assert_eq!(rec_len, "103 path=".len() + 95 + 1);
    }
}
