"""The error every bad canister answer raises."""

from __future__ import annotations

from rotor.errors import (
    UnavailableError,
)


class CanisterAnswerError(UnavailableError):
    """The canister's answer could not be decoded or trusted; the last good ACL stays."""
