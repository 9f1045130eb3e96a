//! Value compression, shared by both engines' logs: the setting ([`Compression`]), the codec a
//! record names in its header ([`Codec`]), and packing/unpacking one value.
//!
//! A value of at least [`Compression::min_bytes`] is compressed when the setting says so, and
//! stored as it is when compressing does not pay (the packed form is not smaller). The stored
//! form of [`Codec::Lz4`] is `raw_len u32 (little-endian) | LZ4 block` (lz4_flex block format).
//! Unpacking checks everything: a declared length over the caller's limit, a block that does
//! not decompress, or one that decompresses to another length is an error, never bytes served.
//! Callers check the record's CRC (which covers the stored bytes) before unpacking.

use std::fmt;
use std::str::FromStr;

/// Which codec new values are written with (`compression = none|lz4`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Values are stored as they are.
    #[default]
    None,
    /// LZ4 (lz4_flex block format).
    Lz4,
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Algorithm::None),
            "lz4" => Ok(Algorithm::Lz4),
            other => Err(format!("expected `none` or `lz4`, got `{other}`")),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::None => "none",
            Algorithm::Lz4 => "lz4",
        })
    }
}

/// The compression setting of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// Codec for new values.
    pub algorithm: Algorithm,
    /// Values shorter than this are stored as they are.
    pub min_bytes: usize,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            algorithm: Algorithm::None,
            min_bytes: 1024,
        }
    }
}

/// How one stored value is encoded; named by a record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Stored as it is.
    Raw,
    /// `raw_len u32 | LZ4 block`.
    Lz4,
}

impl Codec {
    /// The codec's number in a record header.
    pub fn to_bits(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Lz4 => 1,
        }
    }

    /// The codec numbered `bits`, if known.
    pub fn from_bits(bits: u8) -> Option<Codec> {
        match bits {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

impl Compression {
    /// The packed form of `value` when the setting compresses it and that pays, else `None`
    /// (store `value` as it is, [`Codec::Raw`]).
    pub fn pack(&self, value: &[u8]) -> Option<(Codec, Vec<u8>)> {
        if self.algorithm == Algorithm::None || value.len() < self.min_bytes.max(1) {
            return None;
        }
        let raw_len = u32::try_from(value.len()).ok()?;
        let mut out = vec![0u8; 4 + lz4_flex::block::get_maximum_output_size(value.len())];
        out[..4].copy_from_slice(&raw_len.to_le_bytes());
        let n = lz4_flex::block::compress_into(value, &mut out[4..]).ok()?;
        out.truncate(4 + n);
        (out.len() < value.len()).then_some((Codec::Lz4, out))
    }
}

/// The value `stored` under `codec` holds, at most `max_len` bytes long.
///
/// # Errors
/// A reason when the stored bytes are not a valid packed value.
pub fn unpack(codec: Codec, stored: &[u8], max_len: usize) -> Result<Vec<u8>, String> {
    match codec {
        Codec::Raw => Ok(stored.to_vec()),
        Codec::Lz4 => {
            let (len, block) = stored
                .split_first_chunk::<4>()
                .ok_or("compressed value shorter than its length prefix")?;
            let raw_len = u32::from_le_bytes(*len) as usize;
            if raw_len > max_len {
                return Err(format!(
                    "compressed value claims {raw_len} bytes, over the limit of {max_len}"
                ));
            }
            let mut out = vec![0u8; raw_len];
            match lz4_flex::block::decompress_into(block, &mut out) {
                Ok(n) if n == raw_len => Ok(out),
                Ok(n) => Err(format!(
                    "compressed value decompressed to {n} bytes, not {raw_len}"
                )),
                Err(e) => Err(format!("compressed value does not decompress: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lz4(min: usize) -> Compression {
        Compression {
            algorithm: Algorithm::Lz4,
            min_bytes: min,
        }
    }

    fn json(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let mut i = 0;
        while v.len() < n {
            v.extend_from_slice(
                format!("{{\"id\":{i},\"name\":\"user-{i}\",\"ok\":true}},").as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    #[test]
    fn round_trip_and_threshold() {
        let v = json(8192);
        let (codec, packed) = lz4(1024).pack(&v).expect("compressible");
        assert_eq!(codec, Codec::Lz4);
        assert!(packed.len() < v.len() / 2, "{} bytes", packed.len());
        assert_eq!(unpack(codec, &packed, 1 << 20).expect("unpacks"), v);
        assert_eq!(lz4(8193).pack(&v), None, "below the threshold");
        assert_eq!(Compression::default().pack(&v), None, "off by default");
        assert_eq!(unpack(Codec::Raw, &v, 0).expect("raw"), v);
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        // xorshift bytes: LZ4 cannot shrink them.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let v: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(lz4(1).pack(&v), None);
    }

    #[test]
    fn corrupt_packed_values_are_errors() {
        let v = json(4096);
        let (codec, packed) = lz4(1).pack(&v).expect("compressible");
        assert!(unpack(codec, &packed[..3], 1 << 20).is_err(), "no length");
        assert!(unpack(codec, &packed, 100).is_err(), "over the limit");
        let mut longer = packed.clone();
        longer[..4].copy_from_slice(&(v.len() as u32 + 1).to_le_bytes());
        assert!(unpack(codec, &longer, 1 << 20).is_err(), "wrong length");
        for cut in 4..packed.len() {
            assert!(unpack(codec, &packed[..cut], 1 << 20).is_err(), "cut {cut}");
        }
        let mut garbage = packed.clone();
        for b in &mut garbage[4..] {
            *b = 0xff;
        }
        assert!(unpack(codec, &garbage, 1 << 20).is_err(), "garbage block");
    }

    #[test]
    fn codec_bits_round_trip() {
        for c in [Codec::Raw, Codec::Lz4] {
            assert_eq!(Codec::from_bits(c.to_bits()), Some(c));
        }
        assert_eq!(Codec::from_bits(2), None);
        assert_eq!("lz4".parse::<Algorithm>(), Ok(Algorithm::Lz4));
        assert!("zstd".parse::<Algorithm>().is_err());
    }
}
