"""References to the models a pipeline run starts from: the base, a trained R-Scorer, the
reader. A reference is `{"path", "digest", "stage", "key", "meta"}`, like a stage output's
(infra/store.py): a local folder is hashed by content, a hub id by name, so a retrained model
at the same path is a new input to every stage key downstream.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from data.config import digest
from infra.store import file_digest
from models.builtin import resolve_base, check_template, judge_info, judge_path, reader_path
from models.reader import manifest


def base_ref(name: str, field: str = "model.base") -> dict:
    """Reference to the base model: a local folder hashed by content, or a hub id by name.

    Raises:
        ValueError: naming `field`, for a path that is not a model folder, or (offline) a hub
            id that is not in the local cache.
    """
    path = resolve_base(name)
    p = Path(path)
    if p.is_dir():
        files = {str(f.relative_to(p)): file_digest(f) for f in sorted(p.rglob("*")) if f.is_file()}
        return {"path": str(p.resolve()), "digest": digest(files), "stage": "base", "key": "", "meta": {}}
    if p.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"{field}: {name!r} is not a model folder")
    if os.environ.get("HF_HUB_OFFLINE") == "1":  # a hub id must already be in the local cache
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise ValueError(f"{field}: {name!r} is neither a local model folder nor a hub id in the "
                             "local Hugging Face cache (HF_HUB_OFFLINE=1: nothing is downloaded)")
    return {"path": name, "digest": digest({"hub_id": name}), "stage": "base", "key": "", "meta": {}}


def judge_ref(name: str, template: str = "full", mode: str = "pairwise", evidence: str | None = None,
              world: str | None = None) -> dict:
    """Reference to a trained R-Scorer: 'builtin' (models/builtin/judge), a local folder by
    content, or a hub id. A folder that records its prompt style must match `template`.

    Raises:
        ValueError: no such folder, or the judge was trained on another scorer.template.
    """
    ref = base_ref(judge_path(name, mode), "scorer.model")
    folder = Path(ref["path"])
    info, meta = {}, {}
    if folder.is_dir():
        check_template(folder, template, mode, evidence, world)
        info = judge_info(folder)
        if (folder / "manifest.json").is_file():
            meta = {"metrics": json.loads((folder / "manifest.json").read_text()).get("metrics", {})}
    return {**ref, "stage": "scorer", "judge_dir": ref["path"], "meta": meta, "info": info}


ORACLE_JUDGE = {"stage": "scorer", "path": "", "judge_dir": "", "digest": "oracle", "key": "", "meta": {}}


def given_judge_ref(s, world: str) -> dict | None:
    """The judge of scorer.model when it is given (the committed one, a folder, a hub id, the
    oracle: ORACLE_JUDGE, no model), checked against the config and the data's world; None when
    the run makes it (scorer.model=train or distill).

    Raises:
        ValueError: one line naming what to set (no such judge, another prompt style, mode,
            evidence, or a judge trained for another world).
    """
    if s.model in ("train", "distill"):  # s: the scorer section; world: data.world
        return None
    if s.model == "oracle":
        return ORACLE_JUDGE
    return judge_ref(s.model, s.template, s.mode, s.evidence, world)


def check_judging(cfg) -> None:
    """Before any compute (the CLI's preflight, the flow's start): the judge and the reader the
    config names exist and were trained for its world and settings.

    Raises:
        ValueError: one line naming the field to set.
    """
    given_judge_ref(cfg.scorer, cfg.data.world)
    reader_digest(cfg.scorer.reader, cfg.data.world)


def reader_digest(name: str | None, world: str | None = None) -> str:
    """Content digest of scorer.reader ('builtin', a local folder, or a hub id by name), for the
    score stage's key: a retrained reader at the same path is a new input. "" = no reader, or
    one distilled in the run (scorer.reader=distill: inside the judge's folder, in its digest).

    Raises:
        ValueError: naming scorer.reader, for a folder or hub id that is not there, or a reader
            trained for another data.world than `world` (its manifest's `world`).
    """
    if not name or name == "distill":
        return ""

    ref = base_ref(reader_path(name), "scorer.reader")
    trained = manifest(ref["path"]).get("world") if Path(ref["path"]).is_dir() else None
    if world is not None and trained is not None and trained != world:
        raise ValueError(f"scorer.reader: {name!r} was trained to read data.world={trained} rationales, not "
                         f"{world}: set scorer.reader=distill (with a teacher: docs/own-data.md), a reader "
                         "trained for your data, or scorer.reader=null with scorer.mode=pairwise")
    return ref["digest"]
