"""Parsing responses and scoring them exactly against a shapes scene.

`parse_response` is the project's one answer parser (docs/method.md section 1: it fails closed, no
`Answer:` means unparsable). `score_shapes` reads the rationale back with the world's
grammar (data/shapes.py) and decides, from the scene facts alone:
- correct:     the parsed answer equals the gold answer;
- consistent:  the answer follows from what the rationale states (true or not);
- factual:     the rationale states at least one thing and everything it states holds;
- parsable:    the response has `Answer: <something>`.
A sentence the grammar does not know counts as an unverifiable statement (not factual).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from data.shapes import COLORS, SHAPES

_ANSWER = re.compile(r"answer\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_SENT_SPLIT = re.compile(r"(?<=[.?!])\s+|\n+")


@dataclass(frozen=True)
class Parsed:
    rationale: str
    answer: str | None  # normalised; None = unparsable

    @property
    def ok(self) -> bool:
        return self.answer is not None


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, articles and surrounding blanks: '  The Red. ' -> 'red'."""
    t = text.strip().lower()
    t = re.sub(r"[\"'`.,!?;:()\[\]]", " ", t)
    t = re.sub(r"\b(a|an|the)\b", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def parse_response(text: str, choices: Sequence[str] | None = None) -> Parsed:
    """Split `<rationale> Answer: <answer>.` at the last `Answer:`; never guesses.

    With `choices` (a multiple-choice question) an answer naming an option, by its letter or
    by its text, becomes that option's normalised text (`match_choice`); anything else stays as
    written (and is wrong against an option).
    """
    matches = list(re.finditer(r"answer\s*:", text, re.IGNORECASE))
    if not matches:
        return Parsed(rationale=text.strip(), answer=None)
    last = matches[-1]
    rationale = text[: last.start()].strip()
    raw = text[last.end():].split("\n")[0]
    answer = (match_choice(raw, choices) if choices else None) or normalize_answer(raw)
    return Parsed(rationale=rationale, answer=answer or None)


# "B", "(B)", "B.", "B)", "option B", "(B) blue": a letter, optionally followed by the option text
_LETTER = re.compile(r"^\s*(?:option\s+)?\(?([a-z])\)?(?:[.):]|\s|$)\s*(.*?)\s*[.!]?\s*$", re.IGNORECASE)


def choice_index(raw: str, choices: Sequence[str]) -> int | None:
    """Which option `raw` names, by its text or its letter; None when it names none.

    Examples with choices ["red", "blue", "a bird"]: "blue" / "Blue." / "B" / "(b)" / "B. blue"
    -> 1; "A" -> 0; "bird" -> 2 (articles go); "green" / "D" / "B. red" (the letter and the text
    disagree) -> None. The text is tried first, so an option that is itself one letter still
    matches as text.
    """
    options = [normalize_answer(str(c)) for c in choices]
    text = normalize_answer(raw)
    if text and text in options:
        return options.index(text)
    m = _LETTER.match(raw)
    if m:
        k = ord(m.group(1).lower()) - ord("a")
        rest = normalize_answer(m.group(2))
        if k < len(options) and (not rest or rest == options[k]):
            return k
    return None


def match_choice(raw: str, choices: Sequence[str]) -> str | None:
    """The normalised text of the option `raw` names (`choice_index`), else None."""
    k = choice_index(raw, choices)
    return None if k is None else normalize_answer(str(choices[k]))


def gold_answer(gold: str, choices: Sequence[str] | None = None) -> str:
    """The normalised gold answer; with choices, a gold given as a letter becomes its option."""
    return (match_choice(str(gold), choices) if choices else None) or normalize_answer(str(gold))


def answer_letter(k: int) -> str:
    return chr(ord("A") + k)


def format_choices(question: str, choices: Sequence[str]) -> str:
    """The question as a multiple-choice prompt: `<question>\nOptions: (A) red (B) blue`."""
    return f"{question.strip()}\nOptions: " + " ".join(f"({answer_letter(k)}) {c}" for k, c in enumerate(choices))


def split_sentences(text: str) -> list[str]:
    """Sentences end at `.`, `?`, `!` or a newline (the search's boundary, docs/method.md section 2)."""
    return [s.strip() for s in _SENT_SPLIT.split(text) if s.strip()]


# --- the rationale grammar of the shapes world ---------------------------------------
_C = "|".join(COLORS)
_S = "|".join(SHAPES)
_POS = r"(top|middle|bottom|row \d+) (left|center|right|column \d+)"
_RULES = [
    ("mention", re.compile(rf"^there is an? ({_C}) ({_S}) at the {_POS}\.?$")),
    ("none_color", re.compile(rf"^there are no ({_C}) objects\.?$")),
    ("none_shape", re.compile(rf"^there are no ({_S})s\.?$")),
    ("none_pair", re.compile(rf"^there is no ({_C}) ({_S})\.?$")),
    ("count_color", re.compile(rf"^that makes (\d+) ({_C}) objects\.?$")),
    ("count_shape", re.compile(rf"^that makes (\d+) ({_S})s\.?$")),
    ("relation", re.compile(rf"^the ({_C}) ({_S}) is (left|right) of the ({_C}) ({_S})\.?$")),
]


def parse_claims(rationale: str, grid: int = 3) -> list[tuple]:
    """Each sentence as a claim tuple `(kind, *fields)`; unknown sentences -> ('unknown', s).

    A mention becomes `('mention', color, shape, row, col)` with 0-based grid indices.
    """
    claims = []
    for sent in split_sentences(rationale):
        s = sent.lower()
        for kind, rx in _RULES:
            m = rx.match(s)
            if m:
                fields = m.groups()
                if kind == "mention":
                    row = _index(fields[2], grid, ["top", "middle", "bottom"])
                    col = _index(fields[3], grid, ["left", "center", "right"])
                    if row is None or col is None or not (0 <= row < grid and 0 <= col < grid):
                        claims.append(("unknown", sent))
                        break
                    fields = (fields[0], fields[1], row, col)
                claims.append((kind, *fields))
                break
        else:
            claims.append(("unknown", sent))
    return claims


def _index(pos_word: str, grid: int, names: list[str]) -> int | None:
    if pos_word in names and grid == 3:
        return names.index(pos_word)
    m = re.match(r"(?:row|column) (\d+)$", pos_word)
    return int(m.group(1)) - 1 if m else None


def _mentioned(claims: list[tuple]) -> set[tuple]:
    return {c[1:] for c in claims if c[0] == "mention"}


def _claim_holds(c: tuple, objs: set[tuple]) -> bool:
    kind = c[0]
    pairs = {(o[0], o[1]) for o in objs}
    if kind == "mention":
        return c[1:] in objs
    if kind == "none_color":
        return all(o[0] != c[1] for o in objs)
    if kind == "none_shape":
        return all(o[1] != c[1] for o in objs)
    if kind == "none_pair":
        return (c[1], c[2]) not in pairs
    if kind == "count_color":
        return int(c[1]) == sum(o[0] == c[2] for o in objs)
    if kind == "count_shape":
        return int(c[1]) == sum(o[1] == c[2] for o in objs)
    if kind == "relation":
        a = [o for o in objs if (o[0], o[1]) == (c[1], c[2])]
        b = [o for o in objs if (o[0], o[1]) == (c[4], c[5])]
        if len(a) != 1 or len(b) != 1:
            return False
        return (a[0][3] < b[0][3]) if c[3] == "left" else (a[0][3] > b[0][3])
    return False


def _implied_answer(claims: list[tuple], query: dict) -> str | None:
    """What the stated evidence implies for the question; None = insufficient/contradictory."""
    ment = _mentioned(claims)
    f = query["family"]
    if f in ("count_color", "count_shape"):
        i, key = (0, "color") if f == "count_color" else (1, "shape")
        n = sum(1 for m in ment if m[i] == query[key])
        counts = {int(c[1]) for c in claims if c[0] == f and c[2] == query[key]}
        says_none = any(c[0] == f"none_{key}" and c[1] == query[key] for c in claims)
        if counts:
            return str(n) if counts == {n} and not (says_none and n) else None
        if n:
            return None if says_none else str(n)
        return "0" if says_none else None
    if f == "color_of":
        colors = {m[0] for m in ment if m[1] == query["shape"]}
        return colors.pop() if len(colors) == 1 else None
    if f == "exists":
        has = any((m[0], m[1]) == (query["color"], query["shape"]) for m in ment)
        denies = any(c[0] == "none_pair" and (c[1], c[2]) == (query["color"], query["shape"])
                     for c in claims)
        if has == denies:
            return None
        return "yes" if has else "no"
    (c1, s1), (c2, s2) = query["a"], query["b"]
    stated = {c[3] for c in claims if c[0] == "relation" and (c[1], c[2], c[4], c[5]) == (c1, s1, c2, s2)}
    stated |= {"right" if c[3] == "left" else "left" for c in claims
               if c[0] == "relation" and (c[1], c[2], c[4], c[5]) == (c2, s2, c1, s1)}
    a_cols = {m[3] for m in ment if (m[0], m[1]) == (c1, s1)}
    b_cols = {m[3] for m in ment if (m[0], m[1]) == (c2, s2)}
    if len(a_cols) == 1 and len(b_cols) == 1 and a_cols != b_cols:
        (ac,), (bc,) = a_cols, b_cols
        stated.add("left" if ac < bc else "right")
    if len(stated) != 1:
        return None
    return "yes" if stated.pop() == "left" else "no"


def claim_holds(sentence: str, facts: str | dict) -> bool:
    """Whether one sentence holds for the scene: a claim of the grammar that is true there.
    A sentence the grammar does not know is unverifiable, so False (as in `score_shapes`)."""
    grid, objs = scene_objects(facts)
    claims = parse_claims(sentence, grid)
    return bool(claims) and all(_claim_holds(c, objs) for c in claims)


def implied_answer(rationale: str, facts: str | dict) -> str | None:
    """The answer a rationale's own statements imply for the scene's question (true or not);
    None when they imply none (missing or contradictory evidence). Only `facts["query"]` and
    `facts["grid"]` are read: the scene's objects play no part."""
    f = json.loads(facts) if isinstance(facts, str) else facts
    return _implied_answer(parse_claims(rationale, f["grid"]), f["query"])


@dataclass(frozen=True)
class ExactScore:
    parsable: bool
    correct: bool
    consistent: bool
    factual: bool
    n_claims: int

    @property
    def quality(self) -> float:
        """The oracle's preference: correct, then consistent, then factual (lexicographic)."""
        return 4.0 * self.correct + 2.0 * self.consistent + 1.0 * self.factual


def scene_objects(facts: str | dict) -> tuple[int, set[tuple]]:
    """(grid, {(color, shape, row, col)}) of a shapes scene's facts (JSON or dict)."""
    f = json.loads(facts) if isinstance(facts, str) else facts
    return f["grid"], {(o["color"], o["shape"], o["row"], o["col"]) for o in f["objects"]}


def score_shapes(response: str, facts: str | dict, gold: str) -> ExactScore:
    """Score one response exactly against the scene facts (JSON from data.shapes)."""
    f = json.loads(facts) if isinstance(facts, str) else facts
    grid, objs = scene_objects(f)
    parsed = parse_response(response)
    claims = parse_claims(parsed.rationale, grid)
    factual = bool(claims) and all(_claim_holds(c, objs) for c in claims)
    if not parsed.ok:
        return ExactScore(False, False, False, factual, len(claims))
    implied = _implied_answer(claims, f["query"])
    correct = parsed.answer == normalize_answer(gold)
    consistent = implied is not None and implied == parsed.answer
    return ExactScore(True, correct, consistent, factual, len(claims))
