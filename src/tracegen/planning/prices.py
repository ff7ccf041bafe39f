"""Model prices: one exact-id table, fail closed, and the check that the model that answered was priced.

The table is data, ``data/models.yaml`` (validated here, unknown keys refused), plus an optional user price
file of the same layout (``--price-file`` / ``price_file:``) whose entries add to or replace the table's.
Ids match **exactly** (after dropping a provider prefix such as ``openai/``): a dated snapshot is its own
row with its own list price, so ``gpt-4o-2024-05-13`` is never priced as ``gpt-4o``. An id in no table is
refused before anything is sent (when a budget is set), unless ``--input-price``/``--output-price`` give it.

Reasoning models (table flag ``reasoning``) take ``max_completion_tokens``, no ``temperature``/``top_p``,
and bill hidden reasoning tokens as output; see :mod:`tracegen.planning.params` for what is sent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._syntax import load_yaml
from ..errors import ConfigError

__all__ = [
    "ModelPrice",
    "PriceTable",
    "Pricing",
    "ResolvedPrices",
    "answered_model_problem",
    "answered_pricing",
    "load_price_file",
    "lookup",
    "price_table",
    "prices_stats",
    "resolve_prices",
    "strip_provider",
    "table_rows",
]

#: Batch API list prices are half the online ones (used when a row or a flag gives no batch price).
BATCH_FACTOR = 0.5


class ModelPrice(BaseModel):
    """One model of the table. Prices in USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: Literal["cl100k_base", "o200k_base"] = Field(description="tiktoken encoding of the model.")
    context_window: int = Field(ge=1, description="Prompt + completion tokens at most.")
    input: float = Field(ge=0, description="Online input price.")
    output: float = Field(ge=0, description="Online output price (reasoning tokens included).")
    cached_input: float | None = Field(None, ge=0, description="Online price of cached input tokens.")
    batch_input: float | None = Field(None, ge=0, description="Batch API input price; default half.")
    batch_output: float | None = Field(None, ge=0, description="Batch API output price; default half.")
    reasoning: bool = Field(False, description="o-series / gpt-5: max_completion_tokens, no temperature.")


class PriceTable(BaseModel):
    """A price file: when the prices were taken, where from, and the models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prices_as_of: date | None = Field(None, description="Date the list prices were read.")
    source: str = ""
    models: dict[str, ModelPrice] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pricing:
    """USD per 1M tokens for one model in one mode (online or batch)."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Conservative cost: every prompt token at the full input price (what the budget ledger uses)."""
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6

    def billed_usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """The real bill: ``cached_tokens`` of the prompt at the cached price when the table has one."""
        cached = min(max(cached_tokens, 0), prompt_tokens) if self.cached_input_per_mtok is not None else 0
        rate = self.cached_input_per_mtok or 0.0
        fresh = prompt_tokens - cached
        return (fresh * self.input_per_mtok + cached * rate + completion_tokens * self.output_per_mtok) / 1e6

    def to_dict(self) -> dict[str, float | None]:
        return {
            "input": self.input_per_mtok,
            "cached_input": self.cached_input_per_mtok,
            "output": self.output_per_mtok,
        }


def _read(path: Path | None) -> PriceTable:
    where = "tracegen's data/models.yaml" if path is None else f"price file {path}"
    try:
        if path is None:
            text = (resources.files("tracegen") / "data" / "models.yaml").read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        data = load_yaml(text)
    except OSError as e:
        raise ConfigError(f"{where}: cannot read ({e.strerror}); check --price-file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e})") from None
    if isinstance(data, dict) and "models" not in data and data and "prices_as_of" not in data:
        data = {"models": data}  # a bare mapping of id: {...} is a price file too
    try:
        return PriceTable.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"{where}: {field}: {err['msg']} (each model needs encoding, context_window, input, output)"
        ) from None


@functools.lru_cache(maxsize=1)
def price_table() -> PriceTable:
    """The built-in table (``data/models.yaml``)."""
    return _read(None)


@functools.lru_cache(maxsize=16)
def _user_file(path: str, mtime_ns: int) -> PriceTable:
    return _read(Path(path))


