"""The teacher and batch call errors are part of the documented tree in errors.py, and one that escapes the
library is a failed run for the CLI (exit 4), never the user's mistake (exit 1)."""

from __future__ import annotations

import re

import pytest

from tracegen import errors
from tracegen.batch import api as batch_api
from tracegen.engine import client
from tracegen.errors import (
    BatchCallError,
    BatchError,
    TeacherCallError,
    TeacherConnectionError,
    TeacherError,
    TeacherHTTPError,
    TeacherProtocolError,
    TeacherTimeout,
    TracegenError,
)
from tracegen.outcome import EXIT_FAILED, EXIT_USER_ERROR, error_exit_code


def test_every_error_class_is_drawn_in_the_tree() -> None:
    drawn = set(re.findall(r"[├└]── (\w+)", errors.__doc__ or ""))
    defined = {n for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    assert defined == drawn | {"TracegenError"}
    for name in defined:
        assert issubclass(getattr(errors, name), TracegenError) and getattr(errors, name).__doc__


def test_call_errors_keep_their_homes_and_their_places() -> None:
    assert client.TeacherHTTPError is TeacherHTTPError and batch_api.BatchCallError is BatchCallError
    assert issubclass(TeacherProtocolError, TeacherConnectionError)
    for cls in (TeacherHTTPError, TeacherConnectionError, TeacherTimeout):
        assert issubclass(cls, TeacherCallError) and not issubclass(cls, TeacherError)
    assert issubclass(BatchCallError, BatchError)


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (TeacherHTTPError(500, None, "server error"), EXIT_FAILED),
        (TeacherTimeout(), EXIT_FAILED),
        (TeacherProtocolError("not JSON"), EXIT_FAILED),
        (BatchCallError("cannot upload; check the endpoint", TeacherTimeout()), EXIT_USER_ERROR),
    ],
)
def test_an_escaped_call_error_is_a_failed_run(err: TracegenError, code: int) -> None:
    assert error_exit_code(err) == code


def test_http_error_messages_are_redacted_and_cut() -> None:
    e = TeacherHTTPError(
        401, "invalid_api_key", "bad key sk-proj-abcdefghijklmnopqrstuvwxyz0123 " + "x" * 5000
    )
    assert "sk-proj-abcdefghijklmnopqrstuvwxyz0123" not in str(e)
    assert len(e.message) <= errors.MAX_ERROR_MESSAGE_CHARS + 1


def test_batch_call_errors_name_the_endpoint_through_the_one_url_redactor() -> None:
    url = "https://user:s3cret-pass@gateway.example:8443/v1?api-key=hidden"
    err = batch_api.as_tracegen_error("upload the batch file", TeacherTimeout(), url)
    assert isinstance(err, BatchCallError)
    assert "https://gateway.example:8443/v1" in str(err)
    assert "s3cret-pass" not in str(err) and "hidden" not in str(err)
