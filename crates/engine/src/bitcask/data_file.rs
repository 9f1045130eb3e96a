//! Data and hint file identity, names, the 32-byte file header, and positional reads.
//!
//! File names are `MMMMMMMMMM-NNNNN.data` (and `.hint` beside it): a [`FileId`] of a major and
//! a minor number, ordered as numbers. Files written by appends get `(n, 0)`; the output of a
//! merge over every file below `n` gets `(n - 1, k)` for k = 1, 2, ..., so it sorts after its
//! inputs and before every file written since the merge began. Recovery replays files in
//! [`FileId`] order and the newest record of a key wins.
//!
//! Every file opens with this header (little-endian):
//!
//! ```text
//! offset size field
//!      0    8 magic       "HHBCDATA" (data) or "HHBCHINT" (hint)
//!      8    4 format      u32, 2 (1 is read too: files from before value compression)
//!     12    4 major       u32, as in the file name
//!     16    4 minor       u32
//!     20    8 base_seq    u64: every sequence number issued before this file was created
//!                         is below it (it keeps versions increasing after merges drop records)
//!     28    4 crc32c      of bytes 0..28
//! ```

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::{Error, IoContext, Result};
use crate::fs;

/// Size of the file header.
pub const FILE_HEADER_LEN: usize = 32;
/// Data file magic.
pub const DATA_MAGIC: &[u8; 8] = b"HHBCDATA";
/// Hint file magic.
pub const HINT_MAGIC: &[u8; 8] = b"HHBCHINT";
/// The file format this build writes; it reads every format from 1 up to it. Format 2 lets
/// records name a value codec in the high bits of their kind byte (see `record.rs`); format
/// 1 files (written before compression existed) hold only raw values and stay readable.
pub const FILE_FORMAT: u32 = 2;

/// A data file's identity: ordered by (major, minor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    /// Bumped on every rotation.
    pub major: u32,
    /// 0 for appended files, 1.. for merge outputs.
    pub minor: u32,
}

impl FileId {
    /// The data file name.
    pub fn data_name(self) -> String {
        format!("{self}.data")
    }

    /// The hint file name.
    pub fn hint_name(self) -> String {
        format!("{self}.hint")
    }

    /// Parses `MMMMMMMMMM-NNNNN.<ext>`; `None` for other names.
    pub fn parse(name: &str, ext: &str) -> Option<FileId> {
        let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
        let (ma, mi) = stem.split_once('-')?;
        if ma.len() != 10 || mi.len() != 5 {
            return None;
        }
        Some(FileId {
            major: ma.parse().ok()?,
            minor: mi.parse().ok()?,
        })
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}-{:05}", self.major, self.minor)
    }
}

/// A decoded file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Which file.
    pub id: FileId,
    /// Sequence numbers issued before the file was made are below this.
    pub base_seq: u64,
}

impl FileHeader {
    /// Encodes the header with `magic`.
    pub fn encode(&self, magic: &[u8; 8]) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[..8].copy_from_slice(magic);
        b[8..12].copy_from_slice(&FILE_FORMAT.to_le_bytes());
        b[12..16].copy_from_slice(&self.id.major.to_le_bytes());
        b[16..20].copy_from_slice(&self.id.minor.to_le_bytes());
        b[20..28].copy_from_slice(&self.base_seq.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header read from `path`.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] for a newer format, [`Error::Corrupted`] otherwise.
    pub fn decode(b: &[u8], magic: &[u8; 8], path: &Path) -> Result<FileHeader> {
        let h = b
            .get(..FILE_HEADER_LEN)
            .ok_or_else(|| Error::corrupted(path, 0, "file shorter than its header"))?;
        if &h[..8] != magic {
            return Err(Error::corrupted(path, 0, "bad magic"));
        }
        let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
        if crc != crc32c::crc32c(&h[..28]) {
            return Err(Error::corrupted(path, 0, "file header checksum mismatch"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let format = u32_at(8);
        if !(1..=FILE_FORMAT).contains(&format) {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found: format,
                supported: FILE_FORMAT,
            });
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&h[20..28]);
        Ok(FileHeader {
            id: FileId {
                major: u32_at(12),
                minor: u32_at(16),
            },
            base_seq: u64::from_le_bytes(seq),
        })
    }
}

/// How data files are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// `pread` on a shared file handle.
    #[default]
    Pread,
    /// A read-only memory map of each data file: a sealed one whole, the active one ahead of
    /// its end (see [`Role`]).
    Mmap,
}

