"""The world stage on your own tables: valid rows become the records every stage reads, bad
rows go to rejected_rows.parquet, too many bad rows stop the stage with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from data.config import DataConfig, load_config
from data.records import read_records
from data.shapes import generate
from data.validate import DataError
from tasks import world

SPLITS = {"rationale": 40, "pool": 20, "eval": 20}


def export(tmp_path: Path, bad: dict[str, int]) -> list[str]:
    """Shapes records as JSONL tables with an image folder; `bad[split]` rows lose their image."""
    (tmp_path / "img").mkdir(exist_ok=True)
    overrides = []
    for split, n in SPLITS.items():
        lines = []
        for i, r in enumerate(generate(split, n, DataConfig(), 0)):
            name = f"{r['id']}.png"
            (tmp_path / "img" / name).write_bytes(r["image"])
            row = {"qid": r["id"], "img": name if i >= bad.get(split, 0) else "gone.png",
                   **{k: r[k] for k in ("question", "answer", "rationale", "reference", "family", "facts")}}
            lines.append(json.dumps(row))
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        overrides.append(f"data.files.{split}={tmp_path / f'{split}.jsonl'}")
    return overrides + ["data.world=files", f"data.files.image_dir={tmp_path / 'img'}",
                        "data.files.columns={id: qid, image: img}", "scorer.n_train_items=30"]


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))


def test_valid_rows_become_records_and_bad_rows_are_reported(tmp_path):
    cfg = load_config(None, export(tmp_path, {"pool": 1})).model_dump(mode="json")
    out = tmp_path / "out"
    out.mkdir()
    meta = world.build_world(cfg, out, "k")
    assert meta["counts"] == {"rationale": 40, "pool": 19, "eval": 20, "scorer": 30}
    assert meta["rejected"] == {"rationale": 0, "pool": 1, "eval": 0, "scorer": 0}
    rej = pd.read_parquet(out / world.REJECTED)
    assert rej.to_dict("records") == [{"split": "pool", "file": str(tmp_path / "pool.jsonl"), "row": 0,
                                       "id": "pool-000000", "field": "image",
                                       "reason": f"file not found: {str(tmp_path / 'img' / 'gone.png')!r}"}]
    ev, gold = read_records(out / "eval.parquet"), generate("eval", 20, DataConfig(), 0)
    keep = ("id", "question", "answer", "rationale", "response", "short_response", "facts", "family", "image")
    assert [{k: r[k] for k in keep} for r in ev] == [{k: g[k] for k in keep} for g in gold]


def test_too_many_bad_rows_stop_before_any_model_work(tmp_path):
    cfg = load_config(None, export(tmp_path, {"eval": 2})).model_dump(mode="json")  # 10% > 5%
    with pytest.raises(DataError) as e:
        world.build_world(cfg, tmp_path, "k2")
    msg = str(e.value)
    assert f"data.files.eval ({tmp_path / 'eval.jsonl'}): 2 of 20 rows rejected (10.0%" in msg
    assert "row 0 (id 'eval-000000') image: file not found" in msg
    report = world.failed_report("k2")
    assert str(report) in msg and len(pd.read_parquet(report)) == 2


def test_the_world_key_follows_the_tables(tmp_path):
    cfg = load_config(None, export(tmp_path, {})).model_dump(mode="json")
    before = world.source_files(cfg)
    assert world.source_files(cfg) == before
    with open(tmp_path / "eval.jsonl", "a") as f:
        f.write(json.dumps({"qid": "new", "img": "eval-000000.png", "question": "q?", "answer": "1"}) + "\n")
    assert world.source_files(cfg) != before
    assert world.source_files(load_config(None, []).model_dump(mode="json")) == {}
