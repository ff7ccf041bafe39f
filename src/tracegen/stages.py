"""Progressive teachers (Orca §4): several stages over one plan, each kept apart in its own run directory.

Orca asked ChatGPT all of FLAN-5M, then GPT-4 a random 1M subset of the same (system message, query) pairs;
the student trains on the first answers, then the second. A run config lists ``stages`` in that order::

    run_dir/                        the plan (plan.jsonl, plan_stats.json, manifest.json) and, after
      stages/<name>/                finish, clean.jsonl / clean_stats.json / stats.json of all stages
        manifest.json plan.jsonl requests.jsonl plan_stats.json traces.jsonl failed.jsonl rejected.jsonl
        ledger.jsonl stats.json clean.jsonl ...   -- an ordinary run directory per stage

Each stage directory is an ordinary run directory, so the engine's guarantees (durable answers, resume,
never paying twice, the teacher-settings check) hold per stage unchanged. Its ``plan.jsonl`` holds the
stage's records in plan order with ``Record.stage`` set to the stage name, so the export of the union splits
into one config per stage (``openorca-gpt35``, ``openorca-gpt4``).

Subsets. A stage answers the whole plan, a ``fraction`` or a ``count`` of it. Each record's draw is a
seeded hash of its content key (``blake2b(seed, key)``), so the choice does not depend on plan position and
the subset keeps plan order: any prefix of a stage follows the plan's mix as the plan's prefixes do. A
``fraction`` keeps the records whose draw is below it (stages with the same seed nest: a 0.1 subset lies
inside the 0.2 one; shards of a sharded run pick exactly the records the unsharded run would). A ``count``
keeps the ``count`` smallest draws; in a sharded run ``K/N`` each shard takes its even share of ``count``
from its own plan (the shares add up to ``count``, but the union is not the unsharded run's choice: use a
fraction when that matters).

Budgets. ``budget_usd`` on a stage caps that stage; the run's ``budget_usd`` caps the total, spent in stage
order: a stage may spend what the run budget leaves after every other stage's spend (read from their
ledgers). With both, the smaller applies. ``max_requests`` / ``max_total_tokens`` count over all stages of
one session. A run stopped by its budget says in stats.json ``to_finish`` what is left in all stages and the
run budget that finishes them (:func:`run_to_finish`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from .config import RunConfig, StageConfig
from .engine import RunDir
from .engine.budget import Ledger, prior_spend_usd
from .engine.core import cents_up
from .engine.leftover import plan_to_finish
from .engine.store import money_spent
from .errors import ConfigError, RunDirError
from .planning.params import apply_model_defaults
from .planning.plan_stats import label_order
from .planning.tokens import count_chat_tokens, encoding_for_model
from .records import SUBMIXES
from .rundir import (
    STAGES,
    RunPaths,
    open_read,
    read_json_if_exists,
    read_plan,
    write_files_atomically,
)

__all__ = [
    "STAGES_DIR",
    "StageLeft",
    "combine_stages",
    "estimate_totals",
    "is_staged",
    "prepare_stage",
    "run_to_finish",
    "select_mask",
    "spent_usd",
    "stage_budget_usd",
    "stage_config",
    "stage_names",
    "stage_path",
    "stages_stats",
    "subset_draw",
]

STAGES_DIR = STAGES
STAGE_FORMAT = 1
_STAGE_STAT_KEYS = (
    "model",
    "planned",
    "sent",
    "succeeded",
    "failed",
    "rejected",
    "skipped_done",
    "unfinished",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "total_spent_usd",
    "budget_usd",
    "stop_reason",
)
_SUMMED = (
    "planned",
    "sent",
    "succeeded",
    "failed",
    "rejected",
    "skipped_done",
    "unfinished",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "total_spent_usd",
)


def stage_path(run_dir: str | Path, name: str) -> Path:
    """``run_dir/stages/<name>``."""
    return RunPaths(Path(run_dir)).stage(name)


def is_staged(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds stage sub directories."""
    return RunPaths(Path(run_dir)).stages.is_dir()


def stage_names(run_dir: str | Path, config: RunConfig | None = None) -> list[str]:
    """The stages of ``run_dir``: the config's order first, then any other stage directory (sorted)."""
    names = [s.name for s in config.stages] if config is not None else []
    root = Path(run_dir) / STAGES_DIR
    if root.is_dir():
        names += sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in names)
    return names


