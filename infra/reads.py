"""What a stage may read of the config and what its cache key hashes: one declaration.

Each task module declares `READS`: whole config sections ("search") or single fields
("iterate.prompts_per_iteration"). The flow hashes exactly those into the stage's key
(`signature`), and the stage's build function gets the config through `declared`, which
refuses any other section or field: a stage cannot depend on a setting its key ignores (its
cached output would then be reused after that setting changed). `runtime` and `tracking`
(where and how fast a stage runs, never what it computes) and `seed` (in every key) are always
readable; runtime knobs inside a section (batch sizes, device) are left out of the key as
everywhere (`data.config.stage_signature`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from data.config import SRCConfig, stage_signature

ALWAYS = frozenset({"runtime", "tracking"})  # `seed` is no section: always readable
SECTIONS = frozenset(SRCConfig.model_fields) - {"seed"}


class UndeclaredRead(RuntimeError):
    """A stage read a config section or field that its task module's READS leaves out. Not an
    AttributeError: `getattr(cfg, name, default)` must not turn it into a silent default."""


def _check(reads: Sequence[str]) -> tuple[set[str], dict[str, set[str]]]:
    whole, fields = set(), defaultdict(set)
    for r in reads:
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


class DeclaredConfig:
    """An SRCConfig through which a stage reads only what it declared (see the module doc)."""

    def __init__(self, cfg: SRCConfig, reads: Sequence[str], stage: str):
        self._cfg, self._stage = cfg, stage
        self._whole, self._fields = _check(reads)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._cfg, name)
        if name not in SECTIONS or name in ALWAYS or name in self._whole:
            return value
        if name in self._fields:
            return _Fields(value, self._fields[name], f"stage {self._stage!r}: {name}")
        raise UndeclaredRead(f"stage {self._stage!r} reads config section {name!r}, which its task module "
                             "does not declare in READS: declare it (it then joins the stage's cache key)")


def declared(cfg: SRCConfig, reads: Sequence[str], stage: str) -> Any:
    """`cfg` as the stage `stage` may read it (a `DeclaredConfig`)."""
    return DeclaredConfig(cfg, reads, stage)


def signature(cfg: SRCConfig, reads: Sequence[str]) -> dict[str, Any]:
    """What a stage's key hashes of the config: each declared section without its runtime
    knobs, each declared field's value."""
    _check(reads)
    out: dict[str, Any] = {}
    for r in reads:
        section, _, field = r.partition(".")
        if section in ALWAYS:
            continue
        sig = stage_signature(getattr(cfg, section))
        out[r] = sig.get(field) if field else sig
    return out
