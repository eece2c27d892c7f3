"""`data.world=hf`: Hugging Face datasets in the A-OKVQA and ScienceQA layouts and by column
mapping, made here as small local datasets (save_to_disk / parquet files; nothing downloaded)."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import pandas as pd
import pytest
from PIL import Image

from data.config import load_config
from data.records import read_records
from data.validate import DataError
from tasks import world


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))


def png(k: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (10 * k % 256, 80, 160)).save(buf, format="PNG")
    return buf.getvalue()


IMAGE = datasets.Image()


def aokvqa(n: int, split: str, no_answer: int | None = None) -> datasets.Dataset:
    rows = {"question_id": [f"{split}{k:03d}" for k in range(n)],
            "image": [{"bytes": png(k), "path": None} for k in range(n)],
            "question": [f"What is thing {k}?" for k in range(n)],
            "choices": [["cat", "dog", "a bird", "fish"] for _ in range(n)],
            "correct_choice_idx": [None if k == no_answer else k % 4 for k in range(n)],
            "direct_answers": [["cat"] * 10 for _ in range(n)],
            "rationales": [[f"reason {k} one.", f"reason {k} two.", f"reason {k} three."] for k in range(n)]}
    feats = datasets.Features({"question_id": datasets.Value("string"), "image": IMAGE,
                               "question": datasets.Value("string"),
                               "choices": datasets.Sequence(datasets.Value("string")),
                               "correct_choice_idx": datasets.Value("int64"),
                               "direct_answers": datasets.Sequence(datasets.Value("string")),
                               "rationales": datasets.Sequence(datasets.Value("string"))})
    return datasets.Dataset.from_dict(rows, features=feats)


def cfg_for(path: Path, mapping: str, **over: str):
    args = ["data.world=hf", f"data.hf.dataset={path}", f"data.hf.mapping={mapping}",
            "data.n_rationale=6", "data.n_pool=4", "data.n_eval=5", "scorer.n_train_items=3"]
    return load_config("configs/smoke.yaml", args + [f"{k}={v}" for k, v in over.items()]).model_dump(mode="json")


def test_aokvqa_rows_become_multiple_choice_records_with_their_rationales(tmp_path):
    ds = datasets.DatasetDict({"train": aokvqa(12, "t"), "validation": aokvqa(6, "v", no_answer=2)})
    ds.save_to_disk(tmp_path / "aokvqa")
    out = tmp_path / "out"
    out.mkdir()
    # the toy validation split repeats train's images and questions: leakage, allowed here
    meta = world.build_world(cfg_for(tmp_path / "aokvqa", "aokvqa", **{"data.max_reject_frac": "0.2",
                                                                       "data.max_leak_frac": "1"}), out, "k")
    rat, pool, ev = (read_records(out / f"{s}.parquet") for s in ("rationale", "pool", "eval"))
    assert [r["id"] for r in rat] == [f"t{k:03d}" for k in range(6)]
    assert [r["id"] for r in pool] == [f"t{k:03d}" for k in range(6, 10)]  # after the rationale rows
    r = rat[1]
    assert r["question"] == "What is thing 1?\nOptions: (A) cat (B) dog (C) a bird (D) fish"
    assert r["answer"] == "dog" and list(r["choices"]) == ["cat", "dog", "a bird", "fish"]
    assert r["rationale"] == "reason 1 one." and r["response"] == "reason 1 one. Answer: dog."
    assert r["image"] == png(1)  # the dataset's own bytes
    # the validation row without a correct choice is a rejected row, named
    assert [x["id"] for x in ev] == ["v000", "v001", "v003", "v004"]  # of the first n_eval = 5 rows
    rejected = read_records(out / world.REJECTED)
    assert [(x["split"], x["id"], x["field"]) for x in rejected] == [("eval", "v002", "answer")]
    assert meta["rejected"]["eval"] == 1
    assert meta["leakage"] == {"eval~rationale": 4, "eval~pool": 0, "eval~scorer": 2}


def test_scienceqa_skips_text_only_rows_with_a_count_and_uses_hint_and_solution(tmp_path):
    n = 16
    rows = {"image": [None if k % 4 == 0 else {"bytes": png(k), "path": None} for k in range(n)],
            "question": [f"Which is {k}?" for k in range(n)],
            "choices": [["yes", "no"] for _ in range(n)], "answer": [k % 2 for k in range(n)],
            "hint": ["" if k % 3 else f"hint {k}" for k in range(n)],
            "solution": [f"Because\n  {k}." for k in range(n)], "subject": ["natural science"] * n}
    feats = datasets.Features({"image": IMAGE, "question": datasets.Value("string"),
                               "choices": datasets.Sequence(datasets.Value("string")),
                               "answer": datasets.Value("int64"), "hint": datasets.Value("string"),
                               "solution": datasets.Value("string"), "subject": datasets.Value("string")})
    d = datasets.Dataset.from_dict(rows, features=feats)
    datasets.DatasetDict({"train": d, "validation": d}).save_to_disk(tmp_path / "sqa")
    out = tmp_path / "out"
    out.mkdir()
    meta = world.build_world(cfg_for(tmp_path / "sqa", "scienceqa", **{"data.n_rationale": "9",
                                                                       "data.max_leak_frac": "1"}), out, "k")
    rat = read_records(out / "rationale.parquet")
    # rows 0..8 of train hold 3 text-only ones (0, 4, 8): 6 records, 3 skipped
    assert [r["id"] for r in rat] == [f"train-{k:06d}" for k in (1, 2, 3, 5, 6, 7)]
    assert meta["skipped"]["rationale"] == 3 and meta["rejected"]["rationale"] == 0
    by_id = {r["id"]: r for r in rat}
    assert by_id["train-000003"]["question"] == "Context: hint 3\nWhich is 3?\nOptions: (A) yes (B) no"
    assert by_id["train-000003"]["answer"] == "no" and by_id["train-000003"]["rationale"] == "Because 3."
    assert by_id["train-000001"]["family"] == "natural science"


def test_any_dataset_by_column_mapping_from_a_folder_of_parquet_files(tmp_path):
    folder = tmp_path / "mine" / "data"
    folder.mkdir(parents=True)
    for split, n in (("train", 14), ("validation", 5)):
        datasets.Dataset.from_dict(
            {"qid": [f"{split}-{k}" for k in range(n)], "img": [{"bytes": png(k), "path": None} for k in range(n)],
             "q": [f"q{k}?" for k in range(n)], "a": [str(k) for k in range(n)], "why": [f"w{k}." for k in range(n)]},
            features=datasets.Features({"qid": datasets.Value("string"), "img": IMAGE, "q": datasets.Value("string"),
                                        "a": datasets.Value("string"), "why": datasets.Value("string")}),
        ).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    cols = "{id: qid, image: img, question: q, answer: a, rationale: why}"
    out = tmp_path / "out"
    out.mkdir()
    world.build_world(cfg_for(tmp_path / "mine", "columns", **{"data.files.columns": cols,
                                                               "data.max_leak_frac": "1"}), out, "k")
    ev = read_records(out / "eval.parquet")
    assert [r["id"] for r in ev] == [f"validation-{k}" for k in range(5)]
    assert ev[2]["question"] == "q2?" and ev[2]["answer"] == "2" and ev[2]["image"] == png(2)


def test_a_missing_split_or_dataset_names_what_to_fix(tmp_path):
    datasets.DatasetDict({"train": aokvqa(12, "t")}).save_to_disk(tmp_path / "only-train")
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: \['train'\]\)"):
        world.build_world(cfg_for(tmp_path / "only-train", "aokvqa"), tmp_path / "o1", "k1")
    with pytest.raises(DataError, match="data.hf.dataset: cannot open 'no-such-org/no-such-set'"):
        world.build_world(cfg_for(Path("no-such-org/no-such-set"), "aokvqa"), tmp_path / "o2", "k2")
    with pytest.raises(ValueError, match="data.world='hf' needs data.hf.dataset"):
        load_config("configs/smoke.yaml", ["data.world=hf"])


def test_the_world_key_follows_a_local_dataset(tmp_path):
    datasets.DatasetDict({"train": aokvqa(12, "t"), "validation": aokvqa(6, "v")}).save_to_disk(tmp_path / "a")
    cfg = cfg_for(tmp_path / "a", "aokvqa")
    before = world.source_files(cfg)
    datasets.DatasetDict({"train": aokvqa(13, "t"), "validation": aokvqa(6, "v")}).save_to_disk(tmp_path / "b")
    assert world.source_files(cfg_for(tmp_path / "b", "aokvqa")) != before
    assert world.source_files(cfg) == before


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_a_single_data_file_is_one_split_that_ours_read_in_turn(fmt, tmp_path, capsys):
    n = 15
    cols = {"qid": [f"r{k}" for k in range(n)], "q": [f"q{k}?" for k in range(n)], "a": [str(k) for k in range(n)],
            "why": [f"w{k}." for k in range(n)]}
    path = tmp_path / f"mine.{fmt}"
    if fmt == "parquet":  # images as bytes, the Image feature kept in the file's metadata
        feats = datasets.Features({"qid": datasets.Value("string"), "img": IMAGE, "q": datasets.Value("string"),
                                   "a": datasets.Value("string"), "why": datasets.Value("string")})
        datasets.Dataset.from_dict({**cols, "img": [{"bytes": png(k), "path": None} for k in range(n)]},
                                   features=feats).to_parquet(path)
    else:  # images as paths
        for k in range(n):
            (tmp_path / f"{k}.png").write_bytes(png(k))
        df = pd.DataFrame({**cols, "img": [str(tmp_path / f"{k}.png") for k in range(n)]})
        df.to_csv(path, index=False) if fmt == "csv" else df.to_json(path, orient="records", lines=True)
    spec = "{id: qid, image: img, question: q, answer: a, rationale: why}"
    cfg = cfg_for(path, "columns", **{"data.files.columns": spec})  # eval_split stays 'validation'
    out = tmp_path / "out"
    out.mkdir()
    meta = world.build_world(cfg, out, "k")
    assert "is one file: rationale, pool and eval read consecutive rows of it" in capsys.readouterr().out
    ids = {s: [r["id"] for r in read_records(out / f"{s}.parquet")] for s in ("rationale", "pool", "eval")}
    assert ids == {"rationale": [f"r{k}" for k in range(6)], "pool": [f"r{k}" for k in range(6, 10)],
                   "eval": [f"r{k}" for k in range(10, 15)]}
    assert meta["leakage"] == {"eval~rationale": 0, "eval~pool": 0, "eval~scorer": 0}
    ev = read_records(out / "eval.parquet")
    assert ev[0]["answer"] == "10" and ev[0]["image"] == png(10) and ev[0]["response"] == "w10. Answer: 10."
    if fmt != "parquet":  # the world key follows the file's bytes
        before = world.source_files(cfg)
        path.write_text(path.read_text() + "\n")
        assert world.source_files(cfg) != before


def test_a_single_file_of_an_unknown_format_is_named(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(DataError, match=r"data.hf.dataset: .*mine.txt' is a file of unknown format '.txt'"):
        world.build_world(cfg_for(tmp_path / "mine.txt", "columns"), tmp_path, "k")