# ---- per-stage config --------------------------------------------------------------------------------------
def stage_config(config: RunConfig, stage: StageConfig, run_dir: str | Path) -> RunConfig:
    """The run config of one stage: its model, parameters and limits, the run's where the stage sets none.

    Prices are inherited only when the stage asks the run's own model. ``budget_usd`` is the stage's share
    (see :func:`stage_budget_usd` for what the engine gets).
    """
    same_model = stage.model == config.model

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    # sampling and cap: only what the stage sets is "set" (a reasoning stage gets its own defaults)
    sampling = {
        k: v
        for k, v in (
            ("temperature", stage.temperature),
            ("top_p", stage.top_p),
            ("max_tokens", stage.max_tokens),
        )
        if v is not None
    }
    cfg = config.model_copy(
        update={
            **sampling,
            "model": stage.model,
            "base_url": pick(stage.base_url, config.base_url),
            "input_price": pick(stage.input_price, config.input_price if same_model else None),
            "output_price": pick(stage.output_price, config.output_price if same_model else None),
            "expected_output_tokens": pick(stage.expected_output_tokens, config.expected_output_tokens),
            "requests_per_minute": pick(stage.requests_per_minute, config.requests_per_minute),
            "tokens_per_minute": pick(stage.tokens_per_minute, config.tokens_per_minute),
            "concurrency": pick(stage.concurrency, config.concurrency),
            "budget_usd": stage.budget_usd,
            "output_dir": stage_path(run_dir, stage.name),
            "stages": [],
        }
    )
    try:
        apply_model_defaults(cfg)
    except ValueError as e:
        raise ConfigError(f"stage {stage.name!r}: {e}") from None
    return cfg


