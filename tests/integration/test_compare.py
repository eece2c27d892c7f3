"""`src compare` on a real MLflow SQLite store holding two synthetic pipeline runs.

The runs follow the layout of infra/layout.py (parent `src.role=pipeline`, children
`src.role=iteration`, `src.iteration=<t>`, metrics at step t); compare reads nothing else, so
no model is trained here.
"""

from __future__ import annotations

import argparse
import base64
import csv

import pytest

from cli.compare import add_commands, collect, format_table, plot, render_html

EXPERIMENT = "src-compare-test"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# run A: iterations 0-2; run B: iterations 0-1. Iteration 0 is SFT only: no judge/curate/dpo.
RUN_A = {
    0: {"eval/accuracy": 0.50, "eval/accuracy_se": 0.020, "eval/consistency": 0.70,
        "eval/consistency_se": 0.010, "eval/factuality": 0.40, "eval/factuality_se": 0.030,
        "eval/format_rate": 0.90, "eval/mean_length": 31.0, "eval/family/count/accuracy": 0.5},
    1: {"eval/accuracy": 0.55, "eval/accuracy_se": 0.015, "eval/consistency": 0.72,
        "eval/consistency_se": 0.012, "eval/factuality": 0.45, "eval/factuality_se": 0.025,
        "eval/format_rate": 0.95, "eval/mean_length": 29.5, "judge/flip_rate": 0.125,
        "curate/kept_frac": 0.4, "dpo/loss": 0.6931, "eval/family/count/accuracy": 0.55},
    2: {"eval/accuracy": 0.61, "eval/accuracy_se": 0.015, "eval/consistency": 0.75,
        "eval/consistency_se": 0.011, "eval/factuality": 0.50, "eval/factuality_se": 0.020,
        "eval/format_rate": 0.97, "eval/mean_length": 28.0, "judge/flip_rate": 0.1,
        "curate/kept_frac": 0.35, "dpo/loss": 0.52, "eval/family/count/accuracy": 0.61},
}
RUN_B = {
    0: {"eval/accuracy": 0.48, "eval/accuracy_se": 0.021, "eval/consistency": 0.69,
        "eval/consistency_se": 0.010, "eval/factuality": 0.38, "eval/factuality_se": 0.030,
        "eval/format_rate": 0.88, "eval/mean_length": 33.0},
    1: {"eval/accuracy": 0.52, "eval/accuracy_se": 0.020, "eval/consistency": 0.71,
        "eval/consistency_se": 0.010, "eval/factuality": 0.41, "eval/factuality_se": 0.028,
        "eval/format_rate": 0.93, "eval/mean_length": 30.0, "judge/flip_rate": 0.2,
        "curate/kept_frac": 0.5, "dpo/loss": 0.61},
}


def _pipeline(tracker, name: str, iterations: dict[int, dict]) -> tuple[str, list[str]]:
    parent = tracker.start_run(name, {"src.role": "pipeline"})
    children = []
    for t, metrics in iterations.items():
        child = tracker.start_run(f"iteration-{t}", {"src.role": "iteration", "src.iteration": str(t)},
                                  parent_id=parent)
        tracker.log_metrics(child, metrics, step=t)
        tracker.log_metrics(parent, {k: v for k, v in metrics.items()
                                     if not k.startswith("eval/family")}, step=t)
        tracker.end_run(child)
        children.append(child)
    tracker.end_run(parent)
    return parent, children


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from infra.tracking import MLflowTracker

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    # explicit artifact location: MLflowTracker finds the experiment and keeps it
    client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    tracker = MLflowTracker(EXPERIMENT, tracking_uri=uri)
    a, a_children = _pipeline(tracker, "src-a", RUN_A)
    b, _ = _pipeline(tracker, "src-b", RUN_B)
    return {"uri": uri, "client": client, "a": a, "b": b, "a_child": a_children[1],
            "experiment_id": tracker.experiment_id}


def src_compare(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="src")
    add_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(["compare", *argv])
    return args.fn(args)


def compare_runs(store) -> list:
    return store["client"].search_runs([store["experiment_id"]],
                                       filter_string="tags.`src.role` = 'compare'")


