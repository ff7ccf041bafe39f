"""System messages: the 16 Orca messages, per-submix draws, multiple-choice detection, and template sets.

**Orca messages** (``prompts/system_messages.yaml``, Orca Table 2) are kept verbatim, grammar slips included;
``system_message_spelling: ascii`` selects ``prompts/system_messages_ascii.yaml`` (same text, non-ASCII
characters replaced). Message 1 is empty: no system role is sent.

**Per-submix lists** (``prompts/submix_system_messages.yaml``, Orca §3.1.1): each row draws one id uniformly
at random from its submix's list. The draw is a hash of (seed, submix, row index), so it is seeded, does not
depend on which other rows are planned, and is the same whatever ``n`` is.

**Multiple choice** decides between the Flan2021 lists (3, 4, 7 versus 8, 10). A detector is any callable
``(SourceRow) -> bool``; the built-in ones (``RunConfig.mc_detector``):

* ``options``: ``"options:" in inputs.lower()`` (FLAN renders option lists as ``OPTIONS:``; the rule
  OpenOrca-style reproductions used).
* ``template``: ``zs_opt``/``fs_opt`` rows are multiple choice, ``*_noopt`` rows are not (another
  reproduction's rule; it over-detects generative tasks, whose opt and noopt templates are the same).
* ``auto`` (default): the question carries an option list as FLAN renders it — any of its 16 start strings
  (the empty one included, found by the list's structure), item styles and end strings; see
  :mod:`tracegen.planning.flan_options`. The template type is not consulted: a ``*_noopt`` row that carries an
  option list is multiple choice.

**Template sets** (Orca 2): a YAML/JSON file of task-specific system instructions, validated by
:class:`TemplateSet` (unknown keys rejected). Each template matches rows by ``task`` (a glob on task_name,
case-sensitive), ``task_regex`` (``re.search`` on task_name) and/or ``submix``; all conditions given must
hold, and the **first** matching template wins. Its ``system_prompt`` is what the teacher sees; its optional
``train_system_prompt`` (or the set's default one) is stored in ``Record.train_system_prompt`` for prompt
erasure. Rows no template matches get an Orca message as usual (plus the set's default
``train_system_prompt``, if any).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .._resources import prompt_path
from .._syntax import load_yaml, syntax_error_line
from ..errors import ConfigError
from .flan_options import has_options
from .sources import SourceRow

__all__ = [
    "MC_DETECTORS",
    "Choice",
    "MCDetector",
    "SubmixSystemMessages",
    "SystemMessageChooser",
    "SystemMessageFile",
    "TemplateRule",
    "TemplateSet",
    "auto_mc_detector",
    "get_mc_detector",
    "load_submix_system_messages",
    "load_system_messages",
    "load_template_set",
    "options_mc_detector",
    "template_mc_detector",
]

Spelling = Literal["verbatim", "ascii"]
_MESSAGE_FILES: dict[str, str] = {"verbatim": "system_messages.yaml", "ascii": "system_messages_ascii.yaml"}
_SUBMIX_FILE = "submix_system_messages.yaml"


# ---- prompt files (validated data) -----------------------------------------------------------------------
class SystemMessage(BaseModel):
    """One Orca system message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int = Field(ge=1, le=16)
    text: str


class SystemMessageFile(BaseModel):
    """``prompts/system_messages*.yaml``: the 16 Orca messages, ids 1-16 each exactly once."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    messages: list[SystemMessage]

    @model_validator(mode="after")
    def _complete(self) -> SystemMessageFile:
        ids = sorted(m.id for m in self.messages)
        if ids != list(range(1, 17)):
            raise ValueError(f"ids must be 1..16 each once, got {ids}")
        if any(m.id == 1 and m.text for m in self.messages):
            raise ValueError("message 1 must be empty (Orca: no system message)")
        return self


class SubmixSystemMessages(BaseModel):
    """``prompts/submix_system_messages.yaml``: the Orca message ids each submix draws from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cot: list[int]
    niv: list[int]
    t0: list[int]
    flan: list[int]
    flan_mc: list[int]

    @field_validator("cot", "niv", "t0", "flan", "flan_mc")
    @classmethod
    def _ids(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= i <= 16 for i in v) or len(set(v)) != len(v):
            raise ValueError("must be a non-empty list of distinct ids in 1..16")
        return v


