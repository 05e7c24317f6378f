//! CRC32C as overlaybd computes it.
//!
//! overlaybd uses the Castagnoli polynomial with the caller's seed as the initial register and
//! **no** pre- or post-inversion ("raw" CRC32C). A standard CRC-32C routine (which inverts on
//! both ends) gives different values, so every checksum in the formats goes through here.

/// Raw CRC32C of `data`, starting from `seed`, without inversion.
///
/// `crc32c_raw(0, b"")` is 0, and chaining works: `crc32c_raw(crc32c_raw(s, a), b)` equals
/// `crc32c_raw(s, a ++ b)`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    // The crc32c crate implements the inverted form: append(c, d) = !raw(!c, d).
    !crc32c::crc32c_append(!seed, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitwise reference implementation of the raw (non-inverted) reflected CRC32C.
    fn reference(seed: u32, data: &[u8]) -> u32 {
        let mut crc = seed;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn matches_bitwise_reference() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for seed in [0, 100_007, 0xFFFF_FFFF, 0x1234_5678] {
            for len in [0, 1, 7, 64, 1000] {
                assert_eq!(
                    crc32c_raw(seed, &data[..len]),
                    reference(seed, &data[..len])
                );
            }
        }
    }

    #[test]
    fn chains() {
        let a = b"Container Image ";
        let b = b"Trace Format";
        let whole = [a.as_slice(), b.as_slice()].concat();
        assert_eq!(crc32c_raw(crc32c_raw(9, a), b), crc32c_raw(9, &whole));
    }
}
