"""The records that cross stages, one TypedDict per kind, and the file each is stored in.

A stage writes its records with `write_records(rows, path, kind)` (data/records.py), which
refuses a row whose columns are not the kind's: a column added or dropped in one stage cannot
silently reach the next. Keys under `NotRequired` appear only in some worlds or modes.

    world -> Example -> search -> Candidate -> score -> PairScore | PointScore, ReaderMark, CandidateMark
          -> curate -> PreferencePair, CandidateScore -> dpo;  evaluate -> EvalRow
"""

# no `from __future__ import annotations`: TypedDict must see NotRequired itself
from typing import NotRequired, TypedDict


class Example(TypedDict):
    """One question of a world split (`<split>.parquet`: rationale, pool, eval, scorer)."""

    id: str
    split: str
    family: str
    question: str  # with a multiple-choice row's options appended
    answer: str
    rationale: str | None
    response: str | None  # `rationale ... Answer: x`, the rationale SFT target
    short_response: str  # `Answer: x`
    reference: str | None  # the judge's reference rationale
    facts: str | None  # the scene's facts (JSON), the exact scorer's input; None on your data
    image: bytes  # PNG/JPEG
    choices: NotRequired[list[str] | None]  # data.world=files|hf


class Candidate(TypedDict):
    """One searched response (`candidates.parquet`), with its question's fields."""

    prompt_id: str
    cand_idx: int  # 0 = the highest mean log-prob
    text: str
    rationale: str | None
    answer: str | None  # None: no parsable `Answer:`
    sum_logprob: float
    mean_logprob: float
    n_tokens: int
    answer_confidence: float | None
    gold: str
    question: str
    reference: str | None
    facts: str | None
    family: str | None
    choices: NotRequired[list[str] | None]  # a multiple-choice question's options (data.world=files|hf)


class Greedy(TypedDict):
    """The policy's greedy response to a search prompt (`greedy.parquet`), for the headroom."""

    prompt_id: str
    text: str


class PairScore(TypedDict):
    """The judge's verdict on candidates a_idx (slot A) and b_idx (slot B) of one prompt
    (`pairwise_scores.parquet`); both orders are rows of their own."""

    prompt_id: str
    a_idx: int
    b_idx: int
    p_a: float
    p_b: float
    p_tie: float


class PointScore(TypedDict):
    """The pointwise judge's probability that a candidate is good (`pointwise_scores.parquet`)."""

    prompt_id: str
    cand_idx: int
    p_good: float


class ReaderMark(TypedDict):
    """The reader's answer from a candidate's rationale alone (`reader.parquet`)."""

    prompt_id: str
    cand_idx: int
    read: str | None
    confidence: float | None
    supported: bool | None  # read == the candidate's answer, confidently; None: not read


class CandidateMark(TypedDict):
    """The claims judge's marks of a candidate (`marks.parquet`, scorer.mode=claims): the
    probability that it is correct, consistent (its rationale implies its answer) and factual
    (every claim holds for the reference), and how many claims it states."""

    prompt_id: str
    cand_idx: int
    correct: float
    consistent: float
    factual: float
    n_claims: int


class PreferencePair(TypedDict):
    """One curated DPO pair (`preference_pairs.parquet`)."""

    prompt_id: str
    chosen_idx: int
    rejected_idx: int
    chosen: str
    rejected: str
    s_chosen: float
    s_rejected: float
    weight: float  # s_chosen - s_rejected, or 1.0 (curation.weighting=uniform)
    decided_by: NotRequired[str | None]  # scorer.mode=claims: correct, consistent, factual or None
    question: str
    gold: str | None


class CandidateScore(TypedDict):
    """A candidate's aggregated judge score s (`candidate_scores.parquet`)."""

    prompt_id: str
    cand_idx: int
    score: float


class EvalRow(TypedDict):
    """One held-out response and its scores (`scores.parquet`, `samples.parquet`)."""

    id: str
    family: str
    question: str
    gold: str | None
    response: str
    answer: str | None
    accuracy: float
    format_rate: float
    consistency: float | None  # None: short answers, or no scene facts and no judge
    factuality: float | None
    length: float


class RejectedRow(TypedDict):
    """A row of your data left out, and why (`rejected_rows.parquet`)."""

    split: str
    file: str
    row: int | None
    id: str | None
    field: str
    reason: str


# the file name each stage stores a kind under
# Every file a stage writes, named once: stages, the tracker, the report and the tests use these.
RATIONALE_FILE = "rationale.parquet"
POOL_FILE = "pool.parquet"
EVAL_FILE = "eval.parquet"
SCORER_FILE = "scorer.parquet"
REJECTED_FILE = "rejected_rows.parquet"
CANDIDATES_FILE = "candidates.parquet"
GREEDY_FILE = "greedy.parquet"
PAIR_SCORES_FILE = "pairwise_scores.parquet"
POINT_SCORES_FILE = "pointwise_scores.parquet"
READER_FILE = "reader.parquet"
MARKS_FILE = "marks.parquet"
PAIRS_FILE = "preference_pairs.parquet"
CANDIDATE_SCORES_FILE = "candidate_scores.parquet"
EVAL_ROWS_FILE = "scores.parquet"
SAMPLES_FILE = "samples.parquet"
METRICS_FILE = "metrics.json"
TEACHER_CLAIMS_FILE = "teacher_claims.parquet"
TEACHER_READS_FILE = "teacher_reads.parquet"
TEACHER_RATIONALES_FILE = "teacher_rationales.parquet"
TEACHER_DROPPED_FILE = "teacher_dropped.parquet"
SPLIT_FILES = {"rationale": RATIONALE_FILE, "pool": POOL_FILE, "eval": EVAL_FILE, "scorer": SCORER_FILE}
# the record kind of each parquet file (write_records checks rows against it; the tests, files)
FILES: dict[str, type] = {
    RATIONALE_FILE: Example, POOL_FILE: Example, EVAL_FILE: Example, SCORER_FILE: Example, REJECTED_FILE: RejectedRow,
    CANDIDATES_FILE: Candidate, GREEDY_FILE: Greedy, PAIR_SCORES_FILE: PairScore, POINT_SCORES_FILE: PointScore,
    READER_FILE: ReaderMark, MARKS_FILE: CandidateMark, PAIRS_FILE: PreferencePair,
    CANDIDATE_SCORES_FILE: CandidateScore, EVAL_ROWS_FILE: EvalRow, SAMPLES_FILE: EvalRow,
}


def column_problem(columns: set[str] | list[str], kind: type) -> str | None:
    """None when `columns` are a record of `kind` (every required key, no unknown one); else
    what is missing or extra."""
    cols = set(columns)
    required, known = set(kind.__required_keys__), set(kind.__annotations__)
    missing, extra = sorted(required - cols), sorted(cols - known)
    if not missing and not extra:
        return None
    return "; ".join(part for part in (f"missing {missing}" if missing else "",
                                       f"not in the record kind {extra}" if extra else "") if part)
