"""Error types. Every message names the file (and record, offset, line or key) at fault."""
from __future__ import annotations


class RecfaceError(Exception):
    """Base class of all errors raised on purpose by recface."""


class FormatError(RecfaceError, ValueError):
    """A file does not have the format it claims (truncated, wrong magic, bad line...)."""


class ConfigError(RecfaceError, ValueError):
    """A stage parameter is unknown or has the wrong type or value."""


class ImageDecodeError(FormatError):
    """Bytes that should be an image cannot be decoded."""


class UnsafePickleError(FormatError):
    """A pickle asks for a global that the restricted unpickler does not allow."""
