"""Bad input gets a clear answer: a corpus of bad rows (one per case) with the expected reasons,
the three table formats, the column mapping, and the share that stops a run."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from data.config import ConfigError, load_config
from data.files import load_split, read_table
from data.scoring import gold_answer, parse_response
from data.validate import DataError, Limits, check_image, check_lengths, check_share, validate_rows


def png(w: int = 8, h: int = 8, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def png_with_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (PIL cannot write a zero-size image itself)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


GOOD = {"id": "q1", "image": png(), "question": "What colour is the box?", "answer": "red",
        "rationale": "The box is red.", "reference": "A red box."}

# (name, row changes, field, substring of the reason): one row per bad-input case of issue 6
CASES = [
    ("missing image", {"image": None}, "image", "missing"),
    ("image file not found", {"image": "nope/absent.png"}, "image", "file not found"),
    ("image path is a folder", {"image": "."}, "image", "file not found"),
    ("corrupt image bytes", {"image": b"\x89PNG\r\n\x1a\nnot really a png"}, "image", "not a readable image"),
    ("truncated image", {"image": png(64, 64)[:60]}, "image", "not a readable image"),
    ("zero-byte image", {"image": b""}, "image", "empty file"),
    ("zero-size image", {"image": png_with_header(0, 5)}, "image", "not a readable image"),
    ("absurdly large image", {"image": png_with_header(30000, 30000)}, "image", "too large"),
    ("image of a wrong type", {"image": 12}, "image", "wrong type int"),
    ("empty question", {"question": "   "}, "question", "empty"),
    ("missing question", {"question": None}, "question", "missing"),
    ("non-text question", {"question": 42}, "question", "wrong type int"),
    ("missing answer", {"answer": None}, "answer", "missing"),
    ("empty answer", {"answer": ""}, "answer", "empty"),
    ("answer of a wrong type", {"answer": ["red"]}, "answer", "wrong type list"),
    ("missing id", {"id": None}, "id", "missing"),
    ("id of a wrong type", {"id": 1.5}, "id", "wrong type float"),
    ("NaN id (a pandas hole)", {"id": float("nan")}, "id", "missing"),
    ("rationale missing where required", {"rationale": None}, "rationale", "missing"),
    ("rationale of a wrong type", {"rationale": 3}, "rationale", "wrong type int"),
    ("choices not a list of text", {"choices": [1, 2]}, "choices", "wrong type"),
]


@pytest.mark.parametrize("name,change,field,reason", CASES, ids=[c[0] for c in CASES])
def test_each_bad_row_is_rejected_with_its_field_and_reason(name, change, field, reason, tmp_path):
    rows = [dict(GOOD, id="ok-0"), {**GOOD, "id": "bad", **change}, dict(GOOD, id="ok-2")]
    good, bad = validate_rows(rows, split="pool", file="t.jsonl", image_dir=tmp_path, need_rationale=True)
    assert [g["id"] for g in good] == ["ok-0", "ok-2"], name
    assert len(bad) == 1, bad
    assert bad[0]["row"] == 1 and bad[0]["field"] == field and reason in bad[0]["reason"], bad[0]
    assert bad[0]["file"] == "t.jsonl" and bad[0]["split"] == "pool"


def test_duplicate_ids_reject_the_later_row_and_name_the_first():
    good, bad = validate_rows([GOOD, dict(GOOD), dict(GOOD, id="q2")], split="eval", file="f")
    assert [g["id"] for g in good] == ["q1", "q2"]
    assert bad == [{"split": "eval", "file": "f", "row": 1, "id": "q1", "field": "id",
                    "reason": "duplicate of row 0"}]


def test_a_row_with_two_faults_is_dropped_once_and_reported_twice():
    good, bad = validate_rows([dict(GOOD, question="", answer=None)], split="eval", file="f")
    assert good == [] and sorted(b["field"] for b in bad) == ["answer", "question"]


def test_a_valid_row_keeps_the_file_bytes_and_text_ids(tmp_path):
    (tmp_path / "a.png").write_bytes(png(5, 7))
    good, bad = validate_rows([dict(GOOD, id=7, image="a.png", answer=3)], split="eval", file="f",
                              image_dir=tmp_path)
    assert bad == [] and good[0]["id"] == "7" and good[0]["answer"] == "3"
    assert good[0]["image"] == png(5, 7)
    hf = validate_rows([dict(GOOD, image={"bytes": png(), "path": None})], split="eval", file="f")[0]
    assert hf[0]["image"] == png()


def test_choices_as_a_list_or_a_json_cell():
    for cell in (["red", "blue"], '["red", "blue"]'):
        good, bad = validate_rows([dict(GOOD, choices=cell)], split="eval", file="f")
        assert bad == [] and good[0]["choices"] == ["red", "blue"]
    good, bad = validate_rows([dict(GOOD, choices="red or blue")], split="eval", file="f")
    assert good == [] and bad[0]["field"] == "choices"


def test_a_multiple_choice_gold_is_one_of_the_options_by_letter_or_text():
    good, bad = validate_rows([dict(GOOD, id="a", answer="B", choices=["green", "Red"]),
                               dict(GOOD, id="b", answer="red", choices=["green", "Red"]),
                               dict(GOOD, id="c", answer="blue", choices=["green", "Red"])], split="eval", file="f")
    assert [(g["id"], g["answer"]) for g in good] == [("a", "Red"), ("b", "Red")]  # the option as written
    assert [(b["id"], b["field"]) for b in bad] == [("c", "answer")] and "none of the choices" in bad[0]["reason"]


def test_image_limits_are_config():
    assert check_image(png(20, 20), Limits(max_image_pixels=399)).startswith("image too large: 20x20")
    assert check_image(png(20, 20), Limits(max_image_bytes=10)).startswith("file too large")
    assert check_image(png(20, 20), Limits()) is None


def _write(tmp_path: Path, fmt: str, rows: list[dict]) -> Path:
    path = tmp_path / f"table.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_tables_with_a_column_mapping_and_an_image_folder(fmt, tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(4):
        (tmp_path / "img" / f"{i}.png").write_bytes(png(6 + i, 6))
    rows = [{"qid": f"00{i}", "file": f"{i}.png", "q": f"question {i}?", "gold": "yes"} for i in range(4)]
    rows[2]["file"] = "missing.png"
    path = _write(tmp_path, fmt, rows)
    mapping = {"id": "qid", "image": "file", "question": "q", "answer": "gold"}
    recs, bad, n = load_split(path, "eval", mapping, tmp_path / "img", False, Limits())
    assert [r["id"] for r in recs] == ["000", "001", "003"]  # ids keep their spelling
    assert recs[0]["short_response"] == "Answer: yes." and recs[0]["image"] == png(6, 6)
    reasons = {(b["row"], b["field"]) for b in bad}
    assert (2, "image") in reasons
    if fmt == "jsonl":  # the malformed last line is a rejected row, not a crash
        assert n == 5 and (4, "row") in reasons
    else:
        assert n == 4 and len(bad) == 1


def test_a_mapped_column_the_file_lacks_is_named(tmp_path):
    path = _write(tmp_path, "parquet", [{"id": "a", "image": png(), "question": "q?", "answer": "x"}])
    with pytest.raises(DataError, match=r"column 'gold' for field 'answer' not found.*data.files.columns.answer"):
        load_split(path, "eval", {"answer": "gold"}, None, False, Limits())
    with pytest.raises(DataError, match="unknown field"):
        load_split(path, "eval", {"colour": "c"}, None, False, Limits())


def test_unreadable_tables_are_named(tmp_path):
    with pytest.raises(DataError, match="unknown table format"):
        read_table(tmp_path / "t.txt")
    (tmp_path / "t.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"t.parquet: cannot read the table"):
        read_table(tmp_path / "t.parquet")


def test_the_share_of_bad_rows_stops_with_the_file_and_first_reasons():
    bad = [{"row": i, "id": f"r{i}", "field": "image", "reason": "missing"} for i in range(6)]
    bad[4:4] = [{"row": 3, "id": "r3", "field": "question", "reason": "empty"}]
    check_share(200, bad[:5], 0.05, "data.files.pool (p.jsonl)", "rep.parquet")  # 2.0%: go on
    with pytest.raises(DataError) as e:
        check_share(100, bad, 0.05, "data.files.pool (p.jsonl)", "rep.parquet")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == ("data.files.pool (p.jsonl): 6 of 100 rows rejected (6.0%, above data.max_reject_frac=0.05); "
                   "first: row 0 (id 'r0') image: missing; row 3 (id 'r3') question: empty; "
                   "all reasons in rep.parquet")  # distinct faults: the same one on every row shows once


def test_files_config_names_the_missing_table(tmp_path):
    with pytest.raises(ConfigError, match="needs data.files.rationale"):
        load_config(None, ["data.world=files"])
    t = tmp_path / "t.jsonl"
    t.write_text("")
    with pytest.raises(ConfigError, match=r"data.files.eval: '.*nope.jsonl' does not exist"):
        load_config(None, ["data.world=files", f"data.files.rationale={t}", f"data.files.pool={t}",
                           f"data.files.eval={tmp_path / 'nope.jsonl'}"])


# --- numeric golds, rationale tails, image paths, lengths (issue "Your own data, end to end") ---

def _numbers_table(tmp_path: Path, fmt: str) -> Path:
    (tmp_path / "a.png").write_bytes(png())
    answers = [2.0, None, 2.5, 3.0, float("inf")]
    rows = [{"id": f"n{i}", "image": "a.png", "question": "How many?", "answer": a} for i, a in enumerate(answers)]
    path = tmp_path / f"t.{fmt}"
    if fmt == "jsonl":  # JSON numbers 2.0 and Infinity (Python's json writes and reads them)
        rows.append({"id": "n5", "image": "a.png", "question": "How many?", "answer": float("-inf")})
        rows.append({"id": "n6", "image": "a.png", "question": "How many?", "answer": float("nan")})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":  # cells as text: "2.0", "", "2.5", "3.0", "inf"
        pd.DataFrame(rows).to_csv(path, index=False)
    else:  # a float column: the one null made pandas store 2 as 2.0
        pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_integral_float_golds_become_integers_and_match_a_model_answer(fmt, tmp_path):
    recs, bad, _ = load_split(_numbers_table(tmp_path, fmt), "eval", {}, None, False, Limits())
    by_id = {r["id"]: r["answer"] for r in recs}
    assert by_id["n0"] == "2" and by_id["n2"] == "2.5" and by_id["n3"] == "3"
    assert parse_response("Two of them. Answer: 2.").answer == gold_answer(by_id["n0"])
    assert parse_response("Answer: 2.5.").answer == gold_answer(by_id["n2"])
    reasons = {b["id"]: (b["field"], b["reason"]) for b in bad}
    assert reasons["n1"][0] == "answer" and reasons["n1"][1] in ("missing", "empty")
    assert reasons["n4"] == ("answer", "not a finite number (inf)")
    if fmt == "jsonl":
        assert reasons["n5"] == ("answer", "not a finite number (-inf)") and reasons["n6"] == ("answer", "missing")


def test_integral_float_ids_are_integers():
    good, bad = validate_rows([dict(GOOD, id=7.0), dict(GOOD, id=float("inf"))], split="eval", file="f")
    assert [g["id"] for g in good] == ["7"] and bad[0]["field"] == "id" and "wrong type float" in bad[0]["reason"]


TAILS = [  # (rationale, gold, choices) -> (rationale kept, rejection substring)
    ("The box is red. Answer: red.", "red", None, "The box is red.", None),
    ("The box is red.\nanswer: RED", "red", None, "The box is red.", None),
    ("Two boxes. Answer: 2.0", "2", None, "Two boxes.", None),
    ("It is red. Answer: (B)", "B", ["green", "red"], "It is red.", None),
    ("It is red. Answer: red.", "B", ["green", "red"], "It is red.", None),
    ("The box is red. Answer: blue.", "red", None, None, "ends with 'Answer: blue', but the gold answer is 'red'"),
    ("It is green. Answer: A.", "B", ["green", "red"], None, "ends with 'Answer: A', but the gold answer is 'red'"),
    ("The answer: red is what I see.", "red", None, "The answer: red is what I see.", None),  # not a tail
]


@pytest.mark.parametrize("rationale,gold,choices,kept,reason", TAILS, ids=[t[0] for t in TAILS])
def test_a_rationale_ending_in_its_answer_loses_that_tail(rationale, gold, choices, kept, reason, tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    row = {"id": "r", "image": "a.png", "question": "Colour?", "answer": gold, "rationale": rationale}
    if choices:
        row["choices"] = choices
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n")
    recs, bad, _ = load_split(path, "rationale", {}, None, True, Limits())
    if reason is None:
        assert bad == [] and recs[0]["rationale"] == kept
        assert recs[0]["response"] == f"{kept} Answer: {recs[0]['answer']}."  # one answer, not two
    else:
        assert recs == [] and [(b["field"], b["reason"]) for b in bad] == [("rationale", reason)]


def test_a_rationale_that_only_states_the_answer_is_missing(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "r", "image": "a.png", "question": "Colour?", "answer": "red",
                                "rationale": "Answer: red."}) + "\n")
    recs, bad, _ = load_split(path, "rationale", {}, None, True, Limits())
    assert recs == [] and (bad[0]["field"], bad[0]["reason"]) == ("rationale", "missing (it only states the answer)")
    recs, bad, _ = load_split(path, "pool", {}, None, False, Limits())  # not required: no rationale
    assert bad == [] and recs[0]["rationale"] is None and recs[0]["response"] is None


def test_image_paths_may_not_leave_the_image_folder(tmp_path):
    folder, outside = tmp_path / "data", tmp_path / "elsewhere"
    (folder / "img").mkdir(parents=True)
    outside.mkdir()
    (folder / "img" / "in.png").write_bytes(png())
    (outside / "out.png").write_bytes(png())
    (folder / "img" / "link.png").symlink_to(outside / "out.png")
    images = {"rel": "in.png", "abs-in": str(folder / "img" / "in.png"), "up": "../../elsewhere/out.png",
              "abs-out": str(outside / "out.png"), "link": "link.png"}
    path = folder / "t.jsonl"
    path.write_text("".join(json.dumps({"id": k, "image": v, "question": "q?", "answer": "a"}) + "\n"
                            for k, v in images.items()))
    recs, bad, _ = load_split(path, "eval", {}, folder / "img", False, Limits())
    assert [r["id"] for r in recs] == ["rel", "abs-in"]
    assert {b["id"] for b in bad} == {"up", "abs-out", "link"} and {b["field"] for b in bad} == {"image"}
    assert all("leaves the image folder" in b["reason"] and "data.files.allow_outside_image_dir" in b["reason"]
               for b in bad)
    recs, bad, _ = load_split(path, "eval", {}, folder / "img", False, Limits(allow_outside_image_dir=True))
    assert len(recs) == 5 and bad == []
    # no image_dir: the table's own folder is the image folder ("img/in.png" inside, "../x" outside)
    path.write_text(json.dumps({"id": "a", "image": "img/in.png", "question": "q?", "answer": "a"}) + "\n"
                    + json.dumps({"id": "b", "image": "../elsewhere/out.png", "question": "q?", "answer": "a"}) + "\n")
    recs, bad, _ = load_split(path, "eval", {}, None, False, Limits())
    assert [r["id"] for r in recs] == ["a"] and bad[0]["id"] == "b" and "leaves the image folder" in bad[0]["reason"]


def test_rows_too_long_for_the_context_are_rejected_with_their_length():
    recs = [{"_row": i, "id": f"r{i}", "question": q, "rationale": r, "short_response": "Answer: x.",
             "response": f"{r} Answer: x." if r else None} for i, (q, r) in
            enumerate([("short q", "short r"), ("q " * 60, None), ("short q", "r " * 60)])]
    def words(texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]
    good, bad = check_lengths(recs, words, 10, 50, "pool", "p.jsonl")
    assert [g["id"] for g in good] == ["r0"]
    assert [(b["row"], b["field"]) for b in bad] == [(1, "question"), (2, "rationale")]
    assert bad[0]["reason"] == ("too long for the model: 72 tokens (question 60, answer 2, image and prompt 10) "
                                "above its context of 50 tokens")
    assert bad[1]["file"] == "p.jsonl" and "rationale and answer 62" in bad[1]["reason"]
