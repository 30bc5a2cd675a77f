"""The engine's decisions, as pure functions: no clock, no I/O, no randomness inside.

``now`` and the jitter draw are passed in, so every decision is a row in a table test
(``tests/agent/test_schedule.py``).
"""

from __future__ import annotations

from typing import Literal

from rotor.layout import SecretState
from rotor.spec import RotatingSecretSpec

Recovery = Literal["commit", "apply", "abort"]


def recovery(state: SecretState, spec: RotatingSecretSpec, has_apply_hook: bool) -> Recovery:
    """What to do with a rotation found pending at start (the agent stopped mid-rotation).

    The pending values are complete in the store, so with no apply hook the commit is finished.
    With an apply hook the agent cannot know whether the app applied them: it posts them again
    (``apply``; the hook must be idempotent) and commits on 2xx, aborts otherwise. Pending values
    that do not match the spec's files any more are aborted.
    """
    if state.phase != "pending" or not state.pending:
        return "abort"
    if set(state.pending) != set(spec.files):
        return "abort"
    return "apply" if has_apply_hook else "commit"
