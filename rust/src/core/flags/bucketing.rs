//! PostHog's bucketing: where an identifier falls in a flag's rollout and among its variants,
//! by a SHA-1 of the flag key, the identifier and a salt.

use sha1::{Digest, Sha1};

use super::compile::{Condition, Flag};

/// PostHog's bucketing: the first 15 hex digits of a SHA-1 of the parts, as a fraction of the
/// largest.
pub fn hash(parts: &[&str]) -> f64 {
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 4) as f64 / 0x0FFF_FFFF_FFFF_FFFF_u64 as f64
}

/// `hash("{flag key}.{identifier}{salt}")`, with Hogflare's per-flag salt before PostHog's.
fn flag_hash(flag: &Flag, identifier: &str, salt: &str) -> f64 {
    hash(&[&flag.definition.key, ".", identifier, &flag.salt, salt])
}

/// Whether the identifier falls in the condition's rollout. `hashed` keeps the flag's rollout
/// hash for the identifier of one aggregation, for the conditions after this one.
pub(super) fn in_rollout(
    flag: &Flag,
    condition: &Condition,
    identifier: &str,
    hashed: &mut Option<(Option<u8>, f64)>,
) -> bool {
    let Some(rollout) = condition.rollout.filter(|rollout| *rollout < 100.0) else {
        return true;
    };
    let position = match *hashed {
        Some((aggregation, position)) if aggregation == condition.aggregation => position,
        _ => {
            hashed
                .insert((condition.aggregation, flag_hash(flag, identifier, "")))
                .1
        }
    };
    position <= rollout / 100.0
}

/// The variant an identifier falls in: variants in stored order, each taking its share of [0, 1).
pub(super) fn variant_of(flag: &Flag, identifier: &str) -> Option<String> {
    if flag.variants.is_empty() {
        return None;
    }
    let position = flag_hash(flag, identifier, "variant");
    let mut low = 0.0;
    for (key, rollout) in &flag.variants {
        let high = low + rollout / 100.0;
        if position >= low && position < high {
            return Some(key.clone());
        }
        low = high;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hogflare_test_vectors() {
        assert!((hash(&["rollout.", "user-1"]) * 100.0 - 90.215_596_333_375_09).abs() < 1e-9);
        assert!((hash(&["multi.", "user-1", "variant"]) * 100.0 - 33.732_873_818_499_52).abs() < 1e-9);
    }
}
