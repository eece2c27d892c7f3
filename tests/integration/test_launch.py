"""Rationale SFT and DPO under `accelerate launch` (runtime.launcher=accelerate): two CPU
processes with the gloo backend (configs/accelerate/cpu-2.yaml), the distributed code path
the GPU configs (DDP, FSDP, DeepSpeed) take, through the stages' own build functions."""

from __future__ import annotations

import math

import pytest

from data.config import load_config
from data.records import read_records, write_records
from infra.refs import base_ref
from models.policy import build_policy
from tasks import dpo, sft, world

LAUNCH = ["runtime.launcher=accelerate", "runtime.accelerate_config=configs/accelerate/cpu-2.yaml",
          "model.device=cpu", "data.n_rationale=32", "data.n_pool=16"]


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def test_sft_then_dpo_train_in_two_processes_with_the_global_batch_of_the_config(state):
    cfg = load_config("configs/smoke.yaml", [*LAUNCH, "rationale_sft.max_steps=4", "rationale_sft.batch_size=8",
                                             "dpo.max_steps=2", "dpo.batch_size=4"]).model_dump(mode="json")
    (state / "w").mkdir()
    world.build_world(cfg, state / "w", "k")
    w, base = {"path": str(state / "w"), "digest": "w"}, base_ref("builtin")
    (state / "s").mkdir()
    m = sft.build_sft(cfg, base, w, state / "s")["metrics"]
    # 2 processes x 4 examples = the configured 8 a step: 4 steps are one pass over 32 examples
    assert m["processes"] == 2 and m["steps"] == 4 and m["examples"] == 32 and math.isfinite(m["loss_last"])
    assert not list((state / "s").glob(".launch-result*"))  # nothing but the stage's own files
    pool = read_records(state / "w" / "pool.parquet")
    (state / "p").mkdir()
    write_records([{"prompt_id": r["id"], "question": r["question"], "chosen": r["response"],
                    "rejected": r["short_response"], "weight": 1.0} for r in pool[:8]],
                  state / "p" / "preference_pairs.parquet")
    chain = [{"path": str(state / "s"), "digest": "s"}]
    (state / "d").mkdir()
    d = dpo.build_dpo(cfg, base, chain, {"path": str(state / "p")}, w, state / "d")["metrics"]
    assert d["processes"] == 2 and d["steps"] == 2 and math.isfinite(d["loss"])
    # both adapters load onto the base like single-process ones
    build_policy(base["path"], [str(state / "s" / "adapter"), str(state / "d" / "adapter")], device="cpu")


def test_the_launcher_needs_its_config_file():
    with pytest.raises(ValueError, match="needs runtime.accelerate_config"):
        load_config("configs/smoke.yaml", ["runtime.launcher=accelerate"])
    assert load_config("configs/smoke.yaml").runtime.launcher == "local"  # the default: this process