impl std::str::FromStr for ReadMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "pread" => Ok(ReadMode::Pread),
            "mmap" => Ok(ReadMode::Mmap),
            other => Err(format!("expected `pread` or `mmap`, got `{other}`")),
        }
    }
}

impl fmt::Display for ReadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadMode::Pread => "pread",
            ReadMode::Mmap => "mmap",
        })
    }
}

/// What a data file is to its readers; it decides how much of the file mmap mode maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Never written again (sealed, a merge output): mapped whole.
    Sealed,
    /// Appended to while it is read: mapped `capacity` bytes (the data-file size limit), so
    /// records written after the map was made are read from it too. Readers only touch bytes
    /// the writer has written and never cuts back (see `mmap.rs`); a record reaching past
    /// `capacity` (a value larger than the limit) is read with `pread`.
    Active {
        /// How many bytes to map.
        capacity: u64,
    },
}

/// An open data file that readers share. Reads never take the writer's lock.
#[derive(Debug)]
pub struct DataFile {
    /// Identity.
    pub id: FileId,
    /// Full path.
    pub path: PathBuf,
    file: File,
    map: Option<crate::bitcask::mmap::Map>,
    /// Bytes known to be in the file: its length when opened, then raised by the writer
    /// after each append ([`DataFile::written_to`]). The map is read only below it, so a
    /// page past the end of the file (SIGBUS) is never touched, whatever a location says.
    written: AtomicU64,
}

