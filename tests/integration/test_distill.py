"""Your model, your judge: `src run` distils the claim checker and the reader from a teacher
served over HTTP (tools/fake_teacher.py: the exact scorer's verdicts, some made wrong), on the
built-in world and on an A-OKVQA-shaped dataset, end to end; the guards that keep a shapes
judge off other data; a teacher that is down.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from data import examples
from data.records import read_records
from tests.conftest import run_env
from tests.integration.smoke import ROOT, client_for, src_run
from tools.fake_teacher import FakeTeacher, config_index, examples_index, start_server

pytestmark = pytest.mark.slow

DISTIL = ["scorer.model=distill", "scorer.mode=claims", "scorer.reader=distill", "scorer.train_steps=30",
          "scorer.reader_train_steps=10", "iterate.iterations=1", "runtime.num_threads=1"]
SMALL = ["iterate.prompts_per_iteration=12", "data.n_rationale=60", "data.n_pool=24", "data.n_eval=16",
         "scorer.n_train_items=40", "rationale_sft.max_steps=12", "dpo.max_steps=2", "eval.max_new_tokens=48",
         "tracking.experiment=src-distil"]


@pytest.fixture(scope="module")
def teacher():
    """A teacher that knows the smoke world's and the example datasets' scenes; 10% of its
    claim and read verdicts are wrong."""
    fake = FakeTeacher({**config_index("configs/smoke.yaml"), **examples_index(120, 24)}, wrong=0.1)
    server, url = start_server(fake)
    yield fake, [f"teacher.endpoint={url}", "teacher.model=fake"]
    server.shutdown()


def _stage(state: Path, name: str) -> Path:
    found = [p for p in (state / "stages" / name).iterdir() if (p / "manifest.json").is_file()]
    assert len(found) == 1, found
    return found[0]


def test_the_judge_and_reader_are_distilled_on_the_builtin_world_and_a_rerun_asks_nothing(tmp_path, teacher):
    fake, over = teacher
    state = tmp_path / "state"
    proc, _ = src_run(state, *DISTIL, *over, "--summary-json", str(tmp_path / "s.json"))
    out = proc.stdout + proc.stderr
    d = _stage(state, "distil")
    info = json.loads((d / "judge" / "src_judge.json").read_text())
    assert (info["mode"], info["world"]) == ("claims", "shapes")
    assert json.loads((d / "judge" / "reader" / "manifest.json").read_text())["world"] == "shapes"
    m = json.loads((d / "metrics.json").read_text())
    assert m["distill/claims"] > 0 and m["distill/reads"] > 0 and m["distill/teacher_cache_hits"] == 0
    assert 0.75 <= m["distill/teacher_claims_exact"] < 1.0  # the 10% it gets wrong, on purpose
    claims = read_records(d / "teacher_claims.parquet")
    assert all(p in (0.1, 0.9) for p in (c["p_yes"] for c in claims))  # soft labels from logprobs
    score = _stage(state, "score")
    assert (score / "marks.parquet").is_file() and (score / "reader.parquet").is_file()
    summary = json.loads((tmp_path / "s.json").read_text())
    client = client_for(state)
    files = {f.path for f in client.list_artifacts(summary["parent_run_id"], "scorer")}
    assert "scorer/reader" in files  # the distilled reader travels with the judge (resume, compare)
    assert "[distil] teacher fake:" in out
    # a changed checker schedule: a new distil stage, and every teacher answer from the cache
    asked = fake.requests
    proc, _ = src_run(state, *DISTIL, *over, "scorer.train_steps=31")
    line = next(ln for ln in (proc.stdout + proc.stderr).splitlines() if "[distil] teacher fake:" in ln)
    assert f"{int(m['distill/teacher_asked'])} answers from the cache, 0 asked" in line, line
    assert fake.requests == asked


def test_an_aokvqa_shaped_dataset_gets_a_distilled_judge_teacher_references_and_a_teacher_grade(tmp_path, teacher):
    _, over = teacher
    state = tmp_path / "state"
    args = examples.write_aokvqa(tmp_path / "aokvqa")
    summary = tmp_path / "s.json"
    proc, _ = src_run(state, *args, *DISTIL, *SMALL, *over, "scorer.reference=teacher", "--summary-json", str(summary))
    out = proc.stdout + proc.stderr
    world = _stage(state, "world")
    pool = read_records(world / "pool.parquet")
    assert all(r["reference"] and r["reference"].startswith("The image shows") for r in pool)  # described
    assert all(r["facts"] is None for r in pool)  # nothing of the shapes world leaked in
    info = json.loads((_stage(state, "distil") / "judge" / "src_judge.json").read_text())
    assert info["world"] == "hf"
    last = json.loads(summary.read_text())["iterations"][-1]["metrics"]
    assert 0.0 <= last["eval/consistency"] <= 1.0 and 0.0 <= last["eval/factuality"] <= 1.0
    assert "graded by the teacher fake" in out
    graded = [json.loads((p / "metrics.json").read_text()) for p in (state / "stages" / "evaluate").iterdir()
              if (p / "metrics.json").is_file()]
    assert sorted(g["measured_by"] or "" for g in graded) == ["", "teacher fake", "teacher fake"]  # base: n/a
    assert "curate/kept_frac" in last
    page = Path(json.loads(summary.read_text())["report"]).read_text()
    assert "consistency and factuality graded by" in page and "teacher fake" in page


def _src(state: Path, *args: str, config: str = "configs/smoke.yaml") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "run", "--config", config, *args], cwd=ROOT,
                          env=run_env(state), capture_output=True, text=True, timeout=300)


def test_the_builtin_config_on_other_data_is_one_line_and_exit_2_before_any_compute(tmp_path):
    args = examples.write_aokvqa(tmp_path / "aokvqa", n_train=8, n_eval=4)
    state = tmp_path / "state"
    proc = _src(state, *args, config="configs/builtin.yaml")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "data.world=shapes, not hf" in errors[0] and "scorer.model=distill" in errors[0]
    assert not (state / "stages").exists()  # nothing was computed
    # the committed reader alone is refused too, naming scorer.reader
    proc = _src(state, *args, "scorer.model=train", "scorer.reader=builtin")
    assert proc.returncode == 2 and "scorer.reader: 'builtin' was trained to read data.world=shapes" in proc.stderr


def test_a_teacher_that_is_down_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _src(tmp_path / "state", *DISTIL, f"teacher.endpoint=http://127.0.0.1:{port}/v1", "teacher.model=fake")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert f"teacher.endpoint http://127.0.0.1:{port}/v1 is not reachable" in errors[0]
    assert "scorer.model=distill" in errors[0]
