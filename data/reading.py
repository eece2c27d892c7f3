"""Training records for the reader (models/reader.py): question + rationale -> implied answer.

The reader must learn what a rationale implies, including when it implies nothing, so next to
each gold rationale (which implies the gold answer) it sees edited copies: a relation flipped,
a count changed, a mention of the queried object added or moved, a denial ("There is no red
circle.") added next to a mention of it, a sentence dropped, a closing sentence about another
object than the one asked about. Each copy's label is what its
statements imply by the world's grammar (`data.scoring.implied_answer`), or `UNCLEAR`. The
edits mirror how the built-in policy's rationales go wrong: on its own candidates the most
common inconsistency is a rationale that mentions an object and then denies it, or states
positions that contradict its relation sentence; on a seed-1 policy's, a relation or count
sentence about an object the question does not ask about ("The blue square is right of the red
triangle." for "Is the blue square left of the green triangle?"), which the reader had read as
an answer (`retarget`).

Deterministic in (record id, seed). Records come from the world's `scorer` split, never from
the pool or eval splits.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from data.scoring import implied_answer, split_sentences
from data.shapes import COLORS, SHAPES, Obj, mention, plural

UNCLEAR = "unclear"  # the reader's word for "the rationale implies no answer"
EDITS = ("flip_relation", "change_count", "add_query_mention", "add_denial", "move_mention",
         "recolor_mention", "duplicate_mention", "drop_sentence", "mentions_then_conclusion",
         "retarget")
_RELATION = re.compile(r"^The \w+ \w+ is (left|right) of the \w+ \w+\.$")
_COUNT = re.compile(r"^That makes (\d+) (.*)\.$")
_MENTION = re.compile(r"^There is an? (\w+) (\w+) at the .*\.$")
# a colour or shape word (plural shapes too) -> the others of its kind, for `retarget`
_SWAPS = {w: [x for x in ws if x != w] for ws in (tuple(COLORS), SHAPES, tuple(map(plural, SHAPES)))
          for w in ws}


def _random_obj(rng: random.Random, grid: int, color: str | None = None, shape: str | None = None) -> Obj:
    return Obj(color or rng.choice(list(COLORS)), shape or rng.choice(SHAPES),
               rng.randrange(grid), rng.randrange(grid))


def _queried(q: dict) -> list[tuple[str | None, str | None]]:
    """(color, shape) of what the question is about; None = any."""
    f = q["family"]
    if f == "left_right":
        return [tuple(q["a"]), tuple(q["b"])]
    if f == "exists":
        return [(q["color"], q["shape"])]
    if f == "count_color":
        return [(q["color"], None)]
    return [(None, q["shape"])]  # count_shape, color_of


def _denial(q: dict, color: str, shape: str) -> str:
    if q["family"] == "count_color":
        return f"There are no {color} objects."
    if q["family"] == "count_shape":
        return f"There are no {plural(shape)}."
    return f"There is no {color} {shape}."


def edit(sents: Sequence[str], q: dict, grid: int, kind: str, rng: random.Random) -> list[str]:
    """One edit of kind `kind` (an `EDITS` name) of a rationale's sentences; may change nothing
    when the rationale has no sentence of the kind the edit needs."""
    s = list(sents)
    if kind == "flip_relation":
        for i, t in enumerate(s):
            m = _RELATION.match(t)
            if m:
                s[i] = t.replace(f" {m.group(1)} of", " right of" if m.group(1) == "left" else " left of")
    elif kind == "change_count":
        for i, t in enumerate(s):
            m = _COUNT.match(t)
            if m:
                s[i] = f"That makes {rng.choice([n for n in range(5) if n != int(m.group(1))])} {m.group(2)}."
    elif kind == "add_query_mention":
        color, shape = rng.choice(_queried(q))
        s.insert(rng.randrange(len(s) + 1), mention(_random_obj(rng, grid, color, shape), grid))
    elif kind == "add_denial":
        color, shape = rng.choice(_queried(q))
        t = _denial(q, color or rng.choice(list(COLORS)), shape or rng.choice(SHAPES))
        s.insert(len(s) if rng.random() < 0.6 else rng.randrange(len(s) + 1), t)
    elif kind in ("move_mention", "recolor_mention", "duplicate_mention"):
        found = [(i, m) for i, m in ((i, _MENTION.match(t)) for i, t in enumerate(s)) if m]
        if found:
            i, m = rng.choice(found)
            color = None if kind == "recolor_mention" else m.group(1)
            t = mention(_random_obj(rng, grid, color, m.group(2)), grid)
            if kind == "duplicate_mention":
                s.insert(i + 1, t)
            else:
                s[i] = t
    elif kind == "drop_sentence" and len(s) > 1:
        del s[rng.randrange(len(s))]
    elif kind == "mentions_then_conclusion":
        # the policy's own failure: some mentions (of the queried objects or not), then a
        # conclusion that need not follow from them; the reader must count, not copy it
        s = [mention(_random_obj(rng, grid, *(rng.choice(_queried(q)) if rng.random() < 0.6 else (None, None))), grid)
             for _ in range(rng.randint(1, 4))]
        s.append(_conclusion(q, grid, rng))
    elif kind == "retarget":
        # the last closing sentence (a relation, a count, a denial) about another object: one
        # colour or shape word in it swapped for another of its kind
        for i in reversed(range(len(s))):
            if _RELATION.match(s[i]) or _COUNT.match(s[i]) or s[i].startswith(("There is no ", "There are no ")):
                words = s[i].rstrip(".").split(" ")
                at = [k for k, w in enumerate(words) if w in _SWAPS]
                if at:
                    k = rng.choice(at)
                    words[k] = rng.choice(_SWAPS[words[k]])
                    s[i] = " ".join(words) + "."
                break
    return s


def _conclusion(q: dict, grid: int, rng: random.Random) -> str:
    """A random closing sentence of the kind the question's gold rationales end with."""
    f = q["family"]
    if f in ("count_color", "count_shape"):
        noun = f"{q['color']} objects" if f == "count_color" else plural(q["shape"])
        n = rng.randrange(5)
        return f"There are no {noun}." if n == 0 else f"That makes {n} {noun}."
    if f == "exists":
        return f"There is no {q['color']} {q['shape']}."
    if f == "left_right":
        (c1, s1), (c2, s2) = q["a"], q["b"]
        return f"The {c1} {s1} is {rng.choice(['left', 'right'])} of the {c2} {s2}."
    return mention(_random_obj(rng, grid, None, q["shape"]), grid)


