"""Reading a :class:`~tracegen.config.RunConfig` from a config file, flags and the environment.

Precedence: flag > config file > ``TRACEGEN_*`` environment > default (``OPENAI_BASE_URL`` stands in for an
unset base URL). A config file is a regular YAML/JSON file of at most :data:`MAX_CONFIG_BYTES`; every error is
one :class:`~tracegen.errors.ConfigError` line naming the file (line and column), flag or variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ._syntax import load_yaml, syntax_error_line
from .config import ENV_PREFIX, EndpointConfig, RunConfig, StageConfig
from .errors import ConfigError
from .shards import AUTO, shard_from_scheduler

__all__ = ["MAX_CONFIG_BYTES", "load_config"]

_NESTED: dict[str, type[BaseModel]] = {"stages": StageConfig, "endpoints": EndpointConfig}


#: Largest config file read, bytes: a config is a few KB; a FIFO or /dev/zero is refused before reading.
MAX_CONFIG_BYTES = 1024 * 1024


def _read_config_bytes(path: Path) -> bytes:
    """The bytes of a regular config file of at most MAX_CONFIG_BYTES (never blocks on a FIFO)."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"{path}: a config file must be a regular file (this is a device, FIFO or directory)"
            )
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: config file is {st.st_size:,} bytes, over the {MAX_CONFIG_BYTES:,} limit"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file is over the {MAX_CONFIG_BYTES:,}-byte limit")
    return data


def _read_file(path: Path) -> dict[str, Any]:
    raw = _read_config_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config file is not UTF-8 (byte {e.start}); save it as UTF-8") from None
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(syntax_error_line(path, e)) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid {kind}: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of field: value")
    return data


_JSON_ENV = frozenset({"stages", "endpoints"})


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    fields = RunConfig.model_fields
    for name in fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            raw = env[key]
            if name in _JSON_ENV:
                try:
                    data[name] = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"environment variable {key}: not valid JSON ({e.msg})") from None
            else:
                data[name] = raw.split(",") if name == "source" else raw
    if "base_url" not in data and env.get("OPENAI_BASE_URL"):
        data["base_url"] = env["OPENAI_BASE_URL"]
    return data


def load_config(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> RunConfig:
    """Build a RunConfig: ``overrides`` (CLI flags, None = not given) > file > environment > defaults.

    ``flag_names`` maps a field to the CLI flag that set it (``budget_usd`` -> ``--budget``) so an error
    names what the user typed.
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = _from_env(env)
    origin = {k: f"environment variable {ENV_PREFIX}{k.upper()}" for k in merged}
    if "base_url" in merged and f"{ENV_PREFIX}BASE_URL" not in env:
        origin["base_url"] = "environment variable OPENAI_BASE_URL"
    if config_file is not None:
        file_data = _read_file(Path(config_file))
        merged.update(file_data)
        origin.update({k: f"config file {config_file}" for k in file_data})
    for k, v in (overrides or {}).items():
        if v is not None:
            merged[k] = v
            flag = (flag_names or {}).get(k, "--" + k.replace("_", "-"))
            origin[k] = f"flag {flag}"
    if merged.get("shard") == AUTO:
        count = merged.get("shard_count")
        try:
            if count is not None and not str(count).isdigit():
                raise ValueError(
                    f"{origin.get('shard_count', 'shard_count')}: {count!r} is not a whole number"
                )
            merged["shard"] = shard_from_scheduler(env, int(count) if count is not None else None)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if merged.get("endpoints") and origin.get("base_url", "").startswith("environment"):
        del merged["base_url"]  # an ambient OPENAI_BASE_URL does not compete with a configured pool
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        top = str(err["loc"][0]) if err["loc"] else ""
        where = origin.get(top, "config")
        if err["type"] == "extra_forbidden":
            known = _NESTED.get(top, RunConfig) if len(err["loc"]) > 2 else RunConfig
            raise ConfigError(
                f"{where}: unknown key {field!r}; known keys: {', '.join(known.model_fields)}"
            ) from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not err["loc"]:  # a rule across fields (stages / endpoints)
            where = f"config file {config_file}" if config_file is not None else "config"
            raise ConfigError(f"{where}: {msg}") from None
        what = where if where.startswith("flag") and field == top else f"{where}: {field}"
        raise ConfigError(f"{what}: {msg}") from None