# ---- subsets -----------------------------------------------------------------------------------------------
def subset_draw(seed: int, key: str) -> int:
    """The record's seeded draw in [0, 2**64): blake2b of the seed and its content key."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _shard_count(count: int, shard: tuple[int, int] | None) -> int:
    if shard is None:
        return count
    k, n = shard
    return (k + 1) * count // n - k * count // n


def select_mask(
    keys: Iterable[str], stage: StageConfig, seed: int, shard: tuple[int, int] | None = None
) -> npt.NDArray[np.bool_] | None:
    """Which of ``keys`` (content keys in plan order) the stage answers; None = all of them."""
    if stage.count is None and (stage.fraction is None or stage.fraction >= 1.0):
        return None
    draws = np.fromiter((subset_draw(seed, k) for k in keys), dtype=np.uint64)
    if stage.fraction is not None:
        threshold = np.uint64(min(int(stage.fraction * 2.0**64), 2**64 - 1))
        mask: npt.NDArray[np.bool_] = draws < threshold
        return mask
    assert stage.count is not None
    k = _shard_count(stage.count, shard)
    if k >= len(draws):
        return None
    mask = np.zeros(len(draws), dtype=bool)
    if k > 0:
        mask[np.argpartition(draws, k - 1)[:k]] = True
    return mask


# ---- writing a stage's plan --------------------------------------------------------------------------------
def _stage_spec(stage: StageConfig, seed: int, encoding: str) -> dict[str, Any]:
    select: Any = "all"
    if stage.count is not None:
        select = {"count": stage.count}
    elif stage.fraction is not None and stage.fraction < 1.0:
        select = {"fraction": stage.fraction}
    return {"format": STAGE_FORMAT, "name": stage.name, "select": select, "seed": seed, "encoding": encoding}


def prepare_stage(
    parent: RunDir, config: RunConfig, stage: StageConfig, *, extend: bool = False
) -> tuple[RunDir, RunConfig]:
    """Open ``stages/<name>`` (refusing changed settings) and write its plan once, or again after --extend."""
    scfg = stage_config(config, stage, parent.path)
    seed = config.seed if stage.seed is None else stage.seed
    encoding = encoding_for_model(stage.model, config.price_file)
    spec = _stage_spec(stage, seed, encoding)
    path = stage_path(parent.path, stage.name)
    old = read_json_if_exists(RunPaths(path).manifest)
    if isinstance(old, dict):
        old_spec = (old.get("plan_params") or {}).get("stage")
        if old_spec is not None and old_spec != spec and money_spent(path) is not None:
            raise RunDirError(
                f"{path}: stage {stage.name!r} was planned as {old_spec}, now {spec}; give the stage a new "
                "name (a new sub directory) or restore its model/count/fraction/seed"
            )
    params = {**(parent.manifest.get("plan_params") or {}), "stage": spec}
    srd = RunDir.open(path, params, scfg.public_dict(), extend=extend)
    fingerprint = parent.manifest.get("plan_fingerprint")
    stats = read_json_if_exists(RunPaths(path).plan_stats)
    written_for = (
        (stats.get("stage") or {}).get("parent_plan_fingerprint") if isinstance(stats, dict) else None
    )
    if not RunPaths(path).plan.exists() or written_for != fingerprint or srd.replaced:
        _write_stage_plan(parent.path, path, stage, scfg, seed, config.shard_index(), fingerprint)
    return srd, scfg


def _write_stage_plan(
    parent: Path,
    path: Path,
    stage: StageConfig,
    scfg: RunConfig,
    seed: int,
    shard: tuple[int, int] | None,
    fingerprint: Any,
) -> None:
    from .planning.plan import request_body

    mask = select_mask((rec.key for rec in read_plan(parent)), stage, seed, shard)
    parent_encoding = (read_json_if_exists(RunPaths(parent).plan_stats) or {}).get("encoding")
    encoding = encoding_for_model(stage.model, scfg.price_file)
    planned = dict.fromkeys(SUBMIXES, 0)
    tokens = dict.fromkeys(SUBMIXES, 0)
    per_message: dict[str, int] = {}
    of_planned = 0

    def write(files: list[IO[str]]) -> None:
        nonlocal of_planned
        plan_file, requests_file = files
        for i, rec in enumerate(read_plan(parent)):
            of_planned += 1
            if mask is not None and not mask[i]:
                continue
            rec.stage = stage.name
            if parent_encoding != encoding:  # the stage's tokenizer bills other prompt counts
                rec.prompt_tokens = count_chat_tokens(rec.messages(), encoding)
            plan_file.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")
            body = {"custom_id": rec.id, "method": "POST", "url": "/v1/chat/completions"}
            body["body"] = request_body(rec, scfg)  # type: ignore[assignment]
            requests_file.write(json.dumps(body, ensure_ascii=False) + "\n")
            planned[rec.submix] = planned.get(rec.submix, 0) + 1
            tokens[rec.submix] = tokens.get(rec.submix, 0) + rec.prompt_tokens
            label = str(rec.system_message_id) if rec.system_message_id is not None else "template"
            per_message[label] = per_message.get(label, 0) + 1

    write_files_atomically([RunPaths(path).plan, RunPaths(path).requests], write)
    base = read_json_if_exists(RunPaths(parent).plan_stats)
    stats: dict[str, Any] = dict(base) if isinstance(base, dict) else {}
    stats.update(
        {
            "encoding": encoding,
            "planned": planned,
            "planned_total": sum(planned.values()),
            "planned_per_system_message": dict(
                sorted(per_message.items(), key=lambda item: label_order(item[0]))
            ),
            "prompt_tokens": sum(tokens.values()),
            "prompt_tokens_per_submix": tokens,
            "stage": {
                "name": stage.name,
                "model": stage.model,
                "select": _stage_spec(stage, seed, encoding)["select"],
                "seed": seed,
                "of_planned": of_planned,
                "parent_plan_fingerprint": fingerprint,
            },
        }
    )

    def write_stats(files: list[IO[str]]) -> None:
        json.dump(stats, files[0], indent=2, ensure_ascii=False)
        files[0].write("\n")

    write_files_atomically([RunPaths(path).plan_stats], write_stats)


# ---- budgets -----------------------------------------------------------------------------------------------
def spent_usd(run_dir: str | Path) -> float:
    """What a (stage) run directory has spent: its ledger, at least the cost recorded in its answers."""
    path = Path(run_dir)
    if not path.is_dir():
        return 0.0
    ledger = prior_spend_usd(Ledger(RunPaths(path).ledger).read())
    return max(ledger, RunDir(path, {}).load_done().cost_usd)


def stage_budget_usd(config: RunConfig, stage: StageConfig, run_dir: str | Path) -> float | None:
    """The budget the engine gets for ``stage``: its share, and what the run budget leaves after the others."""
    caps: list[float] = []
    if stage.budget_usd is not None:
        caps.append(stage.budget_usd)
    if config.budget_usd is not None:
        others = sum(
            spent_usd(stage_path(run_dir, n)) for n in stage_names(run_dir, config) if n != stage.name
        )
        caps.append(config.budget_usd - others)
    return min(caps) if caps else None


# ---- combining the stages ----------------------------------------------------------------------------------
def _add(total: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Sum numbers (and one level of number tables) of ``data`` into ``total``."""
    for k, v in data.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            total[k] = total.get(k, 0) + v
        elif isinstance(v, Mapping) and all(isinstance(x, (int, float)) for x in v.values()):
            inner = total.setdefault(k, {})
            if isinstance(inner, dict):
                for kk, vv in v.items():
                    inner[kk] = inner.get(kk, 0) + vv


