"""Records that cross stages are typed (data/schema.py): a stage cannot write what the next
does not read."""

from __future__ import annotations

import pytest

from data.records import read_records, write_records
from data.schema import Candidate, Example, PairScore, column_problem

PAIR = {"prompt_id": "p1", "a_idx": 0, "b_idx": 1, "p_a": 0.7, "p_b": 0.2, "p_tie": 0.1}


def test_a_record_of_its_kind_is_written_and_read_back(tmp_path):
    assert write_records([PAIR, {**PAIR, "a_idx": 1, "b_idx": 0}], tmp_path / "s.parquet", PairScore) == 2
    assert read_records(tmp_path / "s.parquet")[0] == PAIR


@pytest.mark.parametrize("row, why", [
    ({k: v for k, v in PAIR.items() if k != "p_tie"}, "missing ['p_tie']"),
    ({**PAIR, "p_both": 0.0}, "not in the record kind ['p_both']"),
])
def test_a_row_that_is_not_its_kind_is_refused_before_anything_is_written(tmp_path, row, why):
    with pytest.raises(TypeError, match=r"s.parquet row 1 is not a PairScore record: " + why.replace("[", r"\[")):
        write_records([PAIR, row], tmp_path / "s.parquet", PairScore)
    assert not list(tmp_path.iterdir())


def test_an_optional_key_may_be_absent_and_every_key_is_known():
    example = {k: None for k in Example.__required_keys__}
    assert column_problem(example.keys(), Example) is None  # `choices`: only data.world=files|hf
    assert column_problem([*example, "choices"], Example) is None
    assert "missing ['gold']" in column_problem(set(Candidate.__annotations__) - {"gold"}, Candidate)
