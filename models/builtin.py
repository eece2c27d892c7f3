"""The built-in world's committed models (models/builtin/: base, judges, reader) and what the
pipeline needs to find and check them. Their bootstrap tools (models/bootstrap.py,
models/judge_bootstrap.py, models/reader_bootstrap.py) build them; the pipeline never imports
those.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from data.config import SRCConfig
from data.metrics import score_records, summarize
from data.shapes import generate, load_image
from models.generation import generate_greedy

BUILTIN_BASE = Path(__file__).resolve().parent / "builtin" / "base"
BUILTIN_JUDGE = Path(__file__).resolve().parent / "builtin" / "judge"
# the pointwise ablation's judge: the committed judge trained further on pointwise items too
BUILTIN_POINTWISE_JUDGE = BUILTIN_JUDGE.with_name("judge-pointwise")
BUILTIN_READER = BUILTIN_JUDGE.with_name("reader")
BUILTIN_CLAIMS = BUILTIN_JUDGE.with_name("claims")  # the claim checker of scorer.mode=claims
JUDGE_INFO = "src_judge.json"  # how a judge folder was trained: its template must be scored with



def resolve_base(name: str) -> str:
    """'builtin' -> the committed base folder; anything else is passed through."""
    return str(BUILTIN_BASE) if name == "builtin" else name


def reader_path(name: str) -> str:
    """`scorer.reader` as a location: 'builtin' -> the committed reader folder; anything else
    (a folder, a hub id) passes through."""
    return str(BUILTIN_READER) if name == "builtin" else name


def judge_path(name: str, mode: str = "pairwise") -> str:
    """`scorer.model` as a judge location: 'builtin' -> the committed folder for `mode`
    (models/builtin/judge, judge-pointwise for scorer.mode=pointwise, the claim checker
    models/builtin/claims for scorer.mode=claims); else as given.

    Raises:
        ValueError: 'builtin' but the committed judge is missing.
    """
    if name != "builtin":
        return name
    folder = {"pointwise": BUILTIN_POINTWISE_JUDGE, "claims": BUILTIN_CLAIMS}.get(mode, BUILTIN_JUDGE)
    if not (folder / "manifest.json").is_file():
        make = "bootstrap-claims" if mode == "claims" else "bootstrap-judge"
        raise ValueError(f"scorer.model=builtin (scorer.mode={mode}): {folder} is missing; run "
                         f"`make {make}` or set scorer.model=train")
    return str(folder)


def judge_info(path: str | Path) -> dict:
    """The `src_judge.json` of a judge folder ({} for a judge from elsewhere)."""
    f = Path(path) / JUDGE_INFO
    return json.loads(f.read_text()) if f.is_file() else {}


def check_template(path: str | Path, template: str, mode: str | None = None, evidence: str | None = None,
                   world: str | None = None) -> None:
    """A judge trained on one prompt style (or on pairs only) reads another as noise: refuse,
    naming both. A judge trained in pointwise mode saw pairs too and may judge either way.

    Raises:
        ValueError: the folder's `src_judge.json` names another template than `template`, or
            says pairwise while `mode` is pointwise.
    """
    info = judge_info(path)
    trained = info.get("template")
    if trained is not None and trained != template:
        raise ValueError(f"judge {str(path)!r} was trained with scorer.template={trained!r}, "
                         f"but the config says {template!r}: set scorer.template={trained}")
    if (mode == "claims") != (info.get("mode", mode) == "claims"):
        raise ValueError(f"judge {str(path)!r} was trained for scorer.mode={info.get('mode')}, not "
                         f"{mode}: a claim checker judges one claim, a pair judge two responses")
    if world is not None and info.get("world", world) != world:
        raise ValueError(f"judge {str(path)!r} was trained for data.world={info['world']}, not {world}: "
                         "distil one from a teacher (scorer.model=distill, docs/own-data.md), train one "
                         "(scorer.model=train), or give one trained for your data (scorer.model=<folder or hub id>)")
    if evidence is not None and info.get("evidence", evidence) != evidence:
        raise ValueError(f"claim checker {str(path)!r} was trained with scorer.evidence={info['evidence']!r}, "
                         f"but the config says {evidence!r}: set scorer.evidence={info['evidence']}")
    if mode == "pointwise" and info.get("mode") == "pairwise":
        raise ValueError(f"judge {str(path)!r} was trained on pairs only (scorer.mode=pairwise) "
                         "and cannot judge pointwise: train one with scorer.mode=pointwise")


def evaluate_base(model, processor, cfg: SRCConfig, n: int, batch_size: int = 128) -> dict:
    recs = generate("eval", n, cfg.data, cfg.seed)
    responses = generate_greedy(
        model, processor, [load_image(r["image"]) for r in recs], [r["question"] for r in recs],
        max_new_tokens=cfg.eval.max_new_tokens, batch_size=batch_size,
    )
    return summarize(score_records(recs, responses))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
