"""The R-Scorer behind one interface (docs/method.md section 3): `open_judge` -> `Judge.judge`.

Every caller that judges candidates (the score stage, its Ray shards, `make stages`, the bench)
opens a judge here and gets the same record kinds back, whatever judges:

| scorer.model / scorer.mode | verdicts                                   | code               |
|----------------------------|--------------------------------------------|--------------------|
| oracle (any mode)          | the exact scorer of the built-in world     | data/judging.py    |
|                            | (claims mode: exact marks, same arithmetic)|                    |
| a model, pairwise          | ' A' / ' B' / ' Tie' of one forward pass   | models/scorer.py   |
| a model, pointwise         | ' Good' / ' Bad' (ablation)                | models/scorer.py   |
| a model, claims            | each claim checked, the answer read, pairs | models/claims.py   |
|                            | worked out from those marks                |                    |

With `scorer.reader` set, the reader marks each candidate supported or not (models/reader.py)
next to any of them. The diagnostics (agreement with the exact scorer, slot bias, flip rate,
the steering probes) need scene facts and are {} without them. Which folder a 'builtin' or a
trained judge lives in is the pipeline's business (infra/refs.py): `open_judge` takes the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data.config import ScorerConfig
from data.curation import flip_rate
from data.judging import (
    judge_items, mark_agreement, onpolicy_agreement, oracle_marks, oracle_pairs, oracle_points, slot_bias,
    steer_win_rate, steering_items,
)
from data.schema import Candidate, CandidateMark, PairScore, PointScore, ReaderMark
from data.scoring import score_shapes
from models.scorer import Progress, load_judge, score_pairs, score_points
from models.reader import read_candidates, load_reader, reader_threshold, agreement
from models.claims import marks_to_pairs, candidate_marks, hardened

ORACLE = "oracle"  # scorer.model: the exact scorer of the built-in world judges
STEER_PROMPTS = 100  # prompts probed per steer: a few seconds of judging


@dataclass
class Judgement:
    """What judging one set of candidates gives: pair rows (or pointwise rows), the claims
    judge's marks, the reader's marks, and diagnostics (slash-free names, as the score stage
    has always logged them)."""

    pairs: list[PairScore] | None = None
    points: list[PointScore] | None = None
    marks: list[CandidateMark] | None = None
    reads: list[ReaderMark] | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)


class Judge:
    """One judge: `verdicts` on judging items (data/judging.py:judge_items), `judge` on a
    search's candidates with the reader and the diagnostics."""

    def __init__(self, cfg: ScorerConfig, model: Any = None, tokenizer: Any = None,
                 reader: tuple[Any, Any] | None = None, threshold: float = 0.0, seed: int = 0):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.reader, self.threshold, self.seed = reader, threshold, seed
        self.oracle = cfg.model == ORACLE
        self.kind = "oracle" if self.oracle else cfg.mode

    def verdicts(self, items: Sequence[dict], progress: Progress = None
                 ) -> tuple[list[PairScore] | None, list[PointScore] | None, list[CandidateMark] | None]:
        """(pair rows, pointwise rows, marks) of the items; the ones the mode does not give are None."""
        cfg = self.cfg
        if self.oracle and cfg.mode == "claims":  # exact marks, worked out like the judge's

            marks = oracle_marks(items)
            return marks_to_pairs(marks), None, marks
        if self.oracle:
            return (None, oracle_points(items), None) if cfg.mode == "pointwise" else (oracle_pairs(items), None, None)
        if cfg.mode == "claims":
            if self.reader is None:
                raise ValueError("scorer.mode=claims needs scorer.reader")
            marks = candidate_marks(self.model, self.tokenizer, *self.reader, items, cfg.max_length,
                                    cfg.batch_size, cfg.use_gold_answer, progress, cfg.evidence == "overlap")
            return marks_to_pairs(hardened(marks) if cfg.hard_marks else marks), None, marks

        if cfg.mode == "pointwise":
            return None, score_points(self.model, self.tokenizer, items, cfg, progress), None
        return score_pairs(self.model, self.tokenizer, items, cfg, progress), None, None

    def judge(self, cands: Sequence[Candidate], progress: Progress = None,
              read_progress: Progress = None, pairs: list[PairScore] | None = None) -> Judgement:
        """Judge a search's candidates. `pairs` given (merged Ray shards): only the rest is done."""
        facts = bool(cands) and all(c.get("facts") for c in cands)
        if pairs is None:
            items = judge_items(cands)
            if self.cfg.blank_reference:  # the ablation: the same judge without the scene
                items = [{**it, "reference": ""} for it in items]
            pairs, points, marks = self.verdicts(items, progress)
        else:
            points = marks = None
        out = Judgement(pairs=pairs, points=points, marks=marks)
        d = out.diagnostics
        d["n_rows"] = len(pairs if pairs is not None else points or [])
        d["flip_rate"] = flip_rate(pairs) if pairs else None
        if pairs is not None:
            d["slot_bias"] = slot_bias(pairs) if pairs else None
            d.update(onpolicy_agreement(pairs, cands))
        if marks:
            d.update(mark_agreement(marks, cands))
        if pairs is not None and not self.oracle:
            d.update(self.steer(cands))
        if self.reader is not None:
            out.reads = self.read(cands, read_progress)
            said = [r["supported"] for r in out.reads if r["supported"] is not None]
            d["reader/supported_share"] = sum(said) / len(said) if said else None
            d["reader/threshold"] = self.threshold
            if facts:
                ex = [score_shapes(c["text"], c["facts"], str(c["gold"])) for c in cands]
                d.update(agreement(out.reads, [e.consistent if e.parsable else None for e in ex],
                                   [e.correct for e in ex]))
        return out

    def read(self, cands: Sequence[Candidate], progress: Progress = None) -> list[ReaderMark]:
        model, tokenizer = self.reader
        return read_candidates(model, tokenizer, cands, self.threshold, self.cfg.batch_size, progress)

    def steer(self, cands: Sequence[dict], n_prompts: int | None = STEER_PROMPTS) -> dict[str, float]:
        """`steer_<how>`: the win probability this judge gives a prompt's worst (wrong) candidate
        over its best (right) one once content-free text is added to it (data/judging.py). Needs
        scene facts: {} for candidates without them (your own data)."""
        if not cands or any(c.get("facts") is None for c in cands):
            return {}
        out = {}
        for how, items in steering_items(cands, self.seed).items():
            if items:
                pairs, _, _ = self.verdicts(items[:n_prompts])
                out[f"steer_{how}"] = steer_win_rate(pairs)
        return out


def open_judge(cfg: ScorerConfig, where: str | None, device: str = "auto", seed: int = 0,
               reader_at: str | None = None) -> Judge:
    """The judge of `cfg` (mode, settings, reader) with its model at `where` (a folder or hub id;
    None for the oracle) and its reader at `reader_at` (default: scorer.reader).

    Raises:
        ValueError: a model or the reader cannot be loaded (the message names which and where).
    """
    model = tokenizer = reader = None
    threshold = 0.0
    if cfg.model != ORACLE:
        model, tokenizer = load_judge(str(where), device=device)
    if cfg.reader:
        name = reader_at or cfg.reader
        if name == "distill":
            raise ValueError("scorer.reader=distill: the reader is distilled with the judge (scorer.model=distill)")
        try:
            reader = load_reader(name, device=device)
        except ValueError as err:
            raise ValueError(f"scorer.reader: {err}") from err
        threshold = reader_threshold(name, cfg.reader_threshold)
    return Judge(cfg, model, tokenizer, reader, threshold, seed)
