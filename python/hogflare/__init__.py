"""hogflare: a PostHog-compatible analytics backend that lands every event in a lake you own."""

from hogflare._hogflare import __version__
from hogflare.config import Settings
from hogflare.errors import (
    AuthError,
    HogflareError,
    OutboxFullError,
    PayloadError,
    PayloadTooLargeError,
    RequestTimeoutError,
    StorageError,
)

__all__ = [
    "AuthError",
    "HogflareError",
    "OutboxFullError",
    "PayloadError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "Settings",
    "StorageError",
    "__version__",
]