def reader_records(records: Iterable[dict[str, Any]], seed: int = 0, edits_per_record: int = 3
                   ) -> list[dict[str, Any]]:
    """Per world record: its gold rationale (implied = gold answer) and `edits_per_record` edited
    copies (1-2 random edits each), each with `id` (the record's), `question`, `rationale`,
    `implied`, `kind`."""
    out = []
    for r in records:
        f = json.loads(r["facts"]) if isinstance(r["facts"], str) else r["facts"]
        rng = random.Random(f"reader/{seed}/{r['id']}")
        gold = split_sentences(r["rationale"])
        out.append({"id": r["id"], "question": r["question"], "rationale": r["rationale"],
                    "implied": r["answer"], "kind": "gold"})
        for _ in range(edits_per_record):
            sents = gold
            for _ in range(rng.choice((1, 1, 2))):
                sents = edit(sents, f["query"], f["grid"], rng.choice(EDITS), rng)
            text = " ".join(sents)
            out.append({"id": r["id"], "question": r["question"], "rationale": text,
                        "implied": implied_answer(text, f) or UNCLEAR, "kind": "edited"})
    return out


def candidate_records(cands: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A policy's own candidates (with `facts`) as reader records, labelled the same way."""
    return [{"question": c["question"], "rationale": c["rationale"],
             "implied": implied_answer(c["rationale"], c["facts"]) or UNCLEAR, "kind": "policy"}
            for c in cands if c.get("facts")]
