//! What an item's checks can say of it: why it was dropped, or what was corrected and counted.

/// Why an item was dropped; the name is what logs and metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    NotAnObject,
    MissingEventName,
    InvalidEventName,
    MissingDistinctId,
    InvalidUuid,
    InvalidProperties,
    EventTooLarge,
    InvalidSessionId,
    MissingSnapshotData,
    UnsupportedRecordingEvent,
    InvalidCookielessMode,
    CookielessDisabled,
    CookielessDisallowedEvent,
    CookielessMissingUserAgent,
    CookielessMissingIp,
    CookielessMissingHost,
    CookielessDayOutOfRange,
    // Capture v1's own checks, named as PostHog's v1 answer names them.
    DroppedPerformanceEvent,
    EventNameTooLong,
    DistinctIdTooLarge,
    InvalidEventTimestamp,
    MalformedEventProperties,
    InvalidOptions,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::MissingEventName => "missing_event_name",
            Self::InvalidEventName => "invalid_event_name",
            Self::MissingDistinctId => "missing_distinct_id",
            Self::InvalidUuid => "invalid_uuid",
            Self::InvalidProperties => "invalid_properties",
            Self::EventTooLarge => "event_too_large",
            Self::InvalidSessionId => "invalid_session_id",
            Self::MissingSnapshotData => "missing_snapshot_data",
            Self::UnsupportedRecordingEvent => "unsupported_recording_event",
            Self::InvalidCookielessMode => "invalid_cookieless_mode",
            Self::CookielessDisabled => "cookieless_disabled",
            Self::CookielessDisallowedEvent => "cookieless_disallowed_event",
            Self::CookielessMissingUserAgent => "cookieless_missing_ua",
            Self::CookielessMissingIp => "cookieless_missing_ip",
            Self::CookielessMissingHost => "cookieless_missing_host",
            Self::CookielessDayOutOfRange => "cookieless_day_out_of_range",
            Self::DroppedPerformanceEvent => "dropped_performance_event",
            Self::EventNameTooLong => "event_name_too_long",
            Self::DistinctIdTooLarge => "distinct_id_too_large",
            Self::InvalidEventTimestamp => "invalid_event_timestamp",
            Self::MalformedEventProperties => "malformed_event_properties",
            Self::InvalidOptions => "invalid_options",
        }
    }
}

/// Not an error, but worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Warning {
    InvalidTimestamp,
    TimestampAdjusted,
}

impl Warning {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampAdjusted => "timestamp_adjusted",
        }
    }
}