def _load_yaml_model(name: str, model: type[BaseModel]) -> Any:
    path = prompt_path(name)
    try:
        return model.model_validate(load_yaml(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as e:
        raise ConfigError(
            f"{path}: invalid prompt file ({str(e).splitlines()[0]}); reinstall tracegen"
        ) from e


@functools.cache
def load_system_messages(spelling: Spelling = "verbatim") -> dict[int, str]:
    """The 16 Orca system messages, id → text, in the given spelling (``verbatim`` or ``ascii``)."""
    if spelling not in _MESSAGE_FILES:
        raise ConfigError(f"unknown system_message_spelling {spelling!r}; use verbatim or ascii")
    parsed: SystemMessageFile = _load_yaml_model(_MESSAGE_FILES[spelling], SystemMessageFile)
    return {m.id: m.text for m in parsed.messages}


@functools.lru_cache(maxsize=1)
def load_submix_system_messages() -> SubmixSystemMessages:
    """Per-submix id lists (Orca §3.1.1)."""
    parsed: SubmixSystemMessages = _load_yaml_model(_SUBMIX_FILE, SubmixSystemMessages)
    return parsed


# ---- multiple-choice detectors ---------------------------------------------------------------------------
MCDetector = Callable[[SourceRow], bool]
"""Decides whether a Flan2021 row is multiple choice (system messages 8/10 instead of 3/4/7)."""


def options_mc_detector(row: SourceRow) -> bool:
    """``"options:" in inputs.lower()``."""
    return "options:" in row.question.lower()


def template_mc_detector(row: SourceRow) -> bool:
    """Option templates (``zs_opt``, ``fs_opt``) are multiple choice; ``*_noopt`` are not."""
    return row.template_type.endswith("_opt")


def auto_mc_detector(row: SourceRow) -> bool:
    """Iff the question carries a FLAN-rendered option list (:func:`tracegen.planning.flan_options.has_options`)."""
    return has_options(row.question)


MC_DETECTORS: dict[str, MCDetector] = {
    "auto": auto_mc_detector,
    "options": options_mc_detector,
    "template": template_mc_detector,
}


def get_mc_detector(name: str) -> MCDetector:
    """The built-in detector called ``name`` (auto, options, template)."""
    try:
        return MC_DETECTORS[name]
    except KeyError:
        raise ConfigError(f"unknown mc_detector {name!r}; use {', '.join(MC_DETECTORS)}") from None


# ---- template sets (Orca 2) ------------------------------------------------------------------------------
SubmixName = Literal["cot", "niv", "flan", "t0"]


class TemplateRule(BaseModel):
    """One task-specific system instruction and the rows it applies to."""

    # built when a template set is first read: a run without --templates never validates one
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    name: str = Field(min_length=1)
    task: str | None = None
    """Glob on task_name (fnmatch, case-sensitive), e.g. ``cot_gsm8k*``."""
    task_regex: str | None = None
    """Regular expression searched in task_name, e.g. ``^task\\d+_.*translation``."""
    submix: SubmixName | list[SubmixName] | None = None
    system_prompt: str
    """What the teacher sees ("" = no system role)."""
    train_system_prompt: str | None = None
    """Prompt erasure: what the student is trained with instead (stored separately)."""

    @field_validator("task_regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"is not a valid regular expression ({e})") from None
        return v

    @model_validator(mode="after")
    def _has_condition(self) -> TemplateRule:
        if self.task is None and self.task_regex is None and self.submix is None:
            raise ValueError("needs at least one of task, task_regex, submix")
        return self

    def matches(self, row: SourceRow) -> bool:
        """All given conditions hold for ``row``."""
        if self.submix is not None:
            allowed = [self.submix] if isinstance(self.submix, str) else self.submix
            if row.submix not in allowed:
                return False
        if self.task is not None and not fnmatch.fnmatchcase(row.task_name, self.task):
            return False
        return self.task_regex is None or _regex(self.task_regex).search(row.task_name) is not None


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


class TemplateSet(BaseModel):
    """A template-set file: task-specific system instructions, first match wins."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)  # as TemplateRule
    version: Literal[1] = 1
    description: str = ""
    train_system_prompt: str | None = None
    """Default prompt-erasure message for every row (templates may override it)."""
    templates: list[TemplateRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> TemplateSet:
        names = [t.name for t in self.templates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"template names must be unique; repeated: {', '.join(dupes)}")
        return self

    def match(self, row: SourceRow) -> TemplateRule | None:
        """The first template matching ``row``, or None."""
        for rule in self.templates:
            if rule.matches(row):
                return rule
        return None


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_template_set(path: str | Path) -> TemplateSet:
    """Read and validate a template set (``.json`` as JSON, else YAML); a ConfigError names the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read template set ({e.strerror}); check --templates") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{syntax_error_line(p, e)}; check --templates") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a template set must be a mapping with a 'templates' list")
    try:
        return TemplateSet.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            where = _loc(loc[:-1])
            known = TemplateRule.model_fields if where.startswith("templates") else TemplateSet.model_fields
            raise ConfigError(
                f"{p}: unknown key {loc[-1]!r}"
                + (f" in {where}" if where else "")
                + f"; known keys: {', '.join(known)}"
            ) from None
        raise ConfigError(f"{p}: {_loc(loc) or 'template set'}: {err['msg']}") from None


# ---- choosing a row's system message ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Choice:
    """The system message chosen for one row."""

    system_prompt: str
    system_message_id: int | None
    """Orca id, or None when a template-set template chose the message."""
    train_system_prompt: str | None
    label: str
    """For stats: the Orca id as a string ("7") or ``template:<name>``."""


@functools.lru_cache(maxsize=64)
def _draw_prefix(seed: int, submix: str) -> Any:
    return hashlib.blake2b(f"{seed}\x1f{submix}\x1f".encode(), digest_size=8)


def _draw(seed: int, submix: str, index: int, k: int) -> int:
    """Uniform in [0, k): a hash of (seed, submix, index); modulo bias < k / 2**64."""
    h = _draw_prefix(seed, submix).copy()
    h.update(str(index).encode())
    return int.from_bytes(h.digest(), "big") % k


class SystemMessageChooser:
    """Chooses each row's system message: template set first (if any), else a seeded Orca draw."""

    def __init__(
        self,
        *,
        seed: int,
        spelling: Spelling = "verbatim",
        mc_detector: MCDetector = auto_mc_detector,
        template_set: TemplateSet | None = None,
    ) -> None:
        self.seed = seed
        self.messages = load_system_messages(spelling)
        lists = load_submix_system_messages()
        self.ids: dict[str, list[int]] = {
            "cot": lists.cot,
            "niv": lists.niv,
            "t0": lists.t0,
            "flan": lists.flan,
            "flan_mc": lists.flan_mc,
        }
        self.mc_detector = mc_detector
        self.template_set = template_set
        self._orca: dict[int, Choice] = {}
        """The Choice of each Orca id (a Choice is immutable: every row drawing the id shares it)."""

    def orca_list(self, row: SourceRow) -> str:
        """Which id list ``row`` draws from: its submix, or ``flan_mc`` for multiple-choice Flan2021."""
        if row.submix == "flan" and self.mc_detector(row):
            return "flan_mc"
        return row.submix

    def choose(self, row: SourceRow, index: int) -> Choice:
        """The message for ``row``, the ``index``-th row of its submix in source order."""
        default_train = None
        if self.template_set is not None:
            rule = self.template_set.match(row)
            if rule is not None:
                train = rule.train_system_prompt
                if train is None:
                    train = self.template_set.train_system_prompt
                return Choice(rule.system_prompt, None, train, f"template:{rule.name}")
            default_train = self.template_set.train_system_prompt
        ids = self.ids[self.orca_list(row)]
        message_id = ids[_draw(self.seed, row.submix, index, len(ids))]
        choice = self._orca.get(message_id)
        if choice is None:
            choice = Choice(self.messages[message_id], message_id, default_train, str(message_id))
            self._orca[message_id] = choice
        return choice