def load_price_file(path: str | Path) -> PriceTable:
    """A user price file (same layout as the built-in table); ConfigError naming the file when invalid."""
    p = Path(path).expanduser()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as e:
        raise ConfigError(f"price file {p}: cannot read ({e.strerror}); check --price-file") from None
    return _user_file(str(p), mtime)


def strip_provider(model: str) -> str:
    """``openai/gpt-4o``, ``azure/gpt-4o``, ``tracegen-fake:gpt-4o`` -> ``gpt-4o`` (no other rewriting)."""
    for sep in ("/", ":"):
        if sep in model:
            model = model.rsplit(sep, 1)[1]
    return model


def lookup(model: str, price_file: str | Path | None = None) -> tuple[str, ModelPrice, str] | None:
    """(id, row, origin) for exactly ``model``: the user price file first, then the built-in table."""
    name = strip_provider(model)
    if price_file is not None:
        user = load_price_file(price_file)
        for key in (model, name):
            if key in user.models:
                return key, user.models[key], f"price file {price_file}"
    table = price_table()
    row = table.models.get(name)
    if row is None:
        return None
    return name, row, f"tracegen table (list prices as of {table.prices_as_of})"


@dataclass(frozen=True, slots=True)
class ResolvedPrices:
    """The prices one run uses for its model, and where they came from (recorded in stats and the card)."""

    model: str
    encoding: str | None
    context_window: int | None
    reasoning: bool
    online: Pricing
    batch: Pricing
    origin: str
    """"tracegen table (list prices as of ...)", "price file PATH", "flags --input-price/--output-price"."""
    prices_as_of: str | None

    def for_mode(self, batch: bool) -> Pricing:
        return self.batch if batch else self.online

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "origin": self.origin,
            "prices_as_of": self.prices_as_of,
            "reasoning": self.reasoning,
            "usd_per_mtok": {"online": self.online.to_dict(), "batch": self.batch.to_dict()},
        }


def _half(value: float | None, online: float) -> float:
    return value if value is not None else online * BATCH_FACTOR


def resolve_prices(
    model: str,
    *,
    input_price: float | None = None,
    output_price: float | None = None,
    price_file: str | Path | None = None,
) -> ResolvedPrices:
    """The prices of ``model``: flags override the row; a model in no table needs both flags.

    Raises ConfigError (one line: what to pass) for a model id no table lists and no flags price.
    """
    found = lookup(model, price_file)
    if found is None:
        if input_price is None or output_price is None:
            hint = f" or add {strip_provider(model)!r} to a price file (--price-file)"
            raise ConfigError(
                f"no price known for model {model!r} (ids match exactly; see `tracegen models`): pass "
                f"--input-price and --output-price (USD per 1M tokens){hint}"
            )
        online = Pricing(input_price, output_price)
        return ResolvedPrices(
            model=model,
            encoding=None,
            context_window=None,
            reasoning=False,
            online=online,
            batch=Pricing(input_price * BATCH_FACTOR, output_price * BATCH_FACTOR),
            origin="flags --input-price/--output-price",
            prices_as_of=None,
        )
    _, row, origin = found
    as_of = price_table().prices_as_of if origin.startswith("tracegen") else None
    if price_file is not None and not origin.startswith("tracegen"):
        as_of = load_price_file(price_file).prices_as_of
    flags = input_price is not None or output_price is not None
    if flags:
        origin = f"{origin}, overridden by --input-price/--output-price"
    in_online = input_price if input_price is not None else row.input
    out_online = output_price if output_price is not None else row.output
    in_batch = input_price * BATCH_FACTOR if input_price is not None else _half(row.batch_input, row.input)
    out_batch = (
        output_price * BATCH_FACTOR if output_price is not None else _half(row.batch_output, row.output)
    )
    cached = row.cached_input if input_price is None else None
    return ResolvedPrices(
        model=model,
        encoding=row.encoding,
        context_window=row.context_window,
        reasoning=row.reasoning,
        online=Pricing(in_online, out_online, cached),
        batch=Pricing(in_batch, out_batch),
        origin=origin,
        prices_as_of=str(as_of) if as_of is not None else None,
    )


