"""A secret setting (a password): its value is never shown by repr, str or format.

Settings objects end up in log lines, error messages and debugger output; a
`Secret` in them prints as `Secret('***')`. The value is read only where it
is handed to a client library, through `reveal()`. msgspec has no encoder for
this type, so a settings dump through msgspec fails rather than leaks, unless
it passes `enc_hook=mask_secret`, which writes the mask.
"""

from __future__ import annotations

from typing import Any

MASK = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK!r})" if self._value else "Secret('')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> Any:
        # Pickling would carry the value in clear into wherever it is sent.
        raise TypeError("a Secret cannot be pickled")


def decode_secret(kind: type, value: Any) -> Any:
    """msgspec `dec_hook`: a string in the settings file or environment becomes a Secret."""
    if kind is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise TypeError(f"expected a string, got {type(value).__name__}")
    raise NotImplementedError(f"cannot decode {kind!r}")


def mask_secret(value: Any) -> Any:
    """msgspec `enc_hook` for a settings dump: a Secret is written as its mask."""
    if isinstance(value, Secret):
        return MASK if value else ""
    raise NotImplementedError(f"cannot encode {type(value).__name__}")
