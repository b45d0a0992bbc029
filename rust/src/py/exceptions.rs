//! The Python exception tree, declared once. `hogflare.errors` re-exports these classes and
//! maps each to its HTTP status.

use pyo3::create_exception;
use pyo3::exceptions::PyException;

create_exception!(
    hogflare,
    HogflareError,
    PyException,
    "Base class of every hogflare error."
);
create_exception!(
    hogflare,
    PayloadError,
    HogflareError,
    "The request body is not a PostHog payload (400)."
);
create_exception!(
    hogflare,
    PayloadTooLargeError,
    PayloadError,
    "The payload is bigger than hogflare accepts (413)."
);
create_exception!(
    hogflare,
    NoValidEventError,
    PayloadError,
    "Every event of the request was dropped (400); `dropped` counts them by reason."
);
create_exception!(
    hogflare,
    AuthError,
    HogflareError,
    "The project token is missing or refused, or the request is not signed as required (401)."
);
create_exception!(
    hogflare,
    StorageError,
    HogflareError,
    "The store cannot take the events now; retry (503)."
);
create_exception!(
    hogflare,
    OutboxFullError,
    StorageError,
    "Rows wait for delivery past the high-water mark (503)."
);