def answered_model_problem(
    prices: ResolvedPrices, returned: str, *, batch: bool = False, price_file: str | Path | None = None
) -> str | None:
    """Why an answer from ``returned`` breaks the run's pricing, or None when it does not.

    Fine: no ``model`` field, the requested id, or an id priced no higher (input and output) than the one
    reserved for (an alias routed to a snapshot at the same price). Prices given (even in part) by
    --input-price/--output-price are the user's word for whatever serves the run: nothing is checked then.
    """
    if not returned or "--input-price" in prices.origin:
        return None
    name = strip_provider(returned)
    if name == strip_provider(prices.model):
        return None
    found = lookup(name, price_file)
    reserved = prices.for_mode(batch)
    if found is None:
        return (
            f"the endpoint answered with model {name!r}, which has no known price, for requests reserved at "
            f"{prices.model!r} prices; the run stopped before more was spent: check --model / the deployment, "
            f"or pass --input-price/--output-price for what it serves"
        )
    row = found[1]
    got_in = _half(row.batch_input, row.input) if batch else row.input
    got_out = _half(row.batch_output, row.output) if batch else row.output
    if got_in > reserved.input_per_mtok + 1e-12 or got_out > reserved.output_per_mtok + 1e-12:
        return (
            f"the endpoint answered with model {name!r} (${got_in:g}/${got_out:g} per 1M tokens) for requests "
            f"reserved at {prices.model!r} prices (${reserved.input_per_mtok:g}/"
            f"${reserved.output_per_mtok:g}); the run stopped before more was spent: request {name!r} "
            "itself (--model) so the budget reserves its price"
        )
    return None


def answered_pricing(
    prices: ResolvedPrices, returned: str, *, batch: bool, price_file: str | None
) -> Pricing:
    """The pricing the answer is billed at: the answering model's when it is known and higher."""
    found = lookup(returned, price_file) if returned and "--input-price" not in prices.origin else None
    own = prices.for_mode(batch)
    if found is None:
        return own
    row = found[1]
    got = (
        Pricing(_half(row.batch_input, row.input), _half(row.batch_output, row.output))
        if batch
        else Pricing(row.input, row.output, row.cached_input)
    )
    if got.input_per_mtok > own.input_per_mtok or got.output_per_mtok > own.output_per_mtok:
        return Pricing(
            max(got.input_per_mtok, own.input_per_mtok),
            max(got.output_per_mtok, own.output_per_mtok),
            got.cached_input_per_mtok,
        )
    return own


def prices_stats(prices: ResolvedPrices | None, *, batch: bool) -> dict[str, Any]:
    """The prices a run used, flat (stats.json ``prices``, rendered by the dataset card)."""
    if prices is None:
        return {"origin": "none: no price known and no budget set, costs recorded as 0"}
    used = prices.for_mode(batch)
    return {
        "model": prices.model,
        "mode": "batch" if batch else "online",
        "origin": prices.origin,
        "prices_as_of": prices.prices_as_of,
        "reasoning": prices.reasoning,
        "input_usd_per_mtok": used.input_per_mtok,
        "cached_input_usd_per_mtok": used.cached_input_per_mtok,
        "output_usd_per_mtok": used.output_per_mtok,
    }


def table_rows(price_file: str | Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """Every model of the table (and of ``price_file``, which wins), one dict each; plus a note on dates."""
    table = price_table()
    merged: dict[str, tuple[ModelPrice, str]] = {k: (v, "table") for k, v in table.models.items()}
    note = f"tracegen table: list prices as of {table.prices_as_of} ({table.source.split(' (')[0]})"
    if price_file is not None:
        user = load_price_file(price_file)
        merged.update({k: (v, "price file") for k, v in user.models.items()})
        note += f"; price file {price_file}" + (f" as of {user.prices_as_of}" if user.prices_as_of else "")
    rows = [
        {
            "id": name,
            "encoding": row.encoding,
            "context_window": row.context_window,
            "input": row.input,
            "cached_input": row.cached_input,
            "output": row.output,
            "batch_input": _half(row.batch_input, row.input),
            "batch_output": _half(row.batch_output, row.output),
            "reasoning": row.reasoning,
            "origin": origin,
        }
        for name, (row, origin) in merged.items()
    ]
    return rows, note
