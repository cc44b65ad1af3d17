"""Input rules of the store's metadata (``MetadataRepository``), the same on every driver.

Keys are non-empty ``str`` of at most :data:`MAX_KEY_LENGTH` characters; keys and values hold no NUL and no
lone surrogate (no driver can store them, so refusing them everywhere keeps every store copyable).
"""

from __future__ import annotations

from planflow.errors import ValidationError

#: The longest key, as for ids.
MAX_KEY_LENGTH = 512


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"the metadata {field} must be a str, got {type(value).__name__}")
    if "\x00" in value:
        raise ValidationError(f"the metadata {field} contains a NUL character, which cannot be stored")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"the metadata {field} is not valid Unicode text: {exc.reason} at index {exc.start}"
        ) from None
    return value


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid metadata key.

    Raises:
        ValidationError: not a ``str``, empty, longer than :data:`MAX_KEY_LENGTH`, or holding a NUL or a lone
            surrogate.
    """
    text = _text(key, "key")
    if not text or len(text) > MAX_KEY_LENGTH:
        raise ValidationError(
            f"the metadata key must be 1 to {MAX_KEY_LENGTH} characters long, got {len(text)}"
        )
    return text


def check_value(value: object) -> str:
    """Return ``value`` if it is a valid metadata value (any ``str`` without a NUL or a lone surrogate).

    Raises:
        ValidationError: not a ``str``, or holding a NUL or a lone surrogate.
    """
    return _text(value, "value")


__all__ = ["MAX_KEY_LENGTH", "check_key", "check_value"]