def stages_stats(run_dir: str | Path, names: list[str], config: RunConfig | None = None) -> dict[str, Any]:
    """The run's stats.json for a staged run: totals over the stages, then one flat table per stage."""
    out: dict[str, Any] = {"stages": list(names)}
    totals: dict[str, Any] = {}
    per_stage: dict[str, Any] = {}
    stop_reason = "completed"
    for name in names:
        st = read_json_if_exists(RunPaths(stage_path(run_dir, name)).stats)
        if not isinstance(st, dict):
            per_stage[f"stage_{name}"] = {"stop_reason": "not started"}
            stop_reason = "not started" if stop_reason == "completed" else stop_reason
            continue
        st = {**st, "model": (st.get("config") or {}).get("model")}
        _add(totals, {k: st[k] for k in _SUMMED if k in st})
        per_stage[f"stage_{name}"] = {k: st.get(k) for k in _STAGE_STAT_KEYS}
        if st.get("stop_reason") != "completed" and stop_reason == "completed":
            stop_reason = str(st.get("stop_reason"))
    out["stop_reason"] = stop_reason
    out.update({k: round(v, 9) if isinstance(v, float) else v for k, v in totals.items()})
    out["budget_usd"] = config.budget_usd if config is not None else None
    if stop_reason == "budget":
        out["to_finish"] = run_to_finish([_stage_left(Path(run_dir), n, config) for n in names])
    out.update(per_stage)
    if config is not None:
        out["config"] = config.public_dict()
    return out


# ---- a budget stop: what is left -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StageLeft:
    """One stage's share of the run's ``to_finish``: its ``to_finish`` (or none), its spend and its cap."""

    name: str
    to_finish: Mapping[str, Any]
    spent_usd: float
    cap_usd: float | None = None
    """The stage's own ``budget_usd``, if any."""

    @property
    def left(self) -> int:
        return int(self.to_finish.get("requests_left", 0))

    @property
    def need_usd(self) -> float | None:
        """What the stage needs spent and reserved to finish: its spend once finished; None: unknown."""
        if "requests_left" in self.to_finish and not self.left:
            return self.spent_usd
        return self.to_finish.get("finish_budget_usd")


def run_to_finish(stages: Sequence[StageLeft]) -> dict[str, Any]:
    """A staged run's ``to_finish``: the stages added up.

    ``requests_left`` / ``requests_planned`` / ``more_usd`` are the sums (``more_usd`` at each stage's own
    mean price). ``finish_budget_usd`` is the sum of what each stage needs: a finished stage its spend, an
    unfinished one its own finish budget (spend + what is left + the room its reservations need,
    :func:`~tracegen.engine.core.finish_figures`). A stage's budget is the run budget less every *other*
    stage's spend (:func:`stage_budget_usd`), so with this run budget each stage, when it runs, finds at
    least its own finish budget: the stages before it spent what they needed, the ones after it no more
    than they have spent so far (an over-estimate by the other stages' reservation room: safe).
    ``stage_budgets_usd`` names the stages whose own ``budget_usd`` (a cap) is below what they need: no run
    budget finishes them until it is raised.
    """
    out: dict[str, Any] = {
        "requests_left": sum(s.left for s in stages),
        "requests_planned": sum(int(s.to_finish.get("requests_planned", 0)) for s in stages),
    }
    needs = [s.need_usd for s in stages]
    if any(n is None for n in needs) or not out["requests_left"]:
        return out
    out["more_usd"] = round(sum(float(s.to_finish.get("more_usd", 0.0)) for s in stages), 4)
    out["finish_budget_usd"] = cents_up(sum(float(n or 0.0) for n in needs))
    capped = {
        s.name: float(s.need_usd or 0.0)
        for s in stages
        if s.left and s.cap_usd is not None and float(s.need_usd or 0.0) > s.cap_usd
    }
    if capped:
        out["stage_budgets_usd"] = capped
    return out


