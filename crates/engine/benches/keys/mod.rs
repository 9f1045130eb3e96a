//! The keys the engine benches share: 16 hex bytes from a SplitMix64 of the index, so that
//! `bitcask_system` and `get_breakdown` load and read the same keys in the same order.

/// SplitMix64: a fast, well-mixed hash of `x` (also the benches' random access pattern).
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The `i`-th key: 16 lowercase hex digits.
pub fn key(i: usize) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(format!("{:016x}", splitmix(i as u64)).as_bytes());
    k
}
