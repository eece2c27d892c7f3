"""Candidate search and pairwise scoring as shards on a local 2-worker Ray cluster through
Prefect's Ray task runner (runtime.ray_address=local): the merged outputs equal the
single-process ones for the same seed."""

from __future__ import annotations

import pandas as pd
import pytest

from data.config import load_config
from infra.refs import base_ref, judge_ref
from tasks import score, search, world

RAY = ["runtime.ray_address=local", "runtime.ray_workers=2"]
SMALL = ["data.n_rationale=16", "data.n_pool=8", "iterate.prompts_per_iteration=8", "search.shard_size=4",
         "scorer.model=builtin", "scorer.template=compact"]


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def _cfg(*extra: str) -> dict:
    return load_config("configs/smoke.yaml", [*SMALL, *extra]).model_dump(mode="json")


def test_search_and_scoring_on_two_ray_workers_equal_one_process(state):
    from prefect.testing.utilities import prefect_test_harness

    one, ray = _cfg(), _cfg(*RAY)
    (state / "w").mkdir()
    world.build_world(one, state / "w", "k")
    w, base = {"path": str(state / "w"), "digest": "w"}, base_ref("builtin")
    for name in ("s1", "s2", "j1", "j2"):
        (state / name).mkdir()
    with prefect_test_harness():
        # the single process searches in shards of 4 too (search.shard_size): the same batches,
        # so the candidates match bit for bit, log-probs included
        search.build_search(one, base, [], w, 1, state / "s1", key="one")
        search.build_search(ray, base, [], w, 1, state / "s2", key="ray")
        a, b = (pd.read_parquet(state / s / "candidates.parquet") for s in ("s1", "s2"))
        pd.testing.assert_frame_equal(a, b)
        assert a["prompt_id"].nunique() == 8 and len(a) > 8  # up to n_candidates distinct ones each
        judge = judge_ref("builtin", "compact")
        score.build_scores(one, judge, {"path": str(state / "s1")}, state / "j1", key="one")
        score.build_scores(ray, judge, {"path": str(state / "s2")}, state / "j2", key="ray")
    x, y = (pd.read_parquet(state / j / "pairwise_scores.parquet") for j in ("j1", "j2"))
    # the same ordered pairs in the same order; probabilities up to the float rounding of
    # other batch paddings (the single process judges every item in one run of batches)
    pd.testing.assert_frame_equal(x[["prompt_id", "a_idx", "b_idx"]], y[["prompt_id", "a_idx", "b_idx"]])
    pd.testing.assert_frame_equal(x, y, check_exact=False, atol=1e-5)
    per_prompt = a.groupby("prompt_id").size()
    assert len(x) == int((per_prompt * (per_prompt - 1)).sum())  # every ordered pair of each prompt
