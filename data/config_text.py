"""A config's text before it is a config: `section.field=value` overrides parsed (values typed
as YAML), set into the YAML tree, and pydantic's and PyYAML's errors said in one line each,
naming the field and the value (data/config.py validates the tree).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from data.config_data import ConfigError


def format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key (value {e['input']!r})")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"  {path}: {e['msg']}{shown}")
    return "\n".join(lines)


def yaml_reason(e: yaml.YAMLError, with_line: bool = True) -> str:
    """PyYAML's multi-line error as one clause: what is wrong and where."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    where = ""
    if mark is not None:
        where = (f" at line {mark.line + 1}," if with_line else " at") + f" column {mark.column + 1}"
    context = getattr(e, "context", None)
    return f"{problem}{where}" + (f", {context}" if context else "")


def set_path(tree: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = tree
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {path}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """`["dpo.beta=0.2", "search.mode=sample"]` -> `{"dpo.beta": 0.2, ...}` (YAML-typed values)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty field path")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:  # e.g. an unbalanced flow mapping `{id: qid`
            raise ConfigError(f"override {item}: the value is not valid YAML ({yaml_reason(e, False)}); "
                              "quote the value or close its brackets") from None
    return out
