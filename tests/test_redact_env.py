"""redact() finds the credential-named environment variables once per set of names, but always reads their
current values: a variable set, changed or removed later is masked (or no longer) at once."""

from __future__ import annotations

import pytest

from tracegen.redact import redact


def test_secret_variables_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert redact("x first-value-123 y") == "x first-value-123 y"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "first-value-123")  # a new name
    assert redact("x first-value-123 y") == "x <redacted> y"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "second-value-45")  # same names, a new value
    assert redact("first-value-123 second-value-45") == "first-value-123 <redacted>"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "short")  # too short to be masked verbatim
    assert redact("a short word") == "a short word"
    monkeypatch.delenv("MY_SERVICE_TOKEN")
    monkeypatch.setenv("OTHER_API_KEY", "third-value-678")  # names removed and added
    assert redact("second-value-45 third-value-678") == "second-value-45 <redacted>"
