//! The nesting guard run on every JSON body before it is parsed: brackets counted outside
//! strings, 64 bytes at a time. The parsers that follow recurse per level, and no SDK nests
//! anywhere near the limit, so a body that does is refused before any of them sees it.

use super::error::{CoreError, Result};
use super::json_entries;

/// Nesting deeper than this is refused before parsing: no SDK sends it, and a parser would
/// spend its stack on it.
pub const MAX_DEPTH: usize = 256;

/// Refuse JSON nested deeper than `max`, counting brackets outside strings.
///
/// For valid JSON this counts exactly what [`check_depth_by_strings`] counts. Where a backslash
/// stands outside any string (which no parser accepts) the two may read the rest differently;
/// the body is refused either way, by this check or by the parse.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<()> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    return blocks::check_depth(bytes, max);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    return check_depth_by_strings(bytes, max);
}

fn too_deep(max: usize) -> CoreError {
    CoreError::InvalidJson(format!("nesting deeper than {max} levels"))
}

/// The check a byte at a time, each string skipped with `memchr`: where the 64-byte scan has no
/// vector instructions to use, and the reference the tests and the fuzz target hold it to.
pub fn check_depth_by_strings(bytes: &[u8], max: usize) -> Result<()> {
    let mut depth = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => match json_entries::string_end(bytes, at) {
                Some((end, _)) => {
                    at = end;
                    continue;
                }
                // An unterminated string holds no more brackets.
                None => return Ok(()),
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(too_deep(max));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// The 64-byte scan: each block's quotes, backslashes and brackets found as bit masks with SSE2
/// (part of every x86-64), the strings' extent worked out from the unescaped quotes, and the
/// brackets outside them counted. A pageview batch is scanned three times faster than a byte
/// at a time, and the time no longer grows with the number of strings.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod blocks {
    use safe_arch::{
        bitand_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };

    use super::{too_deep, Result};

    /// Bits at even positions.
    const EVEN: u64 = 0x5555_5555_5555_5555;

    /// Where a block's quotes, backslashes, opening and closing brackets are.
    struct Marks {
        quotes: u64,
        backslashes: u64,
        opens: u64,
        closes: u64,
    }

    fn bits(matches: m128i, lane: usize) -> u64 {
        // The mask has one bit per byte of the 16-byte lane.
        u64::from(move_mask_i8_m128i(matches) as u16) << (16 * lane)
    }

    fn marks(block: &[u8; 64]) -> Marks {
        let quote = set_splat_i8_m128i(b'"' as i8);
        let backslash = set_splat_i8_m128i(b'\\' as i8);
        // `[` and `{` differ only in bit 5 (0x5b, 0x7b), as do `]` and `}` (0x5d, 0x7d).
        let fold = set_splat_i8_m128i(!0x20u8 as i8);
        let open = set_splat_i8_m128i(b'[' as i8);
        let close = set_splat_i8_m128i(b']' as i8);
        let mut marks = Marks {
            quotes: 0,
            backslashes: 0,
            opens: 0,
            closes: 0,
        };
        for (lane, chunk) in block.chunks_exact(16).enumerate() {
            let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
                continue;
            };
            let bytes = load_unaligned_m128i(chunk);
            let folded = bitand_m128i(bytes, fold);
            marks.quotes |= bits(cmp_eq_mask_i8_m128i(bytes, quote), lane);
            marks.backslashes |= bits(cmp_eq_mask_i8_m128i(bytes, backslash), lane);
            marks.opens |= bits(cmp_eq_mask_i8_m128i(folded, open), lane);
            marks.closes |= bits(cmp_eq_mask_i8_m128i(folded, close), lane);
        }
        marks
    }

    /// The bytes that follow an odd run of backslashes. `carry` says the first byte of the block
    /// is escaped by the last one's run, and is set for the next block.
    fn escaped(backslashes: u64, carry: &mut u64) -> u64 {
        let backslashes = backslashes & !*carry;
        let follows = (backslashes << 1) | *carry;
        // A byte is escaped when the run of backslashes before it is odd, which is whether the
        // byte's parity differs from the run's start. Adding the starts of the runs that begin on
        // odd bits carries each of those runs past its end, so that one parity mask below serves
        // runs of both parities.
        let odd_starts = backslashes & !EVEN & !follows;
        let (even_ends, overflow) = odd_starts.overflowing_add(backslashes);
        *carry = u64::from(overflow);
        (EVEN ^ (even_ends << 1)) & follows
    }

    /// Each bit set when an odd number of bits up to it (included) are set in `quotes`.
    fn prefix_xor(quotes: u64) -> u64 {
        let mut inside = quotes;
        for shift in [1, 2, 4, 8, 16, 32] {
            inside ^= inside << shift;
        }
        inside
    }

    /// What the scan carries from one block to the next.
    struct Scan {
        depth: usize,
        escape_carry: u64,
        /// All ones when the last block ended inside a string.
        in_string: u64,
        max: usize,
    }

    impl Scan {
        fn block(&mut self, block: &[u8; 64]) -> Result<()> {
            let marks = marks(block);
            let escaped = if marks.backslashes | self.escape_carry == 0 {
                0
            } else {
                escaped(marks.backslashes, &mut self.escape_carry)
            };
            // A string's bits run from its opening quote up to its closing one (excluded).
            let strings = prefix_xor(marks.quotes & !escaped) ^ self.in_string;
            self.in_string = 0u64.wrapping_sub(strings >> 63);
            let opens = marks.opens & !strings;
            let closes = marks.closes & !strings;
            if opens | closes == 0 {
                return Ok(());
            }
            let (opened, closed) = (opens.count_ones() as usize, closes.count_ones() as usize);
            // In any order these brackets stay within the limit and above zero.
            if closed <= self.depth && self.depth + opened <= self.max {
                self.depth = self.depth + opened - closed;
                return Ok(());
            }
            let mut brackets = opens | closes;
            while brackets != 0 {
                let bracket = brackets & brackets.wrapping_neg();
                if opens & bracket == 0 {
                    self.depth = self.depth.saturating_sub(1);
                } else {
                    self.depth += 1;
                    if self.depth > self.max {
                        return Err(too_deep(self.max));
                    }
                }
                brackets ^= bracket;
            }
            Ok(())
        }
    }

    pub(super) fn check_depth(bytes: &[u8], max: usize) -> Result<()> {
        let mut scan = Scan {
            depth: 0,
            escape_carry: 0,
            in_string: 0,
            max,
        };
        let mut blocks = bytes.chunks_exact(64);
        for block in &mut blocks {
            if let Ok(block) = <&[u8; 64]>::try_from(block) {
                scan.block(block)?;
            }
        }
        let rest = blocks.remainder();
        if !rest.is_empty() {
            // Padded with spaces, which neither quote, escape nor nest.
            let mut last = [b' '; 64];
            last[..rest.len()].copy_from_slice(rest);
            scan.block(&last)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "nesting_tests.rs"]
mod tests;
