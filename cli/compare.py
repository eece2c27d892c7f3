"""Compare pipeline runs: per-iteration metrics of several SRC runs as a table, CSV and plot.

    src compare RUN_ID [RUN_ID ...] [--out DIR] [--html] [--no-log]
    src compare --last 3 [--experiment src] [--tracking-uri sqlite:///.src/mlflow.db]

Reads only the MLflow layout of infra/layout.py: pipeline runs tagged `src.role=pipeline`,
their iteration child runs (`src.role=iteration`, `src.iteration=<t>`) and those runs'
metrics. Writes `compare.md`, `compare.csv`, `compare.png` (and `compare.html` with `--html`)
to `--out` (default `<state>/compare/<digest of the run ids>/`) and logs them as artifacts of a
new run tagged `src.role=compare`, `src.compared_runs=<id,id,...>` in the experiment of the
first compared run, unless `--no-log`.

`collect`, `format_table`, `write_csv`, `plot` and `render_html` are plain functions on rows
`{"run_id", "run_name", "iteration", "child_run_id", "metrics": {name: value}}`.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import os
import sys
import time
from pathlib import Path
from typing import Any

from report.plots import PLOT_METRICS, plot, table_cells  # noqa: F401  (plot: part of this module's API)
from infra.environment import apply_defaults

FILES = ("compare.md", "compare.csv", "compare.png", "compare.html")


# ---------------------------------------------------------------- data

def collect(client: Any, run_ids: list[str]) -> list[dict]:
    """One row per (pipeline run, iteration), in the order of `run_ids`, iterations ascending.

    Args:
        client: an `mlflow.tracking.MlflowClient`.
        run_ids: ids of pipeline runs (tag `src.role=pipeline`).
    Returns:
        rows `{"run_id", "run_name", "iteration", "child_run_id", "metrics"}`; a pipeline
        run without iteration child runs contributes no row.
    Raises:
        ValueError: an id that is not a run in this store, or not a pipeline run.
    """
    from mlflow.exceptions import MlflowException

    rows: list[dict] = []
    for rid in dict.fromkeys(run_ids):  # a repeated id counts once
        try:
            run = client.get_run(rid)
        except MlflowException:
            raise ValueError(f"unknown run id {rid!r} (tracking URI {client.tracking_uri})") from None
        role = run.data.tags.get("src.role")
        if role != "pipeline":
            parent = run.data.tags.get("mlflow.parentRunId")
            hint = f"; its pipeline run is {parent}" if role == "iteration" and parent else ""
            raise ValueError(f"run {rid!r} is not a pipeline run (src.role={role}){hint}")
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{rid}' and tags.`src.role` = 'iteration'",
            max_results=10000,
        )
        for child in sorted(children, key=lambda r: int(r.data.tags["src.iteration"])):
            rows.append({"run_id": rid, "run_name": run.info.run_name or "",
                         "iteration": int(child.data.tags["src.iteration"]),
                         "child_run_id": child.info.run_id, "metrics": dict(child.data.metrics)})
    return rows


def last_pipeline_runs(client: Any, experiment: str, n: int) -> list[str]:
    """Ids of the `n` most recently started pipeline runs of `experiment`, oldest first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no experiment {experiment!r} (tracking URI {client.tracking_uri})")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`src.role` = 'pipeline'",
                              order_by=["attributes.start_time DESC"], max_results=n)
    if not runs:
        raise ValueError(f"no pipeline runs in experiment {experiment!r}")
    return [r.info.run_id for r in reversed(runs)]


def format_table(rows: list[dict]) -> str:
    """Markdown table, one line per run x iteration: `accuracy` is `61.0 ± 1.5` (percent)."""
    head, body = table_cells(rows)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def csv_columns(rows: list[dict]) -> list[str]:
    """Identity columns, then the table's metrics and their `_se`, then every other metric."""
    present = {k for r in rows for k in r["metrics"]}
    first = [k for _, key, _ in PLOT_METRICS for k in (key, f"{key}_se") if k in present]
    return ["run_id", "run_name", "iteration", "child_run_id"] + first + sorted(present - set(first))


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """All metrics of every row; a metric a run did not log is an empty cell."""
    path = Path(path)
    cols = csv_columns(rows)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({**{k: r[k] for k in cols[:4]},
                        **{k: repr(r["metrics"][k]) for k in cols[4:] if k in r["metrics"]}})
    os.replace(tmp, path)
    return path


def render_html(rows: list[dict], png: str | Path, title: str = "SRC comparison") -> str:
    """A self-contained page: the table and the PNG embedded as base64 (no external URLs)."""
    head, body = table_cells(rows)
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    esc = html.escape
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body)
    runs = ", ".join(esc(r) for r in dict.fromkeys(r["run_id"] for r in rows))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; font-family: monospace; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>{esc(title)}</h1>
