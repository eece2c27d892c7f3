"""Grounding probes of data.metrics: stated objects against the scene, worked out by hand."""

import json

from data.config import DataConfig
from data.metrics import caption_counts, mention_counts
from data.shapes import generate

FACTS = {"grid": 3, "objects": [{"color": "red", "shape": "circle", "row": 0, "col": 0},
                                {"color": "blue", "shape": "square", "row": 2, "col": 1}],
         "query": {"family": "color_of", "shape": "circle"}}


def test_mention_counts_by_hand():
    assert mention_counts("There is a red circle at the top left.", FACTS) == (1, 1)
    assert mention_counts("There is a red circle at the top left. There is a blue square at the "
                          "top left. That makes 1 red objects.", json.dumps(FACTS)) == (1, 2)
    assert mention_counts("There are no circles.", FACTS) == (0, 0)


def test_caption_counts_by_hand():
    right = "The image shows a red circle at the top left, a blue square at the bottom center."
    assert caption_counts(right, FACTS) == (2, 2, 2)
    # a wrong shape, a made-up object and a repeat (counted once)
    wrong = ("The image shows a red square at the top left, a blue square at the bottom center, "
             "a blue square at the bottom center, a green circle at the middle center.")
    assert caption_counts(wrong, FACTS) == (1, 3, 2)
    assert caption_counts("Answer: red.", FACTS) == (0, 0, 2)


def test_gold_references_and_rationales_state_only_scene_objects():
    for style in ("relevant", "sweep"):
        for r in generate("eval", 50, DataConfig(rationale_style=style)):
            n = len(json.loads(r["facts"])["objects"])
            assert caption_counts(r["reference"], r["facts"]) == (n, n, n)
            held, stated = mention_counts(r["rationale"], r["facts"])
            assert held == stated
            if style == "sweep":
                assert stated == n
