"""`dpo.reference`: the DPO stage of iteration 2 measures its rewards against pi_1 (previous,
the default) or pi_0 (initial), through the stage's own build function on the tiny model."""

from __future__ import annotations

from data.config import load_config
from data.records import read_records, write_records
from infra.refs import base_ref
from tasks import dpo, sft, world

SMALL = ["model.device=cpu", "data.n_rationale=32", "data.n_pool=16", "rationale_sft.max_steps=4",
         "rationale_sft.batch_size=8", "dpo.batch_size=4", "dpo.learning_rate=1e-2"]


def test_iteration_two_is_measured_against_the_reference_the_config_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))
    state = tmp_path

    def cfg(*over: str) -> dict:
        return load_config("configs/smoke.yaml", [*SMALL, *over]).model_dump(mode="json")

    (state / "w").mkdir()
    world.build_world(cfg(), state / "w", "k")
    w, base = {"path": str(state / "w"), "digest": "w"}, base_ref("builtin")
    (state / "s").mkdir()
    sft.build_sft(cfg(), base, w, state / "s")
    pool = read_records(state / "w" / "pool.parquet")
    (state / "p").mkdir()
    write_records([{"prompt_id": r["id"], "question": r["question"], "chosen": r["response"],
                    "rejected": r["short_response"], "weight": 1.0} for r in pool[:8]],
                  state / "p" / "preference_pairs.parquet")
    pairs, pi0 = {"path": str(state / "p")}, [{"path": str(state / "s"), "digest": "s"}]

    def step_one(name: str, chain: list[dict], *over: str) -> dict:
        (state / name).mkdir()
        return dpo.build_dpo(cfg(*over), base, chain, pairs, w, state / name)["metrics"]

    # iteration 1: pi_{t-1} is pi_0, so both settings start with the policy as its own reference
    first = step_one("d1", pi0, "dpo.max_steps=4", "dpo.reference=initial")
    assert first["rewards/chosen_mean"] != 0.0  # it trained: later steps moved away from pi_0
    pi1 = pi0 + [{"path": str(state / "d1"), "digest": "d1"}]
    prev = step_one("prev", pi1, "dpo.max_steps=1")
    init = step_one("init", pi1, "dpo.max_steps=1", "dpo.reference=initial")
    # the first step's rewards: 0 against pi_1 (the new adapter starts at zero), not against pi_0
    assert prev["rewards/chosen"] == 0.0 and prev["rewards/rejected"] == 0.0
    assert abs(init["rewards/chosen"]) > 1e-4 and init["rewards/margins"] > 0  # pi_1 already prefers the chosen
