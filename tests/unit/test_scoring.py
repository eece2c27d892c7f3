"""Exact scorers on hand-made responses, malformed ones included."""

import json

import pytest

from data.scoring import (
    choice_index,
    format_choices,
    gold_answer,
    normalize_answer,
    parse_claims,
    parse_response,
    score_shapes,
    split_sentences,
)

# A hand-made 3x3 scene: red circle top-left, red square bottom-right, blue triangle middle-center.
SCENE = {
    "grid": 3,
    "objects": [
        {"color": "red", "shape": "circle", "row": 0, "col": 0},
        {"color": "red", "shape": "square", "row": 2, "col": 2},
        {"color": "blue", "shape": "triangle", "row": 1, "col": 1},
    ],
}


def facts(query):
    return json.dumps({**SCENE, "query": query})


COUNT_RED = facts({"family": "count_color", "color": "red"})


@pytest.mark.parametrize(
    "text, rationale, answer",
    [
        ("There is a red circle. Answer: 1.", "There is a red circle.", "1"),
        ("answer:  Yes!", "", "yes"),
        ("No answer tag here.", "No answer tag here.", None),
        ("Answer:", "", None),  # empty answer is unparsable, not ''
        ("Answer: 2. Answer: 3.", "Answer: 2.", "3"),  # the last tag wins
        ("It is red.\nAnswer: The Red.\nmore text", "It is red.", "red"),
    ],
)
def test_parse_response(text, rationale, answer):
    p = parse_response(text)
    assert p.rationale == rationale
    assert p.answer == answer


def test_normalize_answer():
    assert normalize_answer("  The Red. ") == "red"
    assert normalize_answer("A, b") == "b"


def test_split_sentences():
    assert split_sentences("One. Two?  Three!\nFour") == ["One.", "Two?", "Three!", "Four"]
    assert split_sentences("") == []


def test_parse_claims_grid_positions():
    claims = parse_claims("There is a red circle at the top left. Blah blah.")
    assert claims == [("mention", "red", "circle", 0, 0), ("unknown", "Blah blah.")]
    # a position outside the grid is not a valid mention
    assert parse_claims("There is a red circle at the row 9 column 1.", grid=3)[0][0] == "unknown"


def test_count_gold_is_correct_consistent_factual():
    s = score_shapes(
        "There is a red circle at the top left. There is a red square at the bottom right. "
        "That makes 2 red objects. Answer: 2.", COUNT_RED, "2")
    assert (s.parsable, s.correct, s.consistent, s.factual) == (True, True, True, True)


def test_right_answer_from_wrong_rationale_is_inconsistent_and_counterfactual():
    # states one red object (and a non-existent one elsewhere) but answers 2
    s = score_shapes("There is a red circle at the middle left. Answer: 2.", COUNT_RED, "2")
    assert s.correct and not s.consistent and not s.factual


def test_wrong_answer_after_correct_rationale_is_unreasonable():
    s = score_shapes(
        "There is a red circle at the top left. There is a red square at the bottom right. "
        "That makes 2 red objects. Answer: 3.", COUNT_RED, "2")
    assert not s.correct and not s.consistent and s.factual


def test_insufficient_rationale_is_not_consistent():
    s = score_shapes("There is a blue triangle at the middle center. Answer: 2.", COUNT_RED, "2")
    assert s.correct and s.factual and not s.consistent


def test_count_claim_that_contradicts_mentions_is_inconsistent():
    s = score_shapes("There is a red circle at the top left. That makes 2 red objects. Answer: 2.",
                     COUNT_RED, "2")
    # both statements hold for the scene, but one listed object does not make "2"
    assert s.factual and not s.consistent


def test_unparsable_response():
    s = score_shapes("There is a red circle at the top left.", COUNT_RED, "2")
    assert not s.parsable and not s.correct and not s.consistent and s.factual


def test_gibberish_is_not_factual():
    s = score_shapes("zzq red red. Answer: 2.", COUNT_RED, "2")
    assert s.parsable and s.correct and not s.factual and not s.consistent


def test_zero_count_needs_the_negative_statement():
    f = facts({"family": "count_color", "color": "green"})
    assert score_shapes("There are no green objects. Answer: 0.", f, "0").consistent
    assert not score_shapes("There is a red circle at the top left. Answer: 0.", f, "0").consistent


def test_count_shape():
    f = facts({"family": "count_shape", "shape": "triangle"})
    s = score_shapes("There is a blue triangle at the middle center. That makes 1 triangles. "
                     "Answer: 1.", f, "1")
    assert s.correct and s.consistent and s.factual


def test_color_of():
    f = facts({"family": "color_of", "shape": "triangle"})
    assert score_shapes("There is a blue triangle at the middle center. Answer: blue.", f, "blue").consistent
    s = score_shapes("There is a red triangle at the middle center. Answer: red.", f, "blue")
    assert s.consistent and not s.correct and not s.factual


def test_exists_yes_and_no():
    yes = facts({"family": "exists", "color": "red", "shape": "square"})
    assert score_shapes("There is a red square at the bottom right. Answer: yes.", yes, "yes").consistent
    no = facts({"family": "exists", "color": "blue", "shape": "circle"})
    s = score_shapes("There is a red circle at the top left. There is no blue circle. Answer: no.",
                     no, "no")
    assert s.correct and s.consistent and s.factual
    # mentioning it and denying it at once implies nothing
    s = score_shapes("There is a blue circle at the top left. There is no blue circle. Answer: no.",
                     no, "no")
    assert not s.consistent


def test_left_right_from_positions_and_from_relation():
    f = facts({"family": "left_right", "a": ["red", "circle"], "b": ["blue", "triangle"]})
    both = ("There is a red circle at the top left. There is a blue triangle at the middle center. ")
    assert score_shapes(both + "Answer: yes.", f, "yes").consistent
    assert score_shapes(both + "The red circle is left of the blue triangle. Answer: yes.", f, "yes").factual
    s = score_shapes("The red circle is right of the blue triangle. Answer: no.", f, "yes")
    assert s.consistent and not s.correct and not s.factual
    # the relation contradicts the stated positions: nothing follows
    s = score_shapes(both + "The red circle is right of the blue triangle. Answer: no.", f, "yes")
    assert not s.consistent


# ---------------------------------------------------------------- multiple choice

CHOICES = ["red", "blue", "a bird"]


@pytest.mark.parametrize("raw, k", [
    ("blue", 1), ("Blue.", 1), ("B", 1), ("(b)", 1), ("B. blue", 1), ("(B) blue.", 1), ("b) blue", 1),
    ("option C", 2), ("A", 0), ("bird", 2), ("the bird", 2),
    ("green", None), ("D", None), ("B. red", None), ("", None), ("bluebird", None),
])
def test_choice_index_by_letter_or_text(raw, k):
    assert choice_index(raw, CHOICES) == k


def test_a_multiple_choice_answer_parses_to_its_option_text():
    assert parse_response("It is up high. Answer: C.", CHOICES).answer == "bird"
    assert parse_response("Answer: (A)", CHOICES).answer == "red"
    # without choices "A" normalises to nothing (an article): unparsable, as before
    assert parse_response("Answer: A.").answer is None
    assert parse_response("Answer: green.", CHOICES).answer == "green"  # no option: kept, and wrong
    assert gold_answer("B", CHOICES) == "blue" and gold_answer("a bird", CHOICES) == "bird"
    assert gold_answer("The Cat") == "cat"


def test_format_choices_lists_the_options_by_letter():
    assert format_choices("What is it? ", CHOICES) == "What is it?\nOptions: (A) red (B) blue (C) a bird"
