"""Confidence-weighted preference curation (docs/method.md sections 3 and 5): judge verdicts -> DPO pairs.

Pure functions on plain records (a list of dicts or a pandas DataFrame); no model, no I/O.

Inputs
- ordered-pair verdicts, one row per ORDERED pair (both orders present):
  `prompt_id, a_idx, b_idx, p_a, p_b, p_tie` (candidate a_idx shown as A, b_idx as B);
- pointwise verdicts (ablation): `prompt_id, cand_idx, p_good`;
- candidates: `prompt_id, cand_idx, text, answer` (parsed and normalised, None = unparsable),
  optional `gold`, `mean_logprob`, `supported` (the reader's verdict, models/reader.py: the
  rationale alone implies the stated answer; None = not read), `factual` (the claims judge's
  mark rounded at 1/2; None = not judged), and prompt fields passed through to the pairs.

Decisions beyond the paper
- The judge's three probabilities are used as given (not renormalised); they must lie in
  [0, 1] and sum to at most 1.
- A candidate with no judged pair (or no pointwise row) scores 0.5, the formula's neutral value.
- Unparsable candidates are never chosen; they may be rejected. A prompt needs at least 2
  parsable candidates.
- Each dropped prompt is counted once, under the first reason in `DROP_REASONS` order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from data.config import CurationConfig
from data.scoring import normalize_answer
from data.schema import CandidateScore, PreferencePair

Rows = pd.DataFrame | Sequence[dict[str, Any]]

PAIR_COLUMNS = ("prompt_id", "a_idx", "b_idx", "p_a", "p_b", "p_tie")
POINT_COLUMNS = ("prompt_id", "cand_idx", "p_good")
CANDIDATE_COLUMNS = ("prompt_id", "cand_idx", "text", "answer")
AGGREGATE_COLUMNS = (
    "prompt_id", "i", "j", "p_i_over_j", "p_j_over_i", "tie_mass", "inconsistency", "confidence"
)
PROMPT_FIELDS = ("question", "image", "gold")  # copied from the prompt's first candidate
DROP_REASONS = (
    "fewer_than_2_candidates", "unparsable", "no_correct_or_no_wrong", "chosen_unsupported",
    "chosen_not_factual", "no_margin", "chosen_wrong",
)
_EPS = 1e-9  # so that 0.7 - 0.5 (= 0.19999999999999996) passes delta = 0.2


def _frame(rows: Rows, required: Sequence[str], what: str) -> pd.DataFrame:
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in required if c not in df.columns]
    if missing and len(df):
        raise ValueError(f"{what} rows lack columns {missing} (have {list(df.columns)})")
    for c in missing:
        df[c] = pd.Series(dtype=float)
    return df


def _check_probs(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    for c in cols:
        bad = df[~df[c].between(0.0, 1.0)]  # NaN fails between() too
        if len(bad):
            v = bad[c].tolist()[0]
            raise ValueError(f"{what} row {bad.index[0]}: {c}={v!r} is not in [0, 1]")


def _no_repeats(df: pd.DataFrame, keys: list[str], what: str) -> None:
    dup = df[df.duplicated(keys)]
    if len(dup):
        r = dup.to_dict("records")[0]
        raise ValueError(f"{what} {tuple(r[k] for k in keys)} appears twice ({keys})")


def _missing(v: Any) -> bool:
    """None, NaN (pandas' None) or blank: no value."""
    if isinstance(v, str):
        return not v.strip()
    return v is None or (isinstance(v, float) and math.isnan(v))


def pair_probability(pA_ij: float, pB_ji: float, pTie_ij: float, pTie_ji: float) -> float:
    """p(i>j) = 1/2 [pA(i,j) + pB(j,i)] + 1/4 [pTie(i,j) + pTie(j,i)].

    pA(i,j): "A" with i shown as A; pB(j,i): "B" with j shown as A; both say "i wins".
    Example: (0.8, 0.6, 0.1, 0.2) -> 0.5 * 1.4 + 0.25 * 0.3 = 0.7 + 0.075 = 0.775.
    """
    return 0.5 * (pA_ij + pB_ji) + 0.25 * (pTie_ij + pTie_ji)


def aggregate_pairs(rows: Rows) -> pd.DataFrame:
    """Ordered-pair verdicts -> one row per unordered pair (i < j) per prompt.

    Columns `AGGREGATE_COLUMNS`: p_i_over_j and p_j_over_i by `pair_probability` (they sum to
    1 only when each verdict distribution does); tie_mass = mean pTie of the two orders;
    inconsistency = mean of |pA(i,j) - pB(j,i)| and |pA(j,i) - pB(i,j)| (equal when ties are
    equal); confidence = (1 - tie_mass) * (1 - inconsistency).
    Example: orders (A .9, B .1) and (A .9, B .1), no ties (the judge always says "A"):
    p_i_over_j = 0.5 * (0.9 + 0.1) = 0.5, inconsistency 0.8, confidence 0.2.

    Raises:
        ValueError: a pair judged in one order only, a repeated order, a self-pair, or a
            probability outside [0, 1] / a distribution summing above 1.
    """
    df = _frame(rows, PAIR_COLUMNS, "pair")
    if not len(df):
        return pd.DataFrame(columns=list(AGGREGATE_COLUMNS))
    df["a_idx"], df["b_idx"] = df["a_idx"].astype(int), df["b_idx"].astype(int)
    _check_probs(df, ("p_a", "p_b", "p_tie"), "pair")
    over = df[df["p_a"] + df["p_b"] + df["p_tie"] > 1.0 + 1e-6]
    if len(over):
        r = over.to_dict("records")[0]
        raise ValueError(f"pair row {over.index[0]}: p_a + p_b + p_tie > 1 for prompt "
                         f"{r['prompt_id']!r}, order ({r['a_idx']}, {r['b_idx']})")
    selfp = df[df["a_idx"] == df["b_idx"]]
    if len(selfp):
        k = selfp["a_idx"].tolist()[0]
        raise ValueError(f"pair row {selfp.index[0]}: candidate {k} judged against itself")
    _no_repeats(df, ["prompt_id", "a_idx", "b_idx"], "ordered pair")
    probs = ["p_a", "p_b", "p_tie"]
    fwd = df[df["a_idx"] < df["b_idx"]].rename(columns={"a_idx": "i", "b_idx": "j"})
    rev = df[df["a_idx"] > df["b_idx"]].rename(columns={"b_idx": "i", "a_idx": "j"})
    m = fwd[["prompt_id", "i", "j", *probs]].merge(
        rev[["prompt_id", "i", "j", *probs]], on=["prompt_id", "i", "j"], how="outer",
        suffixes=("_ij", "_ji"), indicator=True, sort=True,
    )
    lone = m[m["_merge"] != "both"]
    if len(lone):
        r = lone.to_dict("records")[0]
        i, j = int(r["i"]), int(r["j"])
        have = (i, j) if r["_merge"] == "left_only" else (j, i)
        raise ValueError(f"prompt {r['prompt_id']!r}: pair ({i}, {j}) judged in order {have} only; "
                         "both orders are required")
    tie = 0.5 * (m["p_tie_ij"] + m["p_tie_ji"])
    inc = 0.5 * ((m["p_a_ij"] - m["p_b_ji"]).abs() + (m["p_a_ji"] - m["p_b_ij"]).abs())
    out = pd.DataFrame({
        "prompt_id": m["prompt_id"], "i": m["i"].astype(int), "j": m["j"].astype(int),
        "p_i_over_j": pair_probability(m["p_a_ij"], m["p_b_ji"], m["p_tie_ij"], m["p_tie_ji"]),
        "p_j_over_i": pair_probability(m["p_a_ji"], m["p_b_ij"], m["p_tie_ji"], m["p_tie_ij"]),
        "tie_mass": tie, "inconsistency": inc, "confidence": (1.0 - tie) * (1.0 - inc),
    })
    return out.reset_index(drop=True)


def flip_rate(rows: Rows) -> float:
    """Mean position inconsistency over unordered pairs (`judge/flip_rate`); NaN if no pairs.

    Example: one pair with inconsistency 0.8 and one with 0.0 -> (0.8 + 0.0) / 2 = 0.4.
    """
    agg = aggregate_pairs(rows)
    return float(agg["inconsistency"].mean()) if len(agg) else float("nan")


def _scores(pairs: pd.DataFrame, idxs: Sequence[int], weighting: str) -> dict[int, float]:
    """s_i = sum_j c_ij p(i>j) / sum_j c_ij over the judged pairs of i; 0.5 when that sum is 0."""
    if weighting not in ("confidence", "uniform"):
        raise ValueError(f"weighting must be 'confidence' or 'uniform', got {weighting!r}")
    num, den = dict.fromkeys(idxs, 0.0), dict.fromkeys(idxs, 0.0)
    for r in pairs.itertuples(index=False):
        if r.i not in num or r.j not in num:
            raise ValueError(f"pair ({r.i}, {r.j}) names a candidate outside {sorted(num)}")
        c = 1.0 if weighting == "uniform" else float(r.confidence)
        for k, p in ((r.i, r.p_i_over_j), (r.j, r.p_j_over_i)):
            num[k], den[k] = num[k] + c * p, den[k] + c
    return {k: (num[k] / den[k] if den[k] > 0 else 0.5) for k in idxs}


def candidate_scores(pairs_for_prompt: Rows, n: int, weighting: str = "confidence") -> list[float]:
    """Scores of candidates 0..n-1 of one prompt from its `aggregate_pairs` rows.

    Example: p(0>1) = 0.9, p(0>2) = 1.0, p(1>2) = 0.7, all confidences 1 ->
    s0 = (0.9 + 1.0) / 2 = 0.95, s1 = (0.1 + 0.7) / 2 = 0.4, s2 = (0.0 + 0.3) / 2 = 0.15.
    With weighting="uniform" every c_ij = 1: the plain mean of p(i>j).
    """
    pairs = _frame(pairs_for_prompt, AGGREGATE_COLUMNS[1:], "aggregated pair")
    s = _scores(pairs, range(n), weighting)
    return [s[k] for k in range(n)]


def pointwise_scores(rows: Rows) -> pd.DataFrame:
    """Pointwise verdicts `prompt_id, cand_idx, p_good` -> `prompt_id, cand_idx, score`."""
    df = _frame(rows, POINT_COLUMNS, "pointwise")
    _check_probs(df, ("p_good",), "pointwise")
    _no_repeats(df, ["prompt_id", "cand_idx"], "pointwise verdict")
    out = df[["prompt_id", "cand_idx"]].copy()
    out["cand_idx"] = out["cand_idx"].astype(int)
    out["score"] = df["p_good"].astype(float)
    return out.reset_index(drop=True)


@dataclass
class CurationResult:
    """Curated pairs, drop counts by reason (all `DROP_REASONS` keys), per-candidate scores, and
    with a require_*_chosen = "prefer" the prompts kept though no candidate had the mark."""

    pairs: list[PreferencePair]
    dropped: dict[str, int]
    scores: list[CandidateScore]  # score (answer_only: 1.0 correct / 0.0)
    n_prompts: int
    kept: int
    kept_frac: float
    fell_back: Counter = field(default_factory=Counter)

    def metrics(self) -> dict[str, float]:
        """Slash-grouped numbers for the tracker: `curate/kept_frac`, `curate/dropped/<reason>`."""
        w = [p["weight"] for p in self.pairs]
        out = {"curate/n_prompts": float(self.n_prompts), "curate/kept": float(self.kept),
               "curate/kept_frac": self.kept_frac,
               "curate/mean_weight": sum(w) / len(w) if w else float("nan")}
        out.update({f"curate/dropped/{k}": float(v) for k, v in self.dropped.items()})
        out.update({f"curate/fell_back/{k}": float(v) for k, v in self.fell_back.items()})
        return out


def _judge_scores(pair_rows: Rows | None, point_rows: Rows | None, cands: pd.DataFrame,
                  weighting: str) -> dict[tuple[Any, int], float]:
    """(prompt_id, cand_idx) -> score for every candidate; judge rows must name known candidates."""
    if (pair_rows is None) == (point_rows is None):
        raise ValueError("give exactly one of pair_rows (pairwise) and point_rows (pointwise)")
    known = {pid: g["cand_idx"].tolist() for pid, g in cands.groupby("prompt_id", sort=False)}
    out: dict[tuple[Any, int], float] = {}
    if point_rows is not None:
        ps = pointwise_scores(point_rows)
        given = {(r.prompt_id, r.cand_idx): r.score for r in ps.itertuples()}
        for pid, idx in given:
            if idx not in known.get(pid, ()):
                raise ValueError(f"pointwise row names candidate {idx} of prompt {pid!r}, not in candidates")
        return {(pid, k): given.get((pid, k), 0.5) for pid, ks in known.items() for k in ks}
    agg = aggregate_pairs(pair_rows)
    unknown = set(agg["prompt_id"]) - set(known)
    if unknown:
        shown = sorted(map(str, unknown))[:5]
        raise ValueError(f"pair rows name prompts {shown} absent from candidates")
    by_prompt = dict(tuple(agg.groupby("prompt_id", sort=False)))
    for pid, ks in known.items():
        pairs = by_prompt.get(pid, agg.iloc[:0])
        try:
            s = _scores(pairs, ks, weighting)
        except ValueError as e:
            raise ValueError(f"prompt {pid!r}: {e}") from None
        out.update({(pid, k): v for k, v in s.items()})
    return out


def balance_weights(pairs: list[PreferencePair], answers: Sequence[str], clip: float = 4.0) -> None:
    """Scale each pair's weight (in place) so that every chosen answer carries the same total
    weight: x n_pairs / (n_answers x pairs with this answer), clipped to [1/clip, clip]. Without
    it, a rule that keeps only factual chosen candidates keeps mostly the easy answers (on the
    built-in world 'There are no ... Answer: 0.'), and DPO collapses count questions onto them.
    Example: answers [0, 0, 0, 1] -> factors 4/(2x3) = 0.667 for each 0 and 4/(2x1) = 2 for the 1."""
    count = Counter(answers)
    for p, a in zip(pairs, answers):
        p["weight"] *= min(clip, max(1 / clip, len(pairs) / (len(count) * count[a])))


def _logprobs(recs: list[dict[str, Any]]) -> dict[int, float]:
    """cand_idx -> mean_logprob (0.0 for all without the column; -inf where it is missing)."""
    lp = {r["cand_idx"]: r.get("mean_logprob", 0.0) for r in recs}
    return {k: -math.inf if _missing(v) else float(v) for k, v in lp.items()}


Pick = tuple[int, int, float] | str  # (chosen, rejected, weight), or why the prompt is dropped


def _prompt_marks(recs: list[dict[str, Any]]) -> tuple[str | None, dict, dict, dict]:
    """A prompt's normalised gold answer, and per cand_idx its normalised answer (None:
    unparsable), the reader's `supported` and the claims judge's `factual` (None: not given)."""
    gold = recs[0].get("gold")
    gold = None if _missing(gold) else normalize_answer(str(gold))
    ans = {r["cand_idx"]: None if _missing(r["answer"]) else normalize_answer(str(r["answer"])) for r in recs}
    ans = {k: a or None for k, a in ans.items()}  # normalises to '' -> unparsable
    sup = {r["cand_idx"]: None if _missing(r.get("supported")) else bool(r["supported"]) for r in recs}
    fact = {r["cand_idx"]: None if _missing(r.get("factual")) else bool(r["factual"]) for r in recs}
    return gold, ans, sup, fact


def _pick_answer_only(ans: dict[int, str | None], parsable: list[int], gold: str | None,
                      recs: list[dict[str, Any]]) -> Pick:
    """The answer_only ablation: a correct and a wrong candidate, each the most likely (the
    most likely wrong answer is the negative the policy actually produces), weight 1."""
    lp = _logprobs(recs)
    right = [k for k in parsable if gold is not None and ans[k] == gold]
    wrong = [k for k in parsable if gold is not None and ans[k] != gold]
    if not right or not wrong:
        return "no_correct_or_no_wrong"
    return min(right, key=lambda k: (-lp[k], k)), min(wrong, key=lambda k: (-lp[k], k)), 1.0


def _pick_judged(ans: dict[int, str | None], parsable: list[int], s: dict[int, float],
                 sup: dict[int, bool | None], fact: dict[int, bool | None], gold: str | None,
                 recs: list[dict[str, Any]], cfg: CurationConfig, fell_back: list[str]) -> Pick:
    """The judge's pick (see `curate`): the best eligible candidate, and the rejected by
    cfg.rejected among those at least cfg.delta below it. A requirement set to "prefer" that
    no candidate meets is appended to `fell_back` instead of dropping the prompt."""
    eligible = parsable
    for need, marks, reason in ((cfg.require_supported_chosen, sup, "chosen_unsupported"),
                                (cfg.require_factual_chosen, fact, "chosen_not_factual")):
        marked = [k for k in eligible if marks.get(k) is not False]
        if need and not marked:
            if need != "prefer":
                return reason
            fell_back.append(reason)  # none has the mark: the prompt stays, chosen from the rest
        elif need:
            eligible = marked
    chosen = min(eligible, key=lambda k: (-s[k], k))
    rejected = min((k for k in ans if k != chosen), key=lambda k: (s[k], k))
    below = [k for k in ans if k != chosen and s[chosen] - s[k] + _EPS >= cfg.delta]
    if cfg.rejected == "likeliest" and below:
        lp = _logprobs(recs)  # an unsupported one first (its rationale does not imply its answer)
        rejected = min(below, key=lambda k: (sup.get(k) is not False, -lp[k], k))
    elif cfg.rejected == "nearest" and below:  # the least different one that is still worse
        rejected = min(below, key=lambda k: (-s[k], k))
    margin = s[chosen] - s[rejected]
    if margin + _EPS < cfg.delta:
        return "no_margin"
    if cfg.require_correct_chosen and gold is not None and ans[chosen] != gold:
        return "chosen_wrong"
    return chosen, rejected, 1.0 if cfg.weighting == "uniform" else margin


def curate(candidates: Rows, pair_rows: Rows | None, cfg: CurationConfig, *,
           point_rows: Rows | None = None,
           prompt_fields: Sequence[str] = PROMPT_FIELDS) -> CurationResult:
    """Pick one (chosen, rejected) pair per prompt, or count why the prompt is dropped; the
    rules step by step are docs/method.md section 5.

    Chosen = argmax s over the eligible parsable candidates: with cfg.require_supported_chosen
    those whose `supported` is not false (a right answer the rationale does not imply stays out
    of the chosen side, whatever the judge's score), with cfg.require_factual_chosen those not
    marked unfactual; a prompt with none is dropped (chosen_unsupported, chosen_not_factual),
    or with "prefer" kept and chosen from the rest (counted in `fell_back`). Rejected by
    cfg.rejected: the lowest s (the paper's), or of those >= cfg.delta below the chosen the
    likeliest (unsupported first) or the nearest. Kept when s_chosen - s_rejected >= cfg.delta
    and, with cfg.require_correct_chosen and a gold answer, the chosen answer equals it.
    weight = s_chosen - s_rejected ("confidence") or 1.0 ("uniform"). Example: s = [0.95, 0.4,
    0.15], delta 0.2 -> chosen 0, rejected 2, weight 0.8. cfg.preference == "answer_only"
    ignores the judge: chosen = a correct candidate, rejected = a parsable wrong one (each the
    highest `mean_logprob`, else the lowest cand_idx), weight 1.0. Scores come from `pair_rows`
    (pairwise) or `point_rows` (pointwise), exactly one unless answer_only. Pair dicts:
    prompt_id, chosen_idx, rejected_idx, chosen, rejected, s_chosen, s_rejected, weight, and
    the present `prompt_fields`.
    """
    cands = _frame(candidates, CANDIDATE_COLUMNS, "candidate")
    cands["cand_idx"] = cands["cand_idx"].astype(int)
    _no_repeats(cands, ["prompt_id", "cand_idx"], "candidate")
    no_pid = cands.index[cands["prompt_id"].isna()]
    if len(no_pid):
        raise ValueError(f"candidate row {no_pid[0]} has no prompt_id")
    answer_only = cfg.preference == "answer_only"
    judged = {} if answer_only else _judge_scores(pair_rows, point_rows, cands, cfg.weighting)
    fields = [f for f in prompt_fields if f in cands.columns and f != "prompt_id"]
    dropped = dict.fromkeys(DROP_REASONS, 0)
    fell_back: Counter = Counter()
    pairs: list[PreferencePair] = []
    chosen_answers: list[str] = []
    scores: list[CandidateScore] = []
    n_prompts = 0
    for _, g in cands.groupby("prompt_id", sort=False):
        n_prompts += 1
        recs = g.sort_values("cand_idx").to_dict("records")  # native Python values: JSON-ready
        pid = recs[0]["prompt_id"]
        gold, ans, sup, fact = _prompt_marks(recs)
        if answer_only:
            s = {k: float(gold is not None and a == gold) for k, a in ans.items()}
        else:
            s = {k: float(judged[(pid, k)]) for k in ans}
        scores += [{"prompt_id": pid, "cand_idx": k, "score": v} for k, v in s.items()]
        parsable = [k for k, a in ans.items() if a is not None]
        if len(recs) < 2:
            dropped["fewer_than_2_candidates"] += 1
            continue
        if len(parsable) < 2:
            dropped["unparsable"] += 1
            continue
        missed: list[str] = []
        picked = (_pick_answer_only(ans, parsable, gold, recs) if answer_only
                  else _pick_judged(ans, parsable, s, sup, fact, gold, recs, cfg, missed))
        if isinstance(picked, str):  # a drop reason
            dropped[picked] += 1
            continue
        fell_back.update(missed)
        chosen, rejected, weight = picked
        text = {r["cand_idx"]: r["text"] for r in recs}
        chosen_answers.append(ans[chosen])
        pairs.append({
            "prompt_id": pid, "chosen_idx": chosen, "rejected_idx": rejected,
            "chosen": text[chosen], "rejected": text[rejected],
            "s_chosen": s[chosen], "s_rejected": s[rejected], "weight": weight,
            **{f: recs[0][f] for f in fields},
        })
    if cfg.balance_answers and pairs:
        balance_weights(pairs, chosen_answers)
    kept = len(pairs)
    assert kept + sum(dropped.values()) == n_prompts
    return CurationResult(pairs=pairs, dropped=dropped, scores=scores, n_prompts=n_prompts,
                          kept=kept, kept_frac=kept / n_prompts if n_prompts else 0.0, fell_back=fell_back)
