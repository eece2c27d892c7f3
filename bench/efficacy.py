"""The efficacy table: SRC iterations and the ablations of issue 5, on the built-in world.

Every row is a real pipeline run (`src run ... --summary-json`) in one fresh state folder, so
the runs share what they have in common (world, base evaluation, rationale SFT, iteration 1's
candidates) and differ only where the ablation does. Same seed and budgets for every row.

    main         configs/builtin.yaml, iterate.iterations=T
    pointwise    scorer.mode=pointwise (the committed pointwise judge)
    uniform      curation.weighting=uniform dpo.use_pair_weights=false (no confidence weighting)
    answer_only  curation.preference=answer_only (correct vs wrong answer, rationale ignored)
    oracle       scorer.model=oracle (the exact scorer judges: the judge's ceiling)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ABLATIONS: dict[str, list[str]] = {
    "pointwise": ["scorer.mode=pointwise"],
    "uniform": ["curation.weighting=uniform", "dpo.use_pair_weights=false"],
    "answer_only": ["curation.preference=answer_only"],
    "oracle": ["scorer.model=oracle"],
}
# --quick: the same rows at a budget that fits minutes (not comparable with the full table)
QUICK = ["data.n_eval=300", "iterate.prompts_per_iteration=60", "rationale_sft.max_steps=120",
         "dpo.max_steps=40"]
COLUMNS = ("accuracy", "consistency", "factuality", "format_rate")


def run_pipeline(name: str, overrides: list[str], state: Path, out: Path, config: str) -> dict:
    """One `src run` in a subprocess; returns its summary JSON plus the wall time seen here."""
    summary = out / f"run-{name}.json"
    log = out / f"run-{name}.log"
    env = {**os.environ, "SRC_STATE_DIR": str(state), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "flows.cli", "run", "--config", config, *overrides,
           "--summary-json", str(summary)]
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"bench run {name!r} failed (exit {proc.returncode}), log {log}:\n"
                           + "\n".join(tail))
    result = json.loads(summary.read_text())
    result["process_seconds"] = wall
    print(f"  {name}: {wall:.0f}s", flush=True)
    return result


def run_all(state: Path, out: Path, iterations: int, quick: bool, workers: int = 2,
            config: str = "configs/builtin.yaml", alongside: Any = None) -> dict[str, Any]:
    """Main run first (it builds what the ablations share), its fully cached re-run, then the
    ablations `workers` at a time (the store's per-key lock keeps shared stages single).
    `alongside()`, if given, runs in a thread next to the main run (which uses one core) and
    its result is `runs["alongside"]`."""
    base = [f"iterate.iterations={iterations}", "tracking.experiment=src-bench"] + (QUICK if quick else [])
    side = ThreadPoolExecutor(max_workers=1)
    side_job = side.submit(alongside) if alongside else None
    runs = {"main": run_pipeline("main", base, state, out, config)}
    runs["main_cached"] = run_pipeline("main_cached", base, state, out, config)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futs = {n: pool.submit(run_pipeline, n, base + o, state, out, config) for n, o in ABLATIONS.items()}
        for n, f in futs.items():
            runs[n] = f.result()
    if side_job is not None:
        runs["alongside"] = side_job.result()
    side.shutdown()
    return runs


def _row(label: str, m: dict) -> dict:
    row = {"row": label}
    for k in COLUMNS:
        if f"eval/{k}" in m:
            row[k] = m[f"eval/{k}"]
            row[f"{k}_se"] = m.get(f"eval/{k}_se")
    row["families"] = {k.split("/")[2]: v for k, v in m.items() if k.startswith("eval/family/")}
    for k, name in (("search/headroom", "headroom"), ("search/bestofn_correct_consistent", "bestofn_cc"),
                    ("search/greedy_correct_consistent", "greedy_cc"),
                    ("judge/flip_rate", "flip_rate"), ("curate/kept_frac", "kept_frac"),
                    ("judge/onpolicy_agreement", "judge_agree"), ("dpo/loss", "dpo_loss")):
        if k in m:
            row[name] = m[k]
    return row


def table(runs: dict[str, Any]) -> list[dict]:
    """Rows: base, iteration 0, SRC iterations 1..T, each ablation at its last iteration."""
    rows = [_row("base (short answers)", runs["main"]["base_metrics"])]
    for it in runs["main"]["iterations"]:
        label = "rationale-tuned (iteration 0)" if it["iteration"] == 0 else f"SRC iteration {it['iteration']}"
        rows.append(_row(label, it["metrics"]))
    for name in ABLATIONS:
        last = runs[name]["iterations"][-1]
        rows.append(_row(f"ablation: {name} (iteration {last['iteration']})", last["metrics"]))
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """Issue 5's efficacy targets, each with the measured value and whether it is met."""
    by = {r["row"]: r for r in rows}
    r0 = by.get("rationale-tuned (iteration 0)")
    its = [r for r in rows if r["row"].startswith("SRC iteration")]
    out: list[dict] = []
    if not (r0 and its):
        return out
    last = its[-1]

    def gain(k: str, r: dict) -> tuple[float, float]:
        g = r[k] - r0[k]
        se = ((r.get(f"{k}_se") or 0) ** 2 + (r0.get(f"{k}_se") or 0) ** 2) ** 0.5
        return g, (g / se if se else float("nan"))

    for k, want in (("accuracy", 0.08), ("consistency", 0.10)):
        g, z = gain(k, last)
        out.append({"name": f"{last['row']} {k} gain over iteration 0", "value": g, "z": z,
                    "target": f">= {want:.2f} and >= 3 SE", "met": g >= want and z >= 3})
    for name in ("pointwise", "uniform", "answer_only"):
        ab = next((r for r in rows if r["row"].startswith(f"ablation: {name} ")), None)
        if ab:
            d = last["consistency"] - ab["consistency"]
            out.append({"name": f"full SRC consistency - {name} ablation", "value": d,
                        "target": "> 0", "met": d > 0})
    orc = next((r for r in rows if r["row"].startswith("ablation: oracle ")), None)
    if orc:
        g_judge, g_orc = last["accuracy"] - r0["accuracy"], orc["accuracy"] - r0["accuracy"]
        share = g_judge / g_orc if g_orc > 0 else float("nan")
        out.append({"name": "R-Scorer accuracy gain / oracle accuracy gain", "value": share,
                    "target": ">= 0.80", "met": g_orc > 0 and share >= 0.8})
    return out


def markdown(rows: list[dict]) -> str:
    fams = sorted({f for r in rows for f in r["families"]})
    head = ["row", *COLUMNS, *[f"acc {f}" for f in fams], "best-of-N c+c", "greedy c+c", "flip rate",
            "judge agree", "kept"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for r in rows:
        cells = [r["row"]]
        for k in COLUMNS:
            v, se = r.get(k), r.get(f"{k}_se")
            cells.append("" if v is None else f"{100 * v:.1f} ± {100 * (se or 0):.1f}")
        cells += [pct(r["families"].get(f)) for f in fams]
        cells += [pct(r.get("bestofn_cc")), pct(r.get("greedy_cc")),
                  f"{r['flip_rate']:.3f}" if "flip_rate" in r else "",
                  f"{r['judge_agree']:.3f}" if "judge_agree" in r else "", pct(r.get("kept_frac"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
