"""rotor.logs: the redaction filter drops lines with a registered value, and its registry stays
bounded however many rotations a process lives through."""

from __future__ import annotations

import io
import logging

import pytest

from rotor import logs


@pytest.fixture
def log_stream():
    saved = dict(logs._secrets)
    stream = io.StringIO()
    logs.setup("INFO", stream)
    yield stream
    logs._secrets.clear()
    logs._secrets.update(saved)


def test_a_registered_value_is_never_logged(log_stream):
    logs.register_secret(b"s3cr3t-value-0001")
    logging.getLogger("t").info("the value is %s", "s3cr3t-value-0001")
    assert "s3cr3t-value-0001" not in log_stream.getvalue()
    assert "dropped" in log_stream.getvalue()


def test_the_registry_keeps_the_newest_values_only(log_stream):
    """30,000 rotations of two keys: the filter searches a bounded list, the newest values."""
    for i in range(30_000):
        logs.register_secret(f"password-value-{i:08d}")
        logs.register_secret(f"api-key-value-{i:08d}")
    assert logs.registered_count() <= logs.MAX_REGISTERED
    newest = "password-value-00029999"
    logging.getLogger("t").info("leak %s", newest)
    assert newest not in log_stream.getvalue()  # the current value is still caught


def test_a_value_registered_again_is_kept(log_stream):
    logs.register_secret("long-lived-value")
    for i in range(logs.MAX_REGISTERED - 1):
        logs.register_secret(f"other-value-{i:06d}")
        if i == logs.MAX_REGISTERED // 2:
            logs.register_secret("long-lived-value")  # still in use: it is the newest again
    logs.register_secret("one-more-value")
    logging.getLogger("t").info("leak %s", "long-lived-value")
    assert "long-lived-value" not in log_stream.getvalue()
