//! The data-file record: its byte layout, encoder and checked decoder.
//!
//! Every record is a fixed 36-byte header followed by the key and the value. All integers are
//! little-endian. The CRC32C covers every byte after the CRC field itself (the rest of the
//! header, the key and the value), so a flipped bit anywhere in the record is caught.
//!
//! ```text
//! offset size field
//!      0    4 crc32c       of bytes 4 .. end of record
//!      4    1 format       record format version, 1
//!      5    1 kind         low 4 bits: 1 = put, 2 = tombstone, 3 = batch envelope;
//!                          high 4 bits: value codec, 0 = raw, 1 = LZ4 (puts only; files of
//!                          format 2 and later, see `data_file.rs`)
//!      6    2 key_len      u16
//!      8    4 value_len    u32 (for a batch: length of the nested records)
//!     12    8 seq          u64 sequence number = the value's version
//!     20    8 timestamp    u64 wall-clock milliseconds when written (informational)
//!     28    8 expires_at   u64 milliseconds since the epoch, 0 = never
//!     36      key bytes, then value bytes
//! ```
//!
//! `value_len` is the stored length. A compressed value is stored as
//! [`crate::compression`] packs it (`raw_len u32 | LZ4 block`); readers unpack it after the
//! CRC check ([`value_of`]), and a packed value that does not unpack is corruption.
//!
//! A batch is one envelope record (kind 3, empty key) whose value is the batch's put and
//! tombstone records laid end to end, each a complete record with its own CRC. The envelope's
//! CRC covers all of them, so after a crash a batch is either wholly valid or rejected whole;
//! the keydir points straight at the nested records.

use crate::compression::{self, Codec};
use crate::{UnixMillis, Version};

/// Size of the fixed record header.
pub const HEADER_LEN: usize = 36;
/// The record format this build writes and reads.
pub const RECORD_FORMAT: u8 = 1;

/// What a record means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value for a key.
    Put,
    /// The key was deleted.
    Tombstone,
    /// An atomic batch of nested records.
    Batch,
}

impl Kind {
    fn to_byte(self) -> u8 {
        match self {
            Kind::Put => 1,
            Kind::Tombstone => 2,
            Kind::Batch => 3,
        }
    }
}

impl TryFrom<u8> for Kind {
    type Error = String;
    fn try_from(b: u8) -> Result<Self, String> {
        match b {
            1 => Ok(Kind::Put),
            2 => Ok(Kind::Tombstone),
            3 => Ok(Kind::Batch),
            other => Err(format!("unknown record kind {other}")),
        }
    }
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Stored checksum.
    pub crc: u32,
    /// Record kind.
    pub kind: Kind,
    /// How the value is stored.
    pub codec: Codec,
    /// Key length.
    pub key_len: u16,
    /// Value length (nested bytes for a batch).
    pub value_len: u32,
    /// Sequence number (version).
    pub seq: u64,
    /// Write time in ms.
    pub timestamp: u64,
    /// Expiry in ms since the epoch, 0 = never.
    pub expires_at: u64,
}

impl Header {
    /// Total record length: header + key + value.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.key_len) + u64::from(self.value_len)
    }

    /// Expiry as an option.
    pub fn expiry(&self) -> Option<UnixMillis> {
        (self.expires_at != 0).then_some(UnixMillis(self.expires_at))
    }

    /// The version this record carries.
    pub fn version(&self) -> Version {
        Version(self.seq)
    }

    /// True when the record carries an expiry that has passed at `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expiry().is_some_and(|e| e.has_passed(now))
    }

    /// Decodes the header fields without checking the CRC (that needs the whole record).
    ///
    /// # Errors
    /// A reason string when the bytes cannot be a header (short, unknown format or kind).
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        let h: &[u8; HEADER_LEN] = b
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("short header: {} bytes", b.len()))?;
        if h[4] != RECORD_FORMAT {
            return Err(format!("unknown record format {}", h[4]));
        }
        let kind = Kind::try_from(h[5] & 0x0f)?;
        let codec = Codec::from_bits(h[5] >> 4)
            .ok_or_else(|| format!("unknown value codec {}", h[5] >> 4))?;
        if codec != Codec::Raw && kind != Kind::Put {
            return Err(format!("a {kind:?} record with a compressed value"));
        }
        Ok(Header {
            crc: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            kind,
            codec,
            key_len: u16::from_le_bytes([h[6], h[7]]),
            value_len: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            seq: le_u64(&h[12..20]),
            timestamp: le_u64(&h[20..28]),
            expires_at: le_u64(&h[28..36]),
        })
    }
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Appends one encoded record to `out`. Returns the record's length.
///
/// Key and value lengths must already be validated (`key.len() <= u16::MAX`,
/// `value.len() <= u32::MAX`); longer inputs are clamped by the caller's checks, never here.
pub fn encode(
    out: &mut Vec<u8>,
    kind: Kind,
    seq: u64,
    timestamp: UnixMillis,
    expires_at: Option<UnixMillis>,
    key: &[u8],
    value: &[u8],
) -> usize {
    encode_stored(
        out,
        kind,
        Codec::Raw,
        seq,
        timestamp,
        expires_at,
        key,
        value,
    )
}

