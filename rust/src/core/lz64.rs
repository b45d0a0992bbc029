//! lz-string's `decompressFromBase64`, as very old posthog-js sends it (`compression=lz64`).
//!
//! Written here rather than taken from a crate because the decoder must stop at a byte cap:
//! lz-string's dictionary lets a few kilobytes expand quadratically. Every dictionary entry is
//! a slice of the output produced so far (an entry is always `w` followed by the first unit of
//! the next entry, and the next entry follows `w` in the output), so entries are stored as
//! ranges and memory stays proportional to the capped output.

use super::error::{CoreError, Result};

fn base64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        b'=' => 64,
        _ => return None,
    })
}

struct Bits<'a> {
    input: &'a [u8],
    value: u32,
    position: u32,
    index: usize,
}

impl Bits<'_> {
    const RESET: u32 = 32;

    fn next_value(&self, index: usize) -> Result<u32> {
        // lz-string reads past the end as zeroes; a character outside the alphabet is corrupt.
        match self.input.get(index) {
            None => Ok(0),
            Some(&c) => base64_value(c).ok_or_else(|| invalid("character outside the base64 alphabet")),
        }
    }

    fn read(&mut self, count: u32) -> Result<u32> {
        let mut bits = 0u32;
        let mut power = 1u32;
        for _ in 0..count {
            let bit = self.value & self.position;
            self.position >>= 1;
            if self.position == 0 {
                self.position = Self::RESET;
                self.value = self.next_value(self.index)?;
                self.index += 1;
            }
            if bit > 0 {
                bits |= power;
            }
            power = power.wrapping_shl(1);
        }
        Ok(bits)
    }
}

fn invalid(detail: &str) -> CoreError {
    CoreError::Decompression {
        codec: "lz64",
        detail: detail.into(),
    }
}

/// Decompress to UTF-16 code units, refusing to produce more than `cap` bytes' worth (each unit
/// counts as one byte at least, so the cap is checked again after conversion to UTF-8).
pub fn decompress_from_base64(input: &str, cap: usize) -> Result<Vec<u16>> {
    let input = input.as_bytes();
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let mut bits = Bits {
        input,
        value: 0,
        position: Bits::RESET,
        index: 1,
    };
    bits.value = bits.next_value(0)?;

    let mut out: Vec<u16> = Vec::new();
    // (start, len) of each dictionary entry inside `out`; codes 0..=2 are reserved.
    let mut dictionary: Vec<(usize, usize)> = vec![(0, 0); 3];
    let mut enlarge_in: u32 = 4;
    let mut num_bits: u32 = 3;

    let first = match bits.read(2)? {
        0 => bits.read(8)?,
        1 => bits.read(16)?,
        2 => return Ok(Vec::new()),
        _ => return Err(invalid("bad first code")),
    };
    out.push(first as u16);
    dictionary.push((0, 1));
    let mut w = (0usize, 1usize);

    loop {
        if bits.index > input.len() {
            return Err(invalid("truncated stream"));
        }
        let code = bits.read(num_bits)? as usize;
        let entry_start = out.len();
        let literal = match code {
            0 | 1 => {
                let unit = bits.read(if code == 0 { 8 } else { 16 })? as u16;
                check(out.len() + 1, cap)?;
                out.push(unit);
                dictionary.push((entry_start, 1));
                enlarge_in -= 1;
                true
            }
            2 => return Ok(out),
            _ => false,
        };
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
        if !literal {
            match code.cmp(&dictionary.len()) {
                std::cmp::Ordering::Less => {
                    let (start, len) = dictionary[code];
                    if len == 0 {
                        return Err(invalid("reference to a reserved code"));
                    }
                    check(out.len() + len, cap)?;
                    out.extend_from_within(start..start + len);
                }
                std::cmp::Ordering::Equal => {
                    let (start, len) = w;
                    check(out.len() + len + 1, cap)?;
                    out.extend_from_within(start..start + len);
                    out.push(out[start]);
                }
                std::cmp::Ordering::Greater => return Err(invalid("reference past the dictionary")),
            }
        }
        let entry_len = out.len() - entry_start;
        // w + entry[0] is contiguous in the output: entry was written right after w.
        dictionary.push((w.0, w.1 + 1));
        enlarge_in -= 1;
        w = (entry_start, entry_len);
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
    }
}

fn check(len: usize, cap: usize) -> Result<()> {
    if len > cap {
        Err(CoreError::PayloadTooLarge { limit: cap })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn decodes_what_lz_string_wrote() {
        let units = decompress_from_base64(&fixture("lz64_unicode.txt"), 1 << 20).unwrap();
        assert_eq!(
            String::from_utf16(&units).unwrap(),
            format!("hello, wörld 👋 {}", "abc".repeat(50))
        );
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        // 26 KB of lz64 that expands to 5.6 MB.
        let bomb = fixture("lz64_bomb.txt");
        assert!(matches!(
            decompress_from_base64(&bomb, 64 * 1024),
            Err(CoreError::PayloadTooLarge { .. })
        ));
        assert_eq!(decompress_from_base64(&bomb, 8 << 20).unwrap().len(), 5_600_004);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in ["!!!!", "AAAA", "////////", "a", "=", "BAAAAAAA"] {
            let _ = decompress_from_base64(input, 1024);
        }
        assert!(decompress_from_base64("@@@@", 1024).is_err());
    }
}