def _stage_left(run_dir: Path, name: str, config: RunConfig | None) -> StageLeft:
    """A stage's figures: from its stats.json when it finished or stopped by the budget with figures, else
    walked over its plan (:func:`~tracegen.engine.leftover.plan_to_finish`)."""
    path = stage_path(run_dir, name)
    stage = next((s for s in config.stages if s.name == name), None) if config is not None else None
    cap = stage.budget_usd if stage is not None else None
    spent = spent_usd(path)
    st = read_json_if_exists(RunPaths(path).stats)
    if isinstance(st, dict):
        planned = {"requests_planned": int(st.get("planned") or 0)}
        tf = st.get("to_finish")
        if st.get("stop_reason") == "completed":
            return StageLeft(name, {"requests_left": 0, **planned}, spent, cap)
        if st.get("stop_reason") == "budget" and isinstance(tf, dict):
            has_figures = "finish_budget_usd" in tf or not tf.get("requests_left")
            if has_figures:  # else (online, no answer yet: no mean) walk its plan
                return StageLeft(name, tf, spent, cap)
    if stage is None or config is None:  # a stage directory this config does not run: its spend counts
        return StageLeft(name, {"requests_left": 0}, spent)
    if not RunPaths(path).plan.exists():  # not planned yet: what is left is unknown, so are the dollars
        return StageLeft(name, {}, spent, cap)
    return StageLeft(name, plan_to_finish(path, stage_config(config, stage, run_dir), spent), spent, cap)


def combine_stages(run_dir: str | Path, names: list[str], config: RunConfig | None = None) -> dict[str, Any]:
    """Write the run's clean.jsonl (the stages' clean.jsonl in stage order), clean_stats.json, stats.json.

    The export reads clean.jsonl and splits it into one config per ``Record.stage``. Returns clean stats.
    """
    run = Path(run_dir)
    clean_stats: dict[str, Any] = {"stages": list(names)}
    totals: dict[str, Any] = {}
    per_stage: dict[str, Any] = {}

    def write(files: list[IO[str]]) -> None:
        for name in names:
            path = RunPaths(stage_path(run, name)).clean
            if not path.exists():
                continue
            with open_read(path) as f:
                for raw in f:
                    line = raw.decode("utf-8")
                    files[0].write(line if line.endswith("\n") else line + "\n")

    write_files_atomically([RunPaths(run).clean], write)
    for name in names:
        cs = read_json_if_exists(RunPaths(stage_path(run, name)).clean_stats)
        if isinstance(cs, dict):
            _add(totals, cs)
            per_stage[f"stage_{name}"] = {
                k: v for k, v in cs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
    clean_stats.update({k: round(v, 6) if isinstance(v, float) else v for k, v in totals.items()})
    clean_stats.update(per_stage)
    for target, data in ((RunPaths(run).clean_stats, clean_stats), (RunPaths(run).stats, None)):
        payload = data if data is not None else stages_stats(run, names, config)

        def write_json(files: list[IO[str]], payload: Any = payload) -> None:
            json.dump(payload, files[0], indent=2, ensure_ascii=False)
            files[0].write("\n")

        write_files_atomically([target], write_json)
    return clean_stats


def estimate_totals(config: RunConfig, run_dir: str | Path, per: list[dict[str, Any]]) -> dict[str, Any]:
    """A staged run's estimate: the totals, the stages' estimates, one flat table per stage."""
    cost: dict[str, float] = {}
    for est in per:
        for k, v in est["cost_usd"].items():
            cost[k] = cost.get(k, 0.0) + v
    total: dict[str, Any] = {
        "stages": per,
        "requests": sum(e["requests"] for e in per),
        "prompt_tokens": sum(e["prompt_tokens"] for e in per),
        "budget_usd": config.budget_usd,
        "run_dir": str(run_dir),
        "cost_usd": cost,
    }
    for est in per:
        total[f"stage_{est['stage']}"] = {
            "model": est["model"],
            "requests": est["requests"],
            "prompt_tokens": est["prompt_tokens"],
            "max_tokens": est["max_tokens"],
            **est["cost_usd"],
            "budget_usd": est["budget_usd"],
        }
    return total