/// As [`encode`], for a value already stored under `codec` (packed by
/// [`compression::Compression::pack`] unless `Raw`).
#[allow(clippy::too_many_arguments)]
pub fn encode_stored(
    out: &mut Vec<u8>,
    kind: Kind,
    codec: Codec,
    seq: u64,
    timestamp: UnixMillis,
    expires_at: Option<UnixMillis>,
    key: &[u8],
    value: &[u8],
) -> usize {
    let start = out.len();
    out.reserve(HEADER_LEN + key.len() + value.len());
    out.extend_from_slice(&[0u8; 4]);
    out.push(RECORD_FORMAT);
    out.push(kind.to_byte() | codec.to_bits() << 4);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&timestamp.0.to_le_bytes());
    out.extend_from_slice(&expires_at.map_or(0, |e| e.0).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// A record checked against its CRC, borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// The header.
    pub header: Header,
    /// The key.
    pub key: &'a [u8],
    /// The value (nested records for a batch).
    pub value: &'a [u8],
}

/// Decodes and verifies the record at the start of `b`.
///
/// # Errors
/// A reason string when the header is bad, the record runs past `b`, or the CRC fails.
pub fn decode(b: &[u8]) -> Result<RecordRef<'_>, String> {
    let header = Header::decode(b)?;
    let len = usize::try_from(header.record_len()).map_err(|_| "record too long".to_string())?;
    let rec = b
        .get(..len)
        .ok_or_else(|| format!("record of {len} bytes runs past the end ({} left)", b.len()))?;
    let actual = crc32c::crc32c(&rec[4..]);
    if actual != header.crc {
        return Err(format!(
            "checksum mismatch (stored {:#010x}, computed {actual:#010x})",
            header.crc
        ));
    }
    let key_end = HEADER_LEN + usize::from(header.key_len);
    Ok(RecordRef {
        header,
        key: &rec[HEADER_LEN..key_end],
        value: &rec[key_end..],
    })
}

/// The value a checked put record holds: `stored` itself when raw (zero-copy), else unpacked
/// into an owned buffer of at most `max_len` bytes.
///
/// # Errors
/// A reason when a packed value does not unpack (corruption).
pub fn value_of(
    header: &Header,
    stored: bytes::Bytes,
    max_len: usize,
) -> Result<bytes::Bytes, String> {
    match header.codec {
        Codec::Raw => Ok(stored),
        codec => compression::unpack(codec, &stored, max_len).map(bytes::Bytes::from),
    }
}

