"""The world stage on your own tables, checked as a whole before any model work: eval rows that
leak into training, splits short of their size, rows too long for the base model, and the
message that stops a run with many bad rows (issue "Your own data, end to end")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.config import load_config
from data.records import read_records
from data.validate import DataError
from tasks import world
from tests.unit.test_world_hf import _state, png  # noqa: F401  (the autouse state dir, test images)

LONG = "What colour is the box on the left of the big table? " * 400  # ~21,000 characters




def rows(split: str, n: int) -> list[dict]:
    return [{"id": f"{split}-{k}", "image": f"{split}-{k}.png", "question": f"What is {split} thing {k}?",
             "answer": "yes", "rationale": f"Thing {k} is there."} for k in range(n)]


def tables(tmp_path: Path, data: dict[str, list[dict]], *over: str) -> dict:
    """JSONL tables (and their images) for the splits in `data`; the config of a files world on them."""
    img = tmp_path / "img"
    img.mkdir(exist_ok=True)
    args = ["data.world=files", f"data.files.image_dir={img}"]
    for split, rs in data.items():
        for k, r in enumerate(rs):
            if r["image"] == f"{split}-{k}.png":  # not a row a test pointed elsewhere
                (img / r["image"]).write_bytes(png(k))
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
        args.append(f"data.files.{split}={tmp_path / f'{split}.jsonl'}")
    sizes = {"rationale": "data.n_rationale", "pool": "data.n_pool", "eval": "data.n_eval"}
    args += [f"{sizes[s]}={len(rs)}" for s, rs in data.items()] + [f"scorer.n_train_items={len(data['rationale'])}"]
    return load_config(None, args + list(over)).model_dump(mode="json")


def build(cfg: dict, tmp_path: Path, key: str = "k") -> dict:
    out = tmp_path / f"out-{key}"
    out.mkdir()
    return world.build_world(cfg, out, key)


def test_eval_rows_in_a_training_split_are_counted_logged_and_refused_above_the_limit(tmp_path, capsys):
    ev = rows("eval", 20)
    rat = rows("rationale", 30) + [dict(ev[0]), dict(ev[1], id="copy-1")]  # by id; by image + question
    data = {"rationale": rat, "pool": rows("pool", 10), "eval": ev}
    meta = build(tables(tmp_path, data, "data.max_leak_frac=0.1"), tmp_path)
    assert meta["leakage"] == {"eval~rationale": 2, "eval~pool": 0, "eval~scorer": 2}  # scorer = rationale table
    out = capsys.readouterr().out
    assert ("[world] leakage eval~rationale: 2 eval rows also in rationale (same id, or same image and "
            "question), e.g. ['eval-0', 'eval-1']") in out
    with pytest.raises(DataError) as e:  # 10% of eval above the default 5%
        build(tables(tmp_path, data), tmp_path, "k2")
    msg = str(e.value)
    assert msg.startswith("2 of 20 eval rows (10.0%) also appear in training splits (eval~rationale 2, eval~scorer 2")
    assert "data.max_leak_frac=0.05" in msg
    assert not (tmp_path / "out-k2" / "eval.parquet").exists()  # refused before writing anything


def test_rationale_and_pool_may_share_rows_that_is_no_leakage(tmp_path):
    shared = rows("rationale", 12)
    meta = build(tables(tmp_path, {"rationale": shared, "pool": shared, "eval": rows("eval", 5)}), tmp_path)
    assert meta["leakage"] == {"eval~rationale": 0, "eval~pool": 0, "eval~scorer": 0}


def test_a_split_asked_for_more_rows_than_it_has_says_so(tmp_path, capsys):
    ev = rows("eval", 9)
    ev[3]["image"] = "gone.png"  # 8 valid of 9, 11% rejected
    cfg = tables(tmp_path, {"rationale": rows("rationale", 10), "pool": rows("pool", 4), "eval": ev},
                 "data.n_eval=20", "data.max_reject_frac=0.2")
    meta = build(cfg, tmp_path)
    assert "[world] eval: asked for 20 rows (data.n_eval), the data has 8 valid" in capsys.readouterr().out
    assert meta["short"] == {"eval": {"asked": 20, "got": 8}} and meta["counts"]["eval"] == 8


def test_a_question_too_long_for_the_model_is_a_rejected_row_not_a_crash(tmp_path):
    ev = rows("eval", 20)
    ev[4]["question"] = LONG
    cfg = tables(tmp_path, {"rationale": rows("rationale", 10), "pool": rows("pool", 4), "eval": ev})
    meta = build(cfg, tmp_path)  # 1 of 20 = 5%: not above data.max_reject_frac
    assert meta["rejected"]["eval"] == 1 and meta["counts"]["eval"] == 19
    (bad,) = read_records(tmp_path / "out-k" / world.REJECTED)
    assert (bad["split"], bad["row"], bad["id"], bad["field"]) == ("eval", 4, "eval-4", "question")
    assert bad["reason"].startswith("too long for the model: ") and "above its context of 1024 tokens" in bad["reason"]
    n_tokens = int(bad["reason"].split("question ")[1].split(",")[0])
    assert n_tokens > 1024
    assert all("_row" not in r for r in read_records(tmp_path / "out-k" / "eval.parquet"))
    ev[5]["question"] = LONG  # 2 of 20 = 10%: the run stops
    with pytest.raises(DataError, match=r"data.files.eval .*: 2 of 20 rows rejected \(10.0%.*too long for the model"):
        build(tables(tmp_path, {"rationale": rows("rationale", 10), "pool": rows("pool", 4), "eval": ev}),
              tmp_path, "k2")


def test_the_world_key_follows_the_base_model_for_your_data_only(tmp_path):
    cfg = tables(tmp_path, {"rationale": rows("rationale", 3), "pool": rows("pool", 3), "eval": rows("eval", 3)})
    keys = world.source_files(cfg)
    assert set(keys) == {"files", "model"}
    other = tmp_path / "model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    cfg["model"]["base"] = str(other)
    assert world.source_files(cfg)["model"] != keys["model"] and world.source_files(cfg)["files"] == keys["files"]
    assert world.source_files(load_config(None, []).model_dump(mode="json")) == {}  # shapes: unchanged


def test_several_failing_splits_give_one_line_each_with_distinct_first_reasons(tmp_path):
    pool, ev = rows("pool", 10), rows("eval", 10)
    for r in pool[:3]:
        r["image"] = "../outside.png"
    (tmp_path / "outside.png").write_bytes(png(1))
    for r in ev[:4]:
        r["question"] = ""
    ev[5]["answer"] = float("inf")
    with pytest.raises(DataError) as e:
        build(tables(tmp_path, {"rationale": rows("rationale", 10), "pool": pool, "eval": ev}), tmp_path)
    lines = str(e.value).split("\n")
    assert len(lines) == 2
    assert lines[0].startswith(f"data.files.pool ({tmp_path / 'pool.jsonl'}): 3 of 10 rows rejected (30.0%, "
                               "above data.max_reject_frac=0.05); first: row 0 (id 'pool-0') image: path "
                               "'../outside.png' leaves the image folder")
    assert lines[0].count("leaves the image folder") == 1  # the same fault on three rows shows once
    assert lines[1].startswith(f"data.files.eval ({tmp_path / 'eval.jsonl'}): 5 of 10 rows rejected (50.0%")
    assert ("first: row 0 (id 'eval-0') question: empty; row 5 (id 'eval-5') answer: not a finite number (inf); "
            "all reasons in") in lines[1]
    cfg = tables(tmp_path, {"rationale": rows("rationale", 10), "pool": pool, "eval": rows("eval", 10)},
                 "data.files.allow_outside_image_dir=true")
    assert build(cfg, tmp_path, "k2")["counts"]["pool"] == 10  # allowed: the rows are fine
