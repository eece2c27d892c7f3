"""The store's crash and concurrency guarantees, on plain functions: atomic outputs, digests
checked on read, one writer per key across processes, shard checkpoints that resume."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from infra import store


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))


def _write(out: Path, text: str = "rows") -> dict:
    (out / "data.txt").write_text(text)
    return {"n": 1}


def test_a_crash_inside_a_build_leaves_nothing_that_looks_done():
    def boom(out: Path):
        (out / "data.txt").write_text("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        store.produce("s", "k", boom)
    assert store.lookup("s", "k") is None
    assert not list((store.state_dir() / "stages" / "s").iterdir())  # temp folder removed
    ref = store.produce("s", "k", _write)
    assert store.lookup("s", "k") == ref and ref["meta"] == {"n": 1}


def test_a_digest_mismatch_is_not_done_and_is_rebuilt():
    ref = store.produce("s", "k", _write)
    (Path(ref["path"]) / "data.txt").write_text("tampered")
    assert store.lookup("s", "k") is None
    again = store.produce("s", "k", _write)
    assert (Path(again["path"]) / "data.txt").read_text() == "rows" and again["digest"] == ref["digest"]


def test_a_missing_manifest_is_not_done():
    ref = store.produce("s", "k", _write)
    (Path(ref["path"]) / store.MANIFEST).unlink()
    assert store.lookup("s", "k") is None


def _slow_build(args: tuple[str, str, str, str]) -> str:
    state, log, key, text = args
    os.environ["SRC_STATE_DIR"] = state

    def build(out: Path):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # the other process arrives while this one writes
        return _write(out, text)
    return json.dumps(store.produce("s", key, build))


def test_two_processes_with_the_same_key_build_once_and_share_the_output(tmp_path):
    log = tmp_path / "builds.log"
    state = os.environ["SRC_STATE_DIR"]
    with mp.get_context("spawn").Pool(2) as pool:
        refs = pool.map(_slow_build, [(state, str(log), "same", "rows")] * 2)
    assert len(log.read_text().split()) == 1  # the second waited on the lock, then reused
    assert json.loads(refs[0]) == json.loads(refs[1])


def test_two_processes_with_different_keys_do_not_touch_each_other(tmp_path):
    state = os.environ["SRC_STATE_DIR"]
    args = [(state, str(tmp_path / "a.log"), "key-a", "a"), (state, str(tmp_path / "b.log"), "key-b", "b")]

    with mp.get_context("spawn").Pool(2) as pool:
        refs = [json.loads(r) for r in pool.map(_slow_build, args)]
    assert refs[0]["path"] != refs[1]["path"]
    assert [(Path(r["path"]) / "data.txt").read_text() for r in refs] == ["a", "b"]


def test_shards_resume_after_a_kill_and_equal_an_uninterrupted_run():
    items = list(range(10))
    calls: list[list[int]] = []

    def run(part, progress):
        calls.append(list(part))
        if len(calls) == 3 and fail[0]:
            raise KeyboardInterrupt  # stands in for SIGKILL: the process stops mid-stage
        return [{"item": i, "sq": i * i} for i in part]
    fail = [True]
    with pytest.raises(KeyboardInterrupt):
        store.sharded("search", "k", items, 4, run)
    fail[0] = False
    calls.clear()
    seen = []
    out = store.sharded("search", "k", items, 4, run, progress=lambda d, t, *e: seen.append((d, t)))
    assert calls == [[8, 9]]  # the two finished shards were read back, not recomputed
    assert out == [{"item": i, "sq": i * i} for i in items]
    assert seen[-1] == (10, 10)
    store.drop_partial("search", "k")
    assert not (store.state_dir() / "partial" / "search" / "k").exists()