/// Iterates the nested records of a batch envelope's value, yielding each with its offset
/// inside the value.
pub fn nested(value: &[u8]) -> impl Iterator<Item = Result<(usize, RecordRef<'_>), String>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= value.len() {
            return None;
        }
        let at = pos;
        match decode(&value[at..]) {
            Ok(r) if r.header.kind == Kind::Batch => {
                pos = value.len();
                Some(Err("batch nested in a batch".to_string()))
            }
            Ok(r) => {
                pos += r.header.record_len() as usize;
                Some(Ok((at, r)))
            }
            Err(e) => {
                pos = value.len();
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let n = encode(
            &mut buf,
            Kind::Put,
            7,
            UnixMillis(5),
            Some(UnixMillis(99)),
            b"key",
            b"value",
        );
        assert_eq!(n, HEADER_LEN + 8);
        let r = decode(&buf).expect("decodes");
        assert_eq!(r.key, b"key");
        assert_eq!(r.value, b"value");
        assert_eq!(r.header.seq, 7);
        assert_eq!(r.header.expiry(), Some(UnixMillis(99)));
        assert_eq!(r.header.kind, Kind::Put);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Put, 1, UnixMillis(1), None, b"k", b"v");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip at byte {byte} bit {bit} passed");
            }
        }
    }

    #[test]
    fn truncation_and_garbage_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            Kind::Put,
            1,
            UnixMillis(1),
            None,
            b"key",
            b"value",
        );
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err());
        }
        assert!(decode(&[0xff; 64]).is_err());
        assert!(decode(&[0u8; 64]).is_err());
    }

    #[test]
    fn compressed_value_round_trip_flag_set_and_unset() {
        let big: Vec<u8> = b"{\"k\":\"some repeated json text\"},".repeat(200);
        let c = compression::Compression {
            algorithm: compression::Algorithm::Lz4,
            min_bytes: 1024,
        };
        let (codec, packed) = c.pack(&big).expect("compressible");
        let mut buf = Vec::new();
        let n = encode_stored(
            &mut buf,
            Kind::Put,
            codec,
            9,
            UnixMillis(1),
            None,
            b"k",
            &packed,
        );
        assert_eq!(n, HEADER_LEN + 1 + packed.len());
        assert_eq!(buf[5], 0x11, "kind put, codec lz4 in the high bits");
        let r = decode(&buf).expect("decodes");
        assert_eq!(r.header.codec, Codec::Lz4);
        assert_eq!(r.header.kind, Kind::Put);
        let v =
            value_of(&r.header, bytes::Bytes::copy_from_slice(r.value), 1 << 30).expect("value");
        assert_eq!(&v[..], &big[..]);
        // A small value: no flag, stored as it is.
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Put, 1, UnixMillis(1), None, b"k", b"small");
        assert_eq!(buf[5], 1);
        let r = decode(&buf).expect("decodes");
        assert_eq!(r.header.codec, Codec::Raw);
        assert!(c.pack(b"small").is_none());
    }

    #[test]
    fn corrupt_compressed_payload_with_a_valid_crc_is_an_error() {
        let big = vec![b'a'; 4096];
        let c = compression::Compression {
            algorithm: compression::Algorithm::Lz4,
            min_bytes: 1,
        };
        let (codec, mut packed) = c.pack(&big).expect("compressible");
        let last = packed.len() - 1;
        packed[last] ^= 0x5a;
        packed[4] ^= 0xff;
        let mut buf = Vec::new();
        encode_stored(
            &mut buf,
            Kind::Put,
            codec,
            1,
            UnixMillis(1),
            None,
            b"k",
            &packed,
        );
        let r = decode(&buf).expect("the CRC covers what is on disk: it passes");
        assert!(value_of(&r.header, bytes::Bytes::copy_from_slice(r.value), 1 << 30).is_err());
        // An unknown codec, or a codec on a tombstone, is a bad header.
        let mut bad = buf.clone();
        bad[5] = 0x21;
        assert!(decode(&bad).is_err());
        let mut t = Vec::new();
        encode_stored(
            &mut t,
            Kind::Tombstone,
            Codec::Lz4,
            1,
            UnixMillis(1),
            None,
            b"k",
            b"",
        );
        assert!(decode(&t).is_err());
    }

    #[test]
    fn batch_nesting() {
        let mut inner = Vec::new();
        encode(&mut inner, Kind::Put, 1, UnixMillis(1), None, b"a", b"1");
        encode(
            &mut inner,
            Kind::Tombstone,
            2,
            UnixMillis(1),
            None,
            b"b",
            b"",
        );
        let mut env = Vec::new();
        encode(&mut env, Kind::Batch, 1, UnixMillis(1), None, b"", &inner);
        let r = decode(&env).expect("envelope");
        let items: Vec<_> = nested(r.value).collect::<Result<_, _>>().expect("nested");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].1.key, b"b");
        assert_eq!(items[1].1.header.kind, Kind::Tombstone);
    }
}
