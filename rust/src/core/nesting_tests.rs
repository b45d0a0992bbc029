use super::{check_depth, check_depth_by_strings, MAX_DEPTH};

/// Both checks, which must agree: `Some(())` when the text is within `max`.
fn both(text: &str, max: usize) -> Option<()> {
    let scanned = check_depth(text.as_bytes(), max).ok();
    let reference = check_depth_by_strings(text.as_bytes(), max).ok();
    assert_eq!(scanned, reference, "the checks disagree at max {max} on {text:?}");
    scanned
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

#[test]
fn nesting_is_counted_outside_strings_only() {
    // Brackets inside strings, escaped quotes included, do not nest.
    let quoted = format!(
        r#"{{"a":"{}\"{}","b":{}}}"#,
        "[".repeat(300),
        "{".repeat(300),
        nested(200)
    );
    assert_eq!(both(&quoted, MAX_DEPTH), Some(()));
    // After a string that ends in an escaped backslash, brackets count again.
    let after = format!(r#"["\\",{}]"#, nested(MAX_DEPTH));
    assert_eq!(both(&after, MAX_DEPTH), None);
    assert_eq!(both(&nested(MAX_DEPTH), MAX_DEPTH), Some(()));
    assert_eq!(both(&nested(MAX_DEPTH + 1), MAX_DEPTH), None);
    // An unterminated string ends the count.
    assert_eq!(both(&format!("[\"{}", "[".repeat(300)), MAX_DEPTH), Some(()));
    // Closing more than was opened does not lower the count below nothing.
    assert_eq!(both(&("]".repeat(100) + &nested(MAX_DEPTH)), MAX_DEPTH), Some(()));
    assert_eq!(both("", MAX_DEPTH), Some(()));
}

#[test]
fn escapes_and_strings_that_cross_a_block_boundary_are_read_as_they_are() {
    // Every alignment of a string holding runs of backslashes before its quotes, so that the
    // runs, the quotes and the string's end fall on each side of the 64-byte boundaries.
    for run in 0..6 {
        let escapes = "\\".repeat(run);
        for pad in 0..130 {
            let string = if run % 2 == 0 {
                format!(r#""{escapes}""#)
            } else {
                // An odd run escapes the quote after it; the string goes on to the next one.
                format!(r#""{escapes}"[[[[{{""#)
            };
            let text = format!("[{}{string},{}]", " ".repeat(pad), nested(8));
            assert_eq!(both(&text, 9), Some(()), "{text:?}");
            assert_eq!(both(&text, 8), None, "{text:?}");
        }
    }
}

/// A small generator of JSON texts (xorshift, seeded), so every run checks the same texts.
struct Texts(u64);

impl Texts {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    /// A string of brackets, quotes and backslashes escaped as JSON escapes them, and text.
    fn string(&mut self, out: &mut String) {
        out.push('"');
        for _ in 0..self.below(40) {
            out.push_str(match self.below(9) {
                0 => r"\\",
                1 => r#"\""#,
                2 => "[",
                3 => "{",
                4 => "]}",
                5 => r"\u005b",
                6 => "é",
                _ => "ab",
            });
        }
        out.push('"');
    }

    fn value(&mut self, out: &mut String, depth: usize) {
        let kind = if depth == 0 { 2 + self.below(2) } else { self.below(5) };
        match kind {
            0 => {
                out.push('[');
                for index in 0..self.below(4) {
                    if index > 0 {
                        out.push(',');
                    }
                    self.value(out, depth - 1);
                }
                out.push(']');
            }
            1 => {
                out.push('{');
                for index in 0..self.below(4) {
                    if index > 0 {
                        out.push(',');
                    }
                    self.string(out);
                    out.push_str(": ");
                    self.value(out, depth - 1);
                }
                out.push('}');
            }
            2 => self.string(out),
            _ => out.push_str(["12.5", "true", "null", "-3"][self.below(4)]),
        }
    }
}

#[test]
fn the_block_scan_counts_as_the_reference_does_on_generated_json() {
    let mut texts = Texts(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3_000 {
        let mut text = String::new();
        let depth = texts.below(12);
        texts.value(&mut text, depth);
        let serde_reads_it = serde_json::from_str::<serde_json::Value>(&text).is_ok();
        assert!(serde_reads_it, "the generator wrote invalid JSON: {text:?}");
        for max in 0..=depth + 1 {
            both(&text, max);
        }
    }
}

#[test]
fn the_block_scan_counts_as_the_reference_does_on_text_without_escapes() {
    // Without backslashes, any text at all (unbalanced, unterminated) reads the same both ways.
    let mut texts = Texts(0x2545_f491_4f6c_dd1d);
    for _ in 0..3_000 {
        let text: String = (0..texts.below(300))
            .map(|_| ['[', ']', '{', '}', '"', ' ', 'a', ',', ':'][texts.below(9)])
            .collect();
        for max in [0, 1, 2, 5, 20] {
            both(&text, max);
        }
    }
}
