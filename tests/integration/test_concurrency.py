"""Concurrent pipeline runs on one state dir: three real `src run` processes at once, two with
the same config (each stage is built once and shared) and one with another seed (its own
stage folders, nothing shared)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import run_env
from tests.integration.smoke import ROOT, stage_digests

pytestmark = pytest.mark.slow  # minutes of real runs: `make test` runs them, plain `pytest` does not


def test_three_runs_at_once_share_what_they_may_and_nothing_else(base_model, tmp_path):
    state = tmp_path / "state"
    procs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cmd = [sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml",
               f"model.base={base_model}", f"seed={seed}", "iterate.iterations=1",
               "runtime.num_threads=1", "--summary-json", str(tmp_path / f"{name}.json")]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=run_env(state), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    logs = {n: p.communicate(timeout=900)[0] for n, p in procs.items()}
    for n, p in procs.items():
        assert p.returncode == 0, (n, logs[n][-3000:])
    summary = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in procs}
    def evals(n: str) -> list[dict]:
        return [{k: v for k, v in it["metrics"].items() if k.startswith("eval/")}
                for it in summary[n]["iterations"]]
    assert evals("a") == evals("b") and evals("a") != evals("c")  # same config, same results
    # a and b: each stage was built by exactly one of them; the other waited and reused it
    for stage in ("world", "rationale_sft", "search", "dpo"):
        builders = [n for n in ("a", "b") if f"[{stage}]" in logs[n]]
        assert len(builders) == 1, (stage, builders)
    # c (another seed) has keys of its own: the store holds both runs' stages, none shared
    n_ab = summary["a"]["timing"]["built"] + summary["a"]["timing"]["reused"]
    n_c = summary["c"]["timing"]["built"] + summary["c"]["timing"]["reused"]
    assert len(stage_digests(state)) == n_ab + n_c
    assert not list((state / "stages").glob("*/.tmp-*"))
