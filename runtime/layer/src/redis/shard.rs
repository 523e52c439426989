//! channels_redis's `consistent_hash`: which of several Redis hosts holds a key.

/// The shard index of `value` among `ring_size` hosts, exactly as channels_redis
/// computes it: the low 12 bits of the CRC-32 of the UTF-8 bytes, divided by
/// `4096 / ring_size` in floating point and truncated.
///
/// The integer form `(crc * n) / 4096` differs from Python's for some ring sizes of
/// 186 and more, so the f64 expression is kept as is.
pub(crate) fn consistent_hash(value: &str, ring_size: usize) -> usize {
    if ring_size <= 1 {
        return 0;
    }
    let bigval = crc32fast::hash(value.as_bytes()) & 0xFFF;
    // Truncation towards zero is Python's `int()` of a positive float; the result
    // is below `ring_size` because `bigval < 4096`.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = (f64::from(bigval) / (4096.0 / ring_size as f64)) as usize;
    index
}

#[cfg(test)]
mod tests {
    use super::consistent_hash;

    /// The test vectors of the wire spec (`docs/channels_redis_wire.md` 1.11),
    /// for ring sizes 1, 2, 3, 4, 5, 10.
    #[test]
    fn matches_the_python_test_vectors() {
        let vectors: [(&str, [usize; 6]); 5] = [
            ("key_one", [0, 1, 2, 2, 3, 6]),
            ("key_two", [0, 0, 1, 1, 2, 4]),
            ("chat", [0, 0, 0, 0, 0, 1]),
            ("room_42", [0, 0, 1, 1, 2, 4]),
            (
                "specific.0123456789abcdef0123456789abcdef!",
                [0, 0, 1, 1, 1, 3],
            ),
        ];
        for (value, expected) in vectors {
            let got: Vec<usize> = [1, 2, 3, 4, 5, 10]
                .iter()
                .map(|&n| consistent_hash(value, n))
                .collect();
            assert_eq!(got, expected, "{value}");
        }
    }

    /// Where Python's float division and the integer form part ways, the
    /// function follows Python. Each key's low 12 CRC-32 bits are the `bigval`
    /// of the case; Python's answers are `int(bigval / (4096 / float(n)))`.
    #[test]
    fn follows_pythons_float_division_where_integer_division_differs() {
        // (value, its bigval, ring size, channels_redis's index)
        let cases: [(&str, u16, usize, usize); 3] = [
            ("key1086", 2048, 186, 92),
            ("key2051", 3072, 300, 224),
            ("key228", 1024, 372, 92),
        ];
        for (value, bigval, ring_size, python) in cases {
            assert_eq!(
                crc32fast::hash(value.as_bytes()) & 0xFFF,
                u32::from(bigval),
                "{value}"
            );
            assert_eq!(consistent_hash(value, ring_size), python, "{value}");
            // The integer form would put the key on the next host.
            assert_eq!(
                usize::from(bigval) * ring_size / 4096,
                python + 1,
                "{value}"
            );
        }
    }
}
