"""What a stage may read of the config and what its cache key hashes: one declaration.

Each task module declares `READS`: whole config sections ("search") or single fields
("iterate.prompts_per_iteration"). The flow hashes exactly those into the stage's key
(`signature`) and hands the stage only the sections they name (`project`); the stage's build
function reads them through `StageConfig`, which refuses any other section or field: a stage
cannot depend on a setting its key ignores (its cached output would then be reused after that
setting changed). `runtime` and `tracking`
(where and how fast a stage runs, never what it computes) and `seed` (in every key) are always
readable; runtime knobs inside a section (batch sizes, device) are left out of the key as
everywhere (`data.config.stage_signature`).
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from data.config import SRCConfig, stage_signature

ALWAYS = frozenset({"runtime", "tracking"})  # `seed` is no section: always readable
SECTIONS = frozenset(SRCConfig.model_fields) - {"seed"}


class UndeclaredRead(RuntimeError):
    """A stage read a config section or field that its task module's READS leaves out. Not an
    AttributeError: `getattr(cfg, name, default)` must not turn it into a silent default."""


Read = str | tuple[str, str, Any]  # "section", "section.field", or (section, "section.field", value)


def _conditions(reads: Sequence[Read]) -> list[tuple[str, str]]:
    """(section, field) of each field a conditional read depends on."""
    return [tuple(r[1].split(".", 1)) for r in reads if not isinstance(r, str)]


def _when(reads: Sequence[Read], values: dict[tuple[str, str], Any]) -> list[str]:
    """The reads that apply, given the values of the fields the conditional ones name: a read
    (section, "section.field", value) is the section where that field equals value, else nothing.
    The callers look those values up themselves, so only the fields named travel here."""
    return [r if isinstance(r, str) else r[0] for r in reads
            if isinstance(r, str) or values[tuple(r[1].split(".", 1))] == r[2]]


def _check(reads: Sequence[Read]) -> tuple[set[str], dict[str, set[str]]]:
    whole, fields = set(), defaultdict(set)
    for r in reads:
        if not isinstance(r, str):  # conditional: its section, and the field it depends on, declared
            if len(r) != 3 or r[1] not in reads and r[1].split(".")[0] not in reads:
                raise ValueError(f"READS names {r!r}: a conditional read is (section, 'section.field', value) "
                                 "with that field declared too")
            _check((r[1],))
            r = r[0]
        section, _, field = r.partition(".")
        if section not in SECTIONS:
            raise ValueError(f"READS names {r!r}: {section!r} is not a config section")
        if field:
            if field not in SRCConfig.model_fields[section].annotation.model_fields:
                raise ValueError(f"READS names {r!r}: {section} has no field {field!r}")
            fields[section].add(field)
        else:
            whole.add(section)
    return whole, fields


class _Fields:
    """A section of which only some fields were declared."""

    def __init__(self, section: Any, allowed: set[str], where: str):
        self._section, self._allowed, self._where = section, allowed, where

    def __getattr__(self, name: str) -> Any:
        if name in type(self._section).model_fields and name not in self._allowed:
            raise UndeclaredRead(f"{self._where}.{name} is read but not declared in READS: declare it "
                                 "(it then joins the stage's cache key)")
        return getattr(self._section, name)


class StageConfig:
    """The config as a stage may read it (see the module doc): the sections of a config dump
    (the whole config's, or a stage's `project`ion) that the stage declared, each validated
    once per process by its own model; the run's config was validated whole when it was loaded."""

    def __init__(self, cfg: dict[str, Any], reads: Sequence[Read], stage: str):
        self._cfg, self._stage = cfg, stage
        _check(reads)
        self._whole, self._fields = _check(_when(reads, {(s, f): cfg[s][f] for s, f in _conditions(reads)}))

    def __getattr__(self, name: str) -> Any:
        if name == "seed":
            return self._cfg["seed"]
        if name not in SECTIONS:
            raise AttributeError(name)
        if name not in ALWAYS and name not in self._whole and name not in self._fields:
            raise UndeclaredRead(f"stage {self._stage!r} reads config section {name!r}, which its task module "
                                 "does not declare in READS: declare it (it then joins the stage's cache key)")
        value = _section(name, json.dumps(self._cfg.get(name, {}), sort_keys=True))
        if name in self._fields and name not in self._whole:
            value = _Fields(value, self._fields[name], f"stage {self._stage!r}: {name}")
        self.__dict__[name] = value  # the next read of it is a plain attribute
        return value


@functools.lru_cache(maxsize=64)
def _section(name: str, blob: str) -> Any:
    return SRCConfig.model_fields[name].annotation.model_validate(json.loads(blob))


def project(cfg: SRCConfig, reads: Sequence[Read]) -> dict[str, Any]:
    """What a stage is handed of the config: the seed, `runtime`, `tracking` and each section
    `reads` names and whose condition holds (whole: a field's section travels whole, and
    `StageConfig` guards its other fields), as JSON-ready dicts."""
    _check(reads)
    dump = cfg.model_dump(mode="json")
    whole, fields = _check(_when(reads, {(s, f): dump[s][f] for s, f in _conditions(reads)}))
    return {"seed": dump["seed"], **{s: dump[s] for s in sorted(ALWAYS | whole | set(fields))}}


def signature(cfg: SRCConfig, reads: Sequence[Read]) -> dict[str, Any]:
    """What a stage's key hashes of the config: each declared section (whose condition holds)
    without its runtime knobs, each declared field's value."""
    _check(reads)
    out: dict[str, Any] = {}
    for r in _when(reads, {(s, f): getattr(getattr(cfg, s), f) for s, f in _conditions(reads)}):
        section, _, field = r.partition(".")
        if section in ALWAYS:
            continue
        sig = stage_signature(getattr(cfg, section))
        out[r] = sig.get(field) if field else sig
    return out
