//! PostHog's semver operators: versions read as `major.minor.patch` (a leading `v` allowed, a
//! pre-release or build suffix dropped, missing parts 0, leading zeros read as the flag service
//! reads them, `08` as 8), compared as tuples, and the tilde, caret and wildcard ranges.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemverOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Tilde,
    Caret,
    Wildcard,
}

type Version = (u64, u64, u64);

impl SemverOp {
    pub fn parse(operator: &str) -> Option<Self> {
        Some(match operator {
            "semver_eq" => Self::Eq,
            "semver_neq" => Self::Neq,
            "semver_gt" => Self::Gt,
            "semver_gte" => Self::Gte,
            "semver_lt" => Self::Lt,
            "semver_lte" => Self::Lte,
            "semver_tilde" => Self::Tilde,
            "semver_caret" => Self::Caret,
            "semver_wildcard" => Self::Wildcard,
            _ => return None,
        })
    }
}

fn part(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim();
    let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = part(parts.next()?)?;
    let minor = parts.next().map_or(Some(0), part)?;
    let patch = parts.next().map_or(Some(0), part)?;
    parts.next().is_none().then_some((major, minor, patch))
}

/// The filter's version, or for the range operators the `[low, high)` range it stands for.
#[derive(Debug, Clone, Copy)]
pub struct SemverRange {
    low: Version,
    high: Option<Version>,
}

impl SemverRange {
    pub fn parse(op: SemverOp, text: &str) -> Option<Self> {
        let text = text.trim();
        match op {
            SemverOp::Wildcard => {
                if text == "*" {
                    return Some(Self {
                        low: (0, 0, 0),
                        high: Some((u64::MAX, u64::MAX, u64::MAX)),
                    });
                }
                let body = text.trim_end_matches(".*").trim_end_matches('*');
                let parts: Vec<&str> = body
                    .trim_end_matches('.')
                    .split('.')
                    .filter(|p| !p.is_empty())
                    .collect();
                let numbers: Option<Vec<u64>> = parts.iter().map(|p| part(p.trim_start_matches(['v', 'V']))).collect();
                // Without a star, a wildcard is the one version, as posthog-python reads it
                // (the flag service would read a caret range; the SDKs evaluate this locally).
                match numbers?.as_slice() {
                    [major] => Some(Self {
                        low: (*major, 0, 0),
                        high: Some((major.checked_add(1)?, 0, 0)),
                    }),
                    [major, minor] => Some(Self {
                        low: (*major, *minor, 0),
                        high: Some((*major, minor.checked_add(1)?, 0)),
                    }),
                    [major, minor, patch] => Some(Self {
                        low: (*major, *minor, *patch),
                        high: Some((*major, *minor, patch.checked_add(1)?)),
                    }),
                    _ => None,
                }
            }
            SemverOp::Tilde => {
                let low = parse_version(text.trim_start_matches('~'))?;
                Some(Self {
                    low,
                    high: Some((low.0, low.1.checked_add(1)?, 0)),
                })
            }
            SemverOp::Caret => {
                let low = parse_version(text.trim_start_matches('^'))?;
                let high = match low {
                    (0, 0, patch) => (0, 0, patch.checked_add(1)?),
                    (0, minor, _) => (0, minor.checked_add(1)?, 0),
                    (major, _, _) => (major.checked_add(1)?, 0, 0),
                };
                Some(Self { low, high: Some(high) })
            }
            _ => parse_version(text).map(|low| Self { low, high: None }),
        }
    }

    pub fn matches(&self, op: SemverOp, actual: &str) -> bool {
        let Some(actual) = parse_version(actual) else {
            return false;
        };
        let target = self.low;
        match op {
            SemverOp::Eq => actual == target,
            SemverOp::Neq => actual != target,
            SemverOp::Gt => actual > target,
            SemverOp::Gte => actual >= target,
            SemverOp::Lt => actual < target,
            SemverOp::Lte => actual <= target,
            SemverOp::Tilde | SemverOp::Caret | SemverOp::Wildcard => {
                actual >= target && self.high.is_some_and(|high| actual < high)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(op: &str, filter: &str, actual: &str) -> bool {
        let op = SemverOp::parse(op).unwrap();
        SemverRange::parse(op, filter).is_some_and(|range| range.matches(op, actual))
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v1.2.3-beta+5"), Some((1, 2, 3)));
        assert_eq!(parse_version("1.2"), Some((1, 2, 0)));
        assert_eq!(parse_version("01.2.3"), Some((1, 2, 3)));
        assert_eq!(parse_version("3.08"), Some((3, 8, 0)));
        assert_eq!(parse_version("1.2.3.4"), None);
    }

    #[test]
    fn ranges() {
        assert!(check("semver_tilde", "~1.2.3", "1.2.9") && !check("semver_tilde", "1.2.3", "1.3.0"));
        assert!(check("semver_caret", "^1.2.3", "1.9.0") && !check("semver_caret", "^1.2.3", "2.0.0"));
        assert!(check("semver_caret", "^0.2.3", "0.2.9") && !check("semver_caret", "^0.2.3", "0.3.0"));
        assert!(check("semver_caret", "^0.0.3", "0.0.3") && !check("semver_caret", "^0.0.3", "0.0.4"));
        assert!(check("semver_wildcard", "1.*", "1.9.9") && !check("semver_wildcard", "1.*", "2.0.0"));
        assert!(check("semver_wildcard", "1.2.*", "1.2.0") && !check("semver_wildcard", "1.2.*", "1.3.0"));
        assert!(check("semver_gt", "1.2.3", "1.10.0") && check("semver_lte", "1.2", "1.2.0"));
        assert!(check("semver_wildcard", "*", "0.0.1") && check("semver_wildcard", "*", "99.1.0"));
        assert!(check("semver_wildcard", "1.2.3", "1.2.3") && !check("semver_wildcard", "1.2.3", "1.2.4"));
        assert!(check("semver_eq", "3.8.0", "3.08"));
        let max = u64::MAX;
        for (op, filter) in [
            ("semver_wildcard", format!("1.2.{max}")),
            ("semver_wildcard", format!("{max}.*")),
            ("semver_tilde", format!("1.{max}.0")),
            ("semver_caret", format!("{max}.0.0")),
        ] {
            assert!(!check(op, &filter, "1.2.3"), "{op} {filter}");
        }
    }
}
