"""tools/stage1_curve.py: stage 1's learning curve, on the committed base and the built-in world."""

from __future__ import annotations

import json

from tools.stage1_curve import main

TINY = ["rationale_sft.max_steps=4", "rationale_sft.batch_size=4", "data.n_rationale=32",
        "data.n_eval=12"]


def _curve(tmp_path, name: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["--every", "2", "--dev", "6", "--json", str(out), "--adapter",
                 str(tmp_path / name), *args, "--set", *TINY]) == 0
    return json.loads(out.read_text())


def test_curve_has_a_scored_point_every_n_steps_and_the_training_seed_is_its_own(tmp_path):
    a = _curve(tmp_path, "a", "--seed", "2", "--train-seed", "0")
    b = _curve(tmp_path, "b", "--seed", "2", "--train-seed", "1")
    assert [p["step"] for p in a["curve"]] == [2, 4] and (a["seed"], a["train_seed"]) == (2, 0)
    for p in a["curve"]:
        for split in ("eval", "dev"):
            assert set(p[split]) == {"accuracy", "consistency", "factuality"}
            assert all(0 <= v <= 100 for v in p[split].values())
    assert a["curve"][0]["loss"] != b["curve"][0]["loss"]  # another draw of init and order
    assert (tmp_path / "a" / "adapter_config.json").is_file()


def test_curve_refuses_data_without_the_exact_scorer_and_bad_settings(tmp_path, capsys):
    rows = tmp_path / "eval.jsonl"
    rows.write_text("")
    assert main(["--set", "data.world=files", f"data.files.rationale={rows}", f"data.files.pool={rows}",
                 f"data.files.eval={rows}"]) == 2
    assert "needs the built-in world's exact scorer" in capsys.readouterr().err
    assert main(["--set", "rationale_sft.max_stepz=3"]) == 2
    assert "rationale_sft.max_stepz: unknown key" in capsys.readouterr().err


def test_curve_continues_a_policy_from_its_adapters_on_records_it_never_saw(tmp_path, capsys):
    first = _curve(tmp_path, "first", "--seed", "1")
    more = _curve(tmp_path, "more", "--seed", "1", "--init", str(tmp_path / "first"),
                  "--records-from", "32")
    assert [p["step"] for p in more["curve"]] == [0, 2, 4] and more["curve"][0]["loss"] is None
    assert (more["init"], more["records_from"]) == ([str(tmp_path / "first")], 32)
    # another starting policy and other records: step 2 is not the first run's step 2
    assert more["curve"][1]["loss"] != first["curve"][0]["loss"]
    assert main(["--init", str(tmp_path / "nowhere"), "--set", *TINY]) == 2
    assert "error: --init:" in capsys.readouterr().err