def test_collect_reads_the_layout(store):
    rows = collect(store["client"], [store["b"], store["a"]])
    assert [(r["run_id"], r["iteration"]) for r in rows] == (
        [(store["b"], 0), (store["b"], 1), (store["a"], 0), (store["a"], 1), (store["a"], 2)])
    assert rows[0]["run_name"] == "src-b"
    assert rows[4]["metrics"] == pytest.approx(RUN_A[2])
    assert rows[3]["child_run_id"] == store["a_child"]


def test_table_values(store):
    table = format_table(collect(store["client"], [store["a"], store["b"]]))
    lines = table.splitlines()
    assert lines[0] == ("| run | iteration | accuracy | consistency | factuality | format rate "
                        "| flip rate | kept | dpo loss |")
    assert len(lines) == 2 + 5
    a0, a1, a2 = (line.split(" | ") for line in lines[2:5])
    assert a2[0] == f"| {store['a'][:8]} src-a" and a2[1] == "2"
    assert a2[2:] == ["61.0 ± 1.5", "75.0 ± 1.1", "50.0 ± 2.0", "97.0", "0.100", "0.350", "0.520 |"]
    assert a1[-3:] == ["0.125", "0.400", "0.693 |"]
    # iteration 0 has no judge, curation or DPO: empty cells, not zeros
    assert a0[2] == "50.0 ± 2.0" and a0[-3:] == ["", "", " |"]


def test_cli_writes_files_and_logs_a_compare_run(store, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert src_compare(store["a"], store["b"], "--tracking-uri", store["uri"],
                       "--out", str(out), "--html") == 0
    printed = capsys.readouterr().out
    assert "61.0 ± 1.5" in printed and "src.role=compare" in printed

    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    assert list(rows[0])[:6] == ["run_id", "run_name", "iteration", "child_run_id",
                                 "eval/accuracy", "eval/accuracy_se"]
    assert "eval/family/count/accuracy" in rows[0]
    b1 = rows[4]
    assert (b1["run_id"], b1["iteration"]) == (store["b"], "1")
    assert float(b1["eval/accuracy"]) == 0.52 and float(b1["judge/flip_rate"]) == 0.2
    assert rows[0]["dpo/loss"] == "" and rows[3]["eval/family/count/accuracy"] == ""

    png = (out / "compare.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    page = (out / "compare.html").read_text()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert "http://" not in page and "https://" not in page and "61.0 ± 1.5" in page
    assert "61.0 ± 1.5" in (out / "compare.md").read_text()

    [run] = compare_runs(store)
    assert run.data.tags["src.compared_runs"] == f"{store['a']},{store['b']}"
    assert run.info.status == "FINISHED"
    logged = {a.path for a in store["client"].list_artifacts(run.info.run_id)}
    assert logged == {"compare.md", "compare.csv", "compare.png", "compare.html"}


def test_last_n_and_no_log(store, tmp_path, capsys):
    before = len(compare_runs(store))
    out = tmp_path / "last"
    assert src_compare("--last", "2", "--experiment", EXPERIMENT, "--tracking-uri", store["uri"],
                       "--out", str(out), "--no-log") == 0
    with open(out / "compare.csv", newline="") as f:
        ids = [r["run_id"] for r in csv.DictReader(f)]
    assert ids == [store["a"]] * 3 + [store["b"]] * 2  # oldest first; compare runs ignored
    assert not (out / "compare.html").exists()
    assert len(compare_runs(store)) == before
    capsys.readouterr()
    assert src_compare("--last", "1", "--experiment", EXPERIMENT, "--tracking-uri", store["uri"],
                       "--out", str(tmp_path / "one"), "--no-log") == 0
    assert store["a"][:8] not in capsys.readouterr().out


def test_plot_and_html_pure(store, tmp_path):
    rows = collect(store["client"], [store["a"]])
    path = plot(rows, tmp_path / "p.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert "<table>" in render_html(rows, path)


def test_unknown_run_id_is_one_clear_line(store, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown run id 'deadbeef'"):
        collect(store["client"], [store["a"], "deadbeef"])
    assert src_compare(store["a"], "deadbeef", "--tracking-uri", store["uri"],
                       "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown run id 'deadbeef'")
    assert not (tmp_path / "x").exists()


def test_iteration_run_id_points_to_its_pipeline(store):
    with pytest.raises(ValueError, match=f"not a pipeline run.*its pipeline run is {store['a']}"):
        collect(store["client"], [store["a_child"]])