impl DataFile {
    /// Wraps an open file. With [`ReadMode::Mmap`], maps it as its [`Role`] says.
    ///
    /// # Errors
    /// I/O errors mapping the file.
    pub fn new(id: FileId, path: PathBuf, file: File, mode: ReadMode, role: Role) -> Result<Self> {
        let map = match (mode, role) {
            (ReadMode::Pread, _) => Ok(None),
            (ReadMode::Mmap, Role::Sealed) => crate::bitcask::mmap::Map::of(&file),
            (ReadMode::Mmap, Role::Active { capacity }) => {
                crate::bitcask::mmap::Map::ahead(&file, capacity)
            }
        }
        .ctx(|| format!("mapping {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(|| format!("stat {}", path.display()))?
            .len();
        Ok(DataFile {
            id,
            path,
            file,
            map,
            written: AtomicU64::new(len),
        })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads `len` bytes at `offset`: a slice of the map when the range is inside it (no
    /// copy, no system call), else with `pread`.
    ///
    /// # Errors
    /// I/O errors; [`Error::Corrupted`] if the range is past the end of the file.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        if let Some(b) = self.mapped(offset, len) {
            return Ok(b);
        }
        let mut buf = vec![0u8; len];
        match fs::read_exact_at(&self.file, &mut buf, offset, &self.path) {
            Ok(()) => Ok(Bytes::from(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::corrupted(
                &self.path,
                offset,
                "record runs past the end of the file",
            )),
            Err(e) => Err(Error::io(format!("reading {}", self.path.display()), e)),
        }
    }

    /// `len` bytes at `offset` from the map; `None` without a map, past its end or past
    /// the bytes known to be written.
    pub(crate) fn mapped(&self, offset: u64, len: usize) -> Option<Bytes> {
        let map = self.map.as_ref()?;
        let end = offset.checked_add(len as u64)?;
        if end > self.written() {
            return None;
        }
        map.slice(usize::try_from(offset).ok()?, len)
    }

    /// How many bytes the file is known to hold (see [`DataFile::written_to`]); a record
    /// ending past it is still in the writer's buffer.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Records that the file holds its first `len` bytes (the writer calls this after an
    /// append has reached the file; it never cuts the file below that).
    pub fn written_to(&self, len: u64) {
        self.written.fetch_max(len, Ordering::Release);
    }

    /// Size of the file on disk.
    ///
    /// # Errors
    /// I/O errors.
    pub fn size(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .ctx(|| format!("stat {}", self.path.display()))?
            .len())
    }
}

pub use crate::fs::sync_dir;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_ids_and_parse_back() {
        let a = FileId { major: 9, minor: 0 };
        let b = FileId { major: 9, minor: 1 };
        let c = FileId {
            major: 10,
            minor: 0,
        };
        assert!(a.data_name() < b.data_name() && b.data_name() < c.data_name());
        assert_eq!(FileId::parse(&b.data_name(), "data"), Some(b));
        assert_eq!(FileId::parse(&b.hint_name(), "data"), None);
        assert_eq!(FileId::parse("junk.data", "data"), None);
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = FileHeader {
            id: FileId { major: 3, minor: 2 },
            base_seq: 77,
        };
        let b = h.encode(DATA_MAGIC);
        let p = Path::new("x");
        assert_eq!(FileHeader::decode(&b, DATA_MAGIC, p).expect("ok"), h);
        assert!(FileHeader::decode(&b, HINT_MAGIC, p).is_err());
        let mut bad = b;
        bad[20] ^= 1;
        assert!(FileHeader::decode(&bad, DATA_MAGIC, p).is_err());
        let with_format = |f: u8| {
            let mut b = h.encode(DATA_MAGIC);
            b[8] = f;
            let crc = crc32c::crc32c(&b[..28]);
            b[28..32].copy_from_slice(&crc.to_le_bytes());
            b
        };
        assert!(matches!(
            FileHeader::decode(&with_format(3), DATA_MAGIC, p),
            Err(Error::UnsupportedFormat { found: 3, .. })
        ));
        // Files of format 1 (before value compression) stay readable.
        assert_eq!(
            FileHeader::decode(&with_format(1), DATA_MAGIC, p).expect("format 1"),
            h
        );
    }

    /// The active file is mapped ahead of its end: what the writer appends after the map
    /// was made is served from the map once the writer says it is written, never before;
    /// a range past the capacity is read with `pread`; a range past the file's end is an
    /// error, not a SIGBUS. Went red with `written_to` doing nothing (nothing from the map)
    /// and with `mapped` ignoring the mark (served from the map before the writer said so).
    #[test]
    fn the_active_file_is_read_from_its_map_as_it_grows() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.data");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        file.write_all_at(b"head", 0).expect("write");
        let id = FileId { major: 1, minor: 0 };
        let role = Role::Active { capacity: 1 << 20 };
        let f = DataFile::new(id, path, file, ReadMode::Mmap, role).expect("open");
        assert_eq!(&f.read_at(0, 4).expect("head")[..], b"head");
        assert!(
            f.mapped(0, 4).is_some(),
            "the length at open is known written"
        );

        f.file().write_all_at(b"record", 4).expect("append");
        assert!(
            f.mapped(4, 6).is_none(),
            "not from the map before the writer says so"
        );
        assert_eq!(&f.read_at(4, 6).expect("pread")[..], b"record");
        f.written_to(10);
        let from_map = f.mapped(4, 6).expect("from the map once written");
        assert_eq!(&from_map[..], b"record");
        let served = f.read_at(4, 6).expect("read");
        assert_eq!(
            served.as_ptr(),
            from_map.as_ptr(),
            "a slice of the map, not a copy"
        );
        // Inside the map, past the end of the file (10 bytes): an error, never the map. The
        // second range lies on a page wholly past the end, where a map read would be SIGBUS.
        for at in [10, 3 * 4096] {
            assert!(
                matches!(f.read_at(at, 100), Err(Error::Corrupted { .. })),
                "past the end of the file at {at}"
            );
        }

        let big = vec![7u8; 2 << 20];
        f.file().write_all_at(&big, 10).expect("append big");
        f.written_to(10 + big.len() as u64);
        assert!(f.mapped(10, big.len()).is_none(), "past the capacity");
        assert_eq!(f.read_at(10, big.len()).expect("pread big")[..], big[..]);
    }
}
