//! The one error type of the core. Each variant names what is wrong; the Python bindings map
//! every variant to an exception class, and the exception class decides the HTTP status.

use std::fmt;

/// Why a project token was refused (PostHog's capture rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidTokenReason {
    Empty,
    TooLong,
    NotAscii,
    PersonalApiKey,
    NullByte,
}

impl fmt::Display for InvalidTokenReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty",
            Self::TooLong => "longer than 64 characters",
            Self::NotAscii => "not ascii",
            Self::PersonalApiKey => "personal api keys (phx_) cannot be used to send events",
            Self::NullByte => "contains a null byte",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    // -- the body cannot be read as a PostHog payload (400)
    #[error("request missing data payload")]
    EmptyPayload,
    #[error("invalid {codec} data: {detail}")]
    Decompression { codec: &'static str, detail: String },
    #[error("invalid form body: {0}")]
    InvalidForm(String),
    #[error("invalid json: {0}")]
    InvalidJson(String),
    #[error("invalid payload: {0}")]
    InvalidShape(String),
    #[error("request holds no event")]
    EmptyBatch,
    /// Every item was dropped: the count of each reason, and the project they were for, for
    /// metrics and logs as well as the message.
    #[error("no valid event in request ({})", reasons(dropped))]
    NoValidEvent {
        dropped: Vec<(&'static str, u32)>,
        token: String,
    },

    // -- the body is bigger than we accept (413)
    #[error("payload exceeds the maximum of {limit} bytes once decompressed")]
    PayloadTooLarge { limit: usize },

    // -- the token is missing or unacceptable (401)
    #[error("event submitted without an api_key")]
    NoToken,
    #[error("batch submitted with inconsistent api_key values")]
    MultipleTokens,
    #[error("API key is not valid: {0}")]
    InvalidToken(InvalidTokenReason),
    #[error("API key is not a project token of this server")]
    UnknownToken,

    // -- the request is not signed as configured (401)
    #[error("missing signature header")]
    MissingSignature,
    #[error("signature verification failed")]
    SignatureMismatch,
    #[error("missing signature timestamp header")]
    MissingSignatureTimestamp,
    #[error("signature timestamp outside the tolerance window")]
    SignatureTimestampOutOfRange,

    // -- the server cannot take the events now (503)
    #[error("outbox is full ({bytes} bytes waiting for delivery); retry later")]
    OutboxFull { bytes: u64 },
    #[error("store error: {0}")]
    Store(String),
    #[error("the batch was already committed")]
    AlreadyCommitted,
    #[error("cannot encode outbox rows: {0}")]
    Encoding(String),
    /// A lake data file that cannot be read, or rewritten (the message names it).
    #[error("{0}")]
    LakeFile(String),

    // -- a setting names something unusable (refused at startup)
    #[error("cannot read GeoIP database {path}: {detail}")]
    GeoIpDatabase { path: String, detail: String },
}

pub type Result<T> = std::result::Result<T, CoreError>;

impl From<heed::Error> for CoreError {
    fn from(err: heed::Error) -> Self {
        CoreError::Store(err.to_string())
    }
}

impl From<arrow_schema::ArrowError> for CoreError {
    fn from(err: arrow_schema::ArrowError) -> Self {
        CoreError::Encoding(err.to_string())
    }
}

impl From<postcard::Error> for CoreError {
    fn from(err: postcard::Error) -> Self {
        CoreError::Encoding(err.to_string())
    }
}

fn reasons(dropped: &[(&'static str, u32)]) -> String {
    let parts: Vec<String> = dropped
        .iter()
        .map(|(reason, count)| format!("{reason}: {count}"))
        .collect();
    parts.join(", ")
}
