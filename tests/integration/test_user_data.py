"""Your own data, end to end: `src run` on a JSONL folder with images, an A-OKVQA-shaped dataset
and a ScienceQA-shaped one (data/examples.py writes them, without scene facts), through
rationale SFT, search, pairwise scoring, curation, DPO, evaluation and the report.

Without scene facts, accuracy comes from the gold answer and consistency/factuality from the
teacher (a real HTTP server here: tools/fake_teacher.py), never from the R-Scorer curation
uses; without a teacher they are n/a. The base model's short answers have neither (n/a, not 0).
The committed judges and reader know only the shapes world: on your data they are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.records import read_records
from data import examples
from tests.integration.smoke import children, client_for, src_run
from tools.fake_teacher import FakeTeacher, examples_index, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher() -> list[str]:
    """The overrides of a teacher that knows data/examples.py's scenes (always right)."""
    server, url = start_server(FakeTeacher(examples_index(120, 64)))
    yield [f"teacher.endpoint={url}", "teacher.model=fake"]
    server.shutdown()

# one iteration at the smallest sizes that still run every stage
SMALL = ["iterate.iterations=1", "iterate.prompts_per_iteration=12", "data.n_rationale=60", "data.n_pool=24",
         "data.n_eval=16", "scorer.n_train_items=40", "scorer.n_heldout=8", "rationale_sft.max_steps=12",
         "dpo.max_steps=2", "eval.max_new_tokens=48", "runtime.num_threads=1", "tracking.experiment=src-own"]


def run_own(tmp_path: Path, data_args: list[str], *extra: str) -> dict:
    state = tmp_path / "state"
    summary = tmp_path / "summary.json"
    proc, _ = src_run(state, *data_args, *SMALL, *extra, "--summary-json", str(summary))
    return {"state": state, "out": proc.stdout + proc.stderr, "stdout": proc.stdout,
            "summary": json.loads(summary.read_text())}


def check_run(run: dict, graded: bool = True) -> dict:
    """What every own-data run must show; returns the last iteration's metrics."""
    out, summary = run["stdout"], run["summary"]
    base_line = next(ln for ln in out.split("base model (short answers")[1].splitlines()
                     if ln.startswith("all "))  # the base table's total row
    assert base_line.split()[0] == "all" and base_line.split()[-2:] == ["n/a", "n/a"], base_line
    assert "consistency" not in json.dumps(summary["base_metrics"])  # not logged as a number
    last = summary["iterations"][-1]["metrics"]
    assert [r["iteration"] for r in summary["iterations"]] == [0, 1]
    assert 0.0 <= last["eval/accuracy"] <= 1.0
    if graded:  # the teacher measured them: numbers, and the run says who measured
        assert 0.0 <= last["eval/consistency"] <= 1.0 and 0.0 <= last["eval/factuality"] <= 1.0
        assert "graded by the teacher fake" in out
    else:
        assert last.get("eval/consistency") is None and "consistency and factuality: n/a" in out
    assert Path(summary["report"]).is_file()
    client = client_for(run["state"])
    exp = client.get_experiment_by_name("src-own")
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    kids = children(client, exp, parent.info.run_id)
    assert sorted(kids) == [0, 1] and "eval/accuracy" in kids[1].data.metrics
    world = next((run["state"] / "stages" / "world").iterdir())
    ev = read_records(world / "eval.parquet")
    assert ev and all(r["facts"] is None for r in ev)  # nothing of the shapes world leaked in
    return last


def test_a_jsonl_folder_of_your_own_runs_to_the_end(tmp_path, teacher):
    # 3 bad rows among 67 (4.5%, under data.max_reject_frac): left out, named, and the run goes on
    args = examples.write_jsonl(tmp_path / "mine", n_eval=64, bad_rows=True)
    run = run_own(tmp_path, args, "scorer.model=train", "scorer.train_steps=20", *teacher)
    check_run(run)
    assert "[world] eval: 64 of 67 rows valid, 3 rejected" in run["out"]
    assert "rejected rows: eval 3; file, row, id, field and reason of each in" in run["stdout"]
    rejected = read_records(Path(run["stdout"].split("reason of each in ")[1].split()[0]))
    assert [(r["id"], r["field"]) for r in rejected] == [
        ("bad-path", "image"), ("bad-question", "question"), ("bad-rationale", "rationale")]


def test_an_aokvqa_shaped_dataset_runs_to_the_end_with_a_judge_trained_on_it(tmp_path):
    args = examples.write_aokvqa(tmp_path / "aokvqa")
    run = run_own(tmp_path, args, "scorer.model=train", "scorer.train_steps=20")
    check_run(run, graded=False)  # no teacher: consistency and factuality are n/a, not the judge's
    assert "[scorer] 20/20" in run["out"]  # the judge trained on fact-free perturbations
    world = next((run["state"] / "stages" / "world").iterdir())
    r = read_records(world / "eval.parquet")[0]
    assert isinstance(r["choices"], list) and len(r["choices"]) >= 2  # lists, not numpy arrays


def test_a_scienceqa_shaped_dataset_runs_to_the_end(tmp_path):
    args = examples.write_scienceqa(tmp_path / "scienceqa")
    run = run_own(tmp_path, args, "scorer.model=train", "scorer.train_steps=20")
    check_run(run, graded=False)
    assert "skipped (text-only)" in run["out"]
