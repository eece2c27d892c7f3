"""Headroom of an iteration: can best-of-N teach the policy anything its greedy answer does not
already do? Measured on the iteration's own calibration prompts, before any judging or DPO.

Three cumulative levels per response: correct; correct and consistent; correct, consistent
and factual. For each level, the share of prompts where at least one search candidate reaches
it (best-of-N) next to the share where the greedy response reaches it. Where best-of-N is no
higher than greedy, preference pairs can only teach the policy what it already does: SRC has
nothing to gain there, whatever the judge.

On the built-in world every level is exact (data.scoring); on data without scene facts only
`correct` can be known without a judge, and the other levels are not reported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from data.scoring import gold_answer, parse_response, score_shapes
from data.schema import Candidate

LEVELS = ("correct", "correct_consistent", "correct_consistent_factual")
MIN_GAIN = 0.02  # best-of-N above greedy by less than this share of prompts: nothing to teach


def levels(text: str, rec: dict[str, Any]) -> tuple[bool | None, ...]:
    """(correct, correct+consistent, correct+consistent+factual) of one response; None where it
    cannot be known (no scene facts)."""
    if rec.get("facts"):
        s = score_shapes(text, rec["facts"], rec["answer"])
        return s.correct, s.correct and s.consistent, s.correct and s.consistent and s.factual
    ok = parse_response(text, rec.get("choices")).answer == gold_answer(rec["answer"], rec.get("choices"))
    return ok, None, None


def headroom(cands: Sequence[Candidate], greedy: dict[Any, str], records: dict[Any, dict]) -> dict[str, float]:
    """`search/bestofn_<level>`, `search/greedy_<level>` (shares of prompts) and
    `search/headroom` (best-of-N minus greedy at the strictest level measured).

    Args:
        cands: candidate rows (`prompt_id`, `text`).
        greedy: prompt id -> the policy's greedy response.
        records: prompt id -> its pool record (`answer`, `facts`, `choices`).

    Example: 2 prompts; prompt 1 has a correct+consistent candidate and a greedy that is only
    correct, prompt 2 nothing correct at all: bestofn_correct_consistent 0.5, greedy 0.0.
    """
    by_prompt: dict[Any, list[str]] = defaultdict(list)
    for c in cands:
        by_prompt[c["prompt_id"]].append(c["text"])
    if not by_prompt:
        return {}
    best: dict[str, list[bool]] = defaultdict(list)
    base: dict[str, list[bool]] = defaultdict(list)
    for pid, texts in by_prompt.items():
        rec = records[pid]
        cand_levels = [levels(t, rec) for t in texts]
        greedy_levels = levels(greedy[pid], rec)
        for k, name in enumerate(LEVELS):
            if greedy_levels[k] is None:
                continue
            best[name].append(any(lv[k] for lv in cand_levels))
            base[name].append(bool(greedy_levels[k]))
    out: dict[str, float] = {}
    for name in best:
        out[f"search/bestofn_{name}"] = sum(best[name]) / len(best[name])
        out[f"search/greedy_{name}"] = sum(base[name]) / len(base[name])
    top = [n for n in LEVELS if n in best][-1]
    out["search/headroom"] = out[f"search/bestofn_{top}"] - out[f"search/greedy_{top}"]
    return out


def warning(metrics: dict[str, float]) -> str | None:
    """A sentence for the log and the report when best-of-N has (almost) nothing to teach."""
    if "search/headroom" not in metrics or metrics["search/headroom"] >= MIN_GAIN:
        return None
    top = [n for n in LEVELS if f"search/bestofn_{n}" in metrics][-1]
    return (f"best-of-N has nothing to teach: {100 * metrics[f'search/bestofn_{top}']:.1f}% of prompts have a "
            f"{top.replace('_', ' + ')} candidate, and the greedy response already is one on "
            f"{100 * metrics[f'search/greedy_{top}']:.1f}% (more candidates or a more diverse search, "
            "or a stronger rationale SFT, give SRC something to learn)")