<p>pipeline runs: {runs}</p>
<table>
<tr>{th}</tr>
{trs}
</table>
<p><img alt="metrics per iteration" src="data:image/png;base64,{data}"></p>
</body></html>
"""


# ---------------------------------------------------------------- outputs and logging

def write_outputs(rows: list[dict], out: str | Path, html_page: bool = False) -> dict[str, Path]:
    """`compare.md`, `compare.csv`, `compare.png` (and `compare.html`) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"png": plot(rows, out / "compare.png"), "csv": write_csv(rows, out / "compare.csv")}
    runs = list(dict.fromkeys(r["run_id"] for r in rows))
    md = (f"# SRC comparison\n\npipeline runs: {', '.join(runs)}\n\n{format_table(rows)}\n\n"
          "![metrics per iteration](compare.png)\n")
    files["md"] = _write_text(out / "compare.md", md)
    if html_page:
        files["html"] = _write_text(out / "compare.html", render_html(rows, files["png"]))
    return files


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def log_compare(tracker: Any, run_ids: list[str], files: dict[str, Path]) -> str:
    """A run tagged `src.role=compare` holding the written files as artifacts; its id."""
    run = tracker.start_run(f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
                            {"src.role": "compare", "src.compared_runs": ",".join(run_ids)})
    try:
        for f in files.values():
            tracker.log_artifact(run, f)
    except BaseException:
        tracker.end_run(run, "FAILED")
        raise
    tracker.end_run(run)
    return run


def run_compare(client: Any, run_ids: list[str], out: str | Path | None = None,
                html_page: bool = False, log: bool = True) -> dict:
    """Collect, write the files and (if `log`) log them; returns rows, table, files, run id.

    Raises:
        ValueError: an unknown or non-pipeline run id, or no iteration runs at all.
    """
    from data.config import digest
    from infra.store import state_dir
    from infra.tracking import MLflowTracker

    rows = collect(client, run_ids)
    missing = [rid for rid in run_ids if not any(r["run_id"] == rid for r in rows)]
    if len(missing) == len(run_ids):
        raise ValueError(f"no iteration runs under pipeline run(s) {', '.join(run_ids)}")
    out = Path(out) if out else state_dir() / "compare" / digest(run_ids)[:12]
    files = write_outputs(rows, out, html_page)
    compare_run = None
    if log:
        exp_id = client.get_run(run_ids[0]).info.experiment_id
        tracker = MLflowTracker(client.get_experiment(exp_id).name, client.tracking_uri)
        compare_run = log_compare(tracker, run_ids, files)
    return {"rows": rows, "table": format_table(rows), "files": files, "missing": missing,
            "compare_run_id": compare_run}


# ---------------------------------------------------------------- command line

def cmd_compare(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from infra.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    try:
        if args.run_ids and args.last:
            raise ValueError("give run ids or --last N, not both")
        if args.last is not None and args.last < 1:
            raise ValueError(f"--last must be at least 1 (got {args.last})")
        ids = args.run_ids or last_pipeline_runs(client, args.experiment, args.last or 2)
        res = run_compare(client, ids, args.out, html_page=args.html, log=not args.no_log)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for rid in res["missing"]:
        print(f"warning: pipeline run {rid} has no iteration runs", file=sys.stderr)
    print(res["table"])
    print()
    for f in res["files"].values():
        print(f"wrote {f}")
    if res["compare_run_id"]:
        print(f"logged as MLflow run {res['compare_run_id']} (tag src.role=compare)")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add `compare` to the `src` command line's subparsers."""
    p = subparsers.add_parser("compare", help="compare pipeline runs: table, CSV, plot",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="pipeline run ids (src.role=pipeline)")
    p.add_argument("--last", type=int, default=None,
                   help="the last N pipeline runs of --experiment (default without ids: 2)")
    p.add_argument("--experiment", default="src", help="experiment that --last searches")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow URI; default: $MLFLOW_TRACKING_URI, else the state dir's SQLite store")
    p.add_argument("--out", default=None,
                   help="output folder; default: <state>/compare/<digest of the run ids>")
    p.add_argument("--html", action="store_true", help="also write a self-contained compare.html")
    p.add_argument("--no-log", action="store_true", help="do not log a src.role=compare run")
    p.set_defaults(fn=cmd_compare)


def main(argv: list[str] | None = None) -> int:
    """`python -m cli.compare ...` = `src compare ...`."""
    apply_defaults()
    ap = argparse.ArgumentParser(prog="src")
    add_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(["compare", *(sys.argv[1:] if argv is None else argv)])
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
