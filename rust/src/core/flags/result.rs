//! What a flag evaluates to for one user, and why: PostHog's reason codes and descriptions, and
//! which of several non-matching conditions' reasons is the one reported.

/// Why a flag has its value, with PostHog's codes; the higher `priority` wins across conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SuperConditionValue,
    HoldoutConditionValue,
    ConditionMatch,
    OutOfRolloutBound,
    NoConditionMatch,
    NoGroupType,
    FlagDisabled,
    MissingDependency,
}

impl Reason {
    fn priority(self) -> i8 {
        match self {
            Self::SuperConditionValue => 6,
            Self::HoldoutConditionValue => 5,
            Self::ConditionMatch => 4,
            Self::OutOfRolloutBound => 3,
            Self::NoConditionMatch => 2,
            Self::NoGroupType => 1,
            Self::FlagDisabled => 0,
            Self::MissingDependency => -1,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::SuperConditionValue => "super_condition_value",
            Self::HoldoutConditionValue => "holdout_condition_value",
            Self::ConditionMatch => "condition_match",
            Self::OutOfRolloutBound => "out_of_rollout_bound",
            Self::NoConditionMatch => "no_condition_match",
            Self::NoGroupType => "no_group_type",
            Self::FlagDisabled => "flag_disabled",
            Self::MissingDependency => "missing_dependency",
        }
    }

    /// PostHog's description of the reason, written as a JSON string.
    pub fn push_description(self, out: &mut String, condition_index: Option<usize>) {
        out.push('"');
        match self {
            Self::SuperConditionValue => out.push_str("Super condition value"),
            Self::HoldoutConditionValue => out.push_str("Holdout condition value"),
            Self::ConditionMatch => {
                out.push_str("Matched condition set ");
                out.push_str(itoa::Buffer::new().format(condition_index.unwrap_or(0) + 1));
            }
            Self::OutOfRolloutBound => out.push_str("Out of rollout bound"),
            Self::NoConditionMatch => out.push_str("No matching condition set"),
            Self::NoGroupType => out.push_str("No group type"),
            Self::FlagDisabled => out.push_str("Feature flag is disabled"),
            Self::MissingDependency => out.push_str("Flag cannot be evaluated due to missing dependency"),
        }
        out.push('"');
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlagResult {
    pub enabled: bool,
    pub variant: Option<String>,
    pub reason: Reason,
    pub condition_index: Option<usize>,
    /// The payload, as the JSON-encoded string PostHog stores.
    pub payload: Option<String>,
    /// Something needed to decide was missing (an unknown cohort, a missing dependency).
    pub error: bool,
}

impl FlagResult {
    pub(super) fn off(reason: Reason, condition_index: Option<usize>) -> Self {
        Self {
            enabled: false,
            variant: None,
            reason,
            condition_index,
            payload: None,
            error: false,
        }
    }
}

/// Keep the higher-priority of two non-matching answers; on a tie the later condition is the
/// one reported, as PostHog's flag service does.
pub(super) fn keep_better(best: &mut Option<FlagResult>, candidate: FlagResult) {
    if best
        .as_ref()
        .is_none_or(|current| candidate.reason.priority() >= current.reason.priority())
    {
        *best = Some(candidate);
    }
}
