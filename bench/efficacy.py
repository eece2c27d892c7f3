"""The efficacy table: SRC iterations and the ablations of issue 5, on the built-in world.

Every row is a real pipeline run (`src run ... --summary-json`) in one fresh state folder, so
the runs share what they have in common (world, base evaluation, rationale SFT, iteration 1's
candidates) and differ only where the ablation does. Same seed and budgets for every row.

    main         configs/builtin.yaml, iterate.iterations=T (the claims judge, scorer.mode=claims)
    pairwise     scorer.mode=pairwise (the committed one-token pair judge, before the claims judge)
    pointwise    scorer.mode=pointwise (the committed pointwise judge)
    blank_ref    scorer.blank_reference=true (the same judge without the scene: does it use it?)
    uniform      curation.weighting=uniform dpo.use_pair_weights=false (no confidence weighting)
    answer_only  curation.preference=answer_only (correct vs wrong answer, rationale ignored)
    oracle       scorer.model=oracle (the exact scorer judges: the judge's ceiling)
    seed1, seed2 the main run with seed=1 and seed=2: the headline rows are mean ± sd of seeds 0-2
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ABLATIONS: dict[str, list[str]] = {
    "pairwise": ["scorer.mode=pairwise"],
    "pointwise": ["scorer.mode=pointwise"],
    "blank_ref": ["scorer.blank_reference=true"],
    "uniform": ["curation.weighting=uniform", "dpo.use_pair_weights=false"],
    "answer_only": ["curation.preference=answer_only"],
    "oracle": ["scorer.model=oracle"],
}
# --quick: the same rows at a budget that fits minutes (not comparable with the full table)
QUICK = ["data.n_eval=300", "iterate.prompts_per_iteration=60", "rationale_sft.max_steps=120",
         "dpo.max_steps=40"]
SEEDS = (1, 2)  # besides the main run's seed 0
COLUMNS = ("accuracy", "consistency", "factuality", "format_rate")
HEADROOM = ("correct", "correct_consistent", "correct_consistent_factual")


def run_pipeline(name: str, overrides: list[str], state: Path, out: Path, config: str) -> dict:
    """One `src run` in a subprocess; returns its summary JSON plus the wall time seen here."""
    summary = out / f"run-{name}.json"
    log = out / f"run-{name}.log"
    env = {**os.environ, "SRC_STATE_DIR": str(state), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "cli.main", "run", "--config", config, *overrides,
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
    ablations and the other seeds `workers` at a time (the store's per-key lock keeps shared
    stages single).
    `alongside()`, if given, runs in a thread next to the main run (which uses one core) and
    its result is `runs["alongside"]`."""
    base = [f"iterate.iterations={iterations}", "tracking.experiment=src-bench"] + (QUICK if quick else [])
    side = ThreadPoolExecutor(max_workers=1)
    side_job = side.submit(alongside) if alongside else None
    runs = {"main": run_pipeline("main", base, state, out, config)}
    runs["main_cached"] = run_pipeline("main_cached", base, state, out, config)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = {**ABLATIONS, **{f"seed{s}": [f"seed={s}"] for s in SEEDS}}
        futs = {n: pool.submit(run_pipeline, n, base + o, state, out, config) for n, o in jobs.items()}
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
    for k, name in (("search/headroom", "headroom"), ("judge/flip_rate", "flip_rate"),
                    ("curate/kept_frac", "kept_frac"), ("judge/onpolicy_agreement", "judge_agree"),
                    ("judge/agree_same_answer", "judge_same_answer"),
                    ("judge/agree_factual_only", "judge_factual_only"),
                    ("judge/steer_filler", "steer_filler"), ("judge/steer_verdict", "steer_verdict"),
                    ("judge/steer_padding", "steer_padding"),
                    ("reader/agree_consistent", "reader_agree"), ("dpo/loss", "dpo_loss"),
                    *[(f"search/{w}_{lv}", f"{w}_{lv}") for lv in HEADROOM for w in ("bestofn", "greedy")]):
        if k in m:
            row[name] = m[k]
    return row


def _seed_row(label: str, picks: list[dict]) -> dict:
    """Mean ± sd over seeds of one iteration's metrics (`<k>_sd`, `seeds`)."""
    out: dict[str, Any] = {"row": label, "families": {}, "seeds": len(picks)}
    for k in COLUMNS:
        vals = [m[f"eval/{k}"] for m in picks if f"eval/{k}" in m]
        if vals:
            out[k] = statistics.mean(vals)
            out[f"{k}_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def table(runs: dict[str, Any]) -> list[dict]:
    """Rows: base, iteration 0, SRC iterations 1..T (seed 0, ± SE), each ablation at its last
    iteration, then iteration 0 and T over the seeds that ran (mean ± sd)."""
    rows = [_row("base (short answers)", runs["main"]["base_metrics"])]
    for it in runs["main"]["iterations"]:
        label = "rationale-tuned (iteration 0)" if it["iteration"] == 0 else f"SRC iteration {it['iteration']}"
        rows.append(_row(label, it["metrics"]))
    for name in ABLATIONS:
        if name in runs:
            last = runs[name]["iterations"][-1]
            rows.append(_row(f"ablation: {name} (iteration {last['iteration']})", last["metrics"]))
    for s in SEEDS:
        if f"seed{s}" in runs:
            its = runs[f"seed{s}"]["iterations"]
            row = _row(f"seed {s}: SRC iteration {its[-1]['iteration']}", its[-1]["metrics"])
            row["vs0"] = _row(f"seed {s}: iteration 0", its[0]["metrics"])
            # the judge targets hold for every iteration of every seed, not only the last one
            row["judged"] = [_row(f"seed {s}: SRC iteration {x['iteration']}", x["metrics"]) for x in its[1:]]
            rows.append(row)
    seeded = [runs["main"]] + [runs[f"seed{s}"] for s in SEEDS if f"seed{s}" in runs]
    if len(seeded) > 1:
        names = ",".join(["0"] + [str(s) for s in SEEDS if f"seed{s}" in runs])
        last = runs["main"]["iterations"][-1]["iteration"]
        for it, label in ((0, "rationale-tuned (iteration 0)"), (last, f"SRC iteration {last}")):
            picks = [next(x["metrics"] for x in r["iterations"] if x["iteration"] == it) for r in seeded]
            rows.append(_seed_row(f"{label}, seeds {names} (mean ± sd)", picks))
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """Issue 17's efficacy targets, each with the measured value and whether it is met
    (`met` None: reported, no target)."""
    by = {r["row"]: r for r in rows}
    r0 = by.get("rationale-tuned (iteration 0)")
    its = [r for r in rows if r["row"].startswith("SRC iteration") and "seeds" not in r]
    out: list[dict] = []
    if not (r0 and its):
        return out
    last = its[-1]

    def diff(k: str, a: dict, b: dict) -> tuple[float, float]:
        """a - b on metric k, and that difference in standard errors of the difference."""
        d = a[k] - b[k]
        se = ((a.get(f"{k}_se") or 0) ** 2 + (b.get(f"{k}_se") or 0) ** 2) ** 0.5
        return d, (d / se if se else float("nan"))

    for k, want in (("consistency", 0.08), ("factuality", 0.05)):
        g, z = diff(k, last, r0)
        out.append({"name": f"{last['row']} {k} gain over iteration 0 (seed 0)", "value": g, "z": z,
                    "target": f">= {want:.2f} and >= 3 SE", "met": g >= want and z >= 3})
    g, z = diff("accuracy", last, r0)
    out.append({"name": f"{last['row']} accuracy gain over iteration 0 (seed 0)", "value": g, "z": z,
                "target": ">= -1 SE", "met": z >= -1})
    for r in rows:  # the other seeds, each against its own iteration 0
        if r["row"].startswith("seed ") and r.get("vs0"):
            for k, want in (("consistency", 0.08), ("factuality", 0.05), ("accuracy", None)):
                g, z = diff(k, r, r["vs0"])
                out.append({"name": f"{r['row']} {k} gain over its iteration 0", "value": g, "z": z,
                            "target": f">= {want:.2f} and >= 3 SE" if want else ">= -1 SE",
                            "met": (g >= want and z >= 3) if want else z >= -1})
    for r in rows:
        if "seeds" in r and r["row"].startswith("SRC iteration"):
            r0s = next(x for x in rows if "seeds" in x and x["row"].startswith("rationale-tuned"))
            for k in ("consistency", "factuality", "accuracy"):
                want = 0.02 if k == "accuracy" else None
                out.append({"name": f"{k} gain over iteration 0, mean of {r['seeds']} seeds",
                            "value": r[k] - r0s[k], "target": ">= 0.02" if want else "(reported)",
                            "met": (r[k] - r0s[k] >= want) if want else None})
            sd = r0s.get("consistency_sd")
            out.append({"name": f"stage-1 consistency sd over {r['seeds']} seeds", "value": sd,
                        "target": "<= 0.03", "met": sd is not None and sd <= 0.03})

    def both(r: dict) -> tuple[float, float]:  # consistency + factuality, and its SE
        return r["consistency"] + r["factuality"], ((r.get("consistency_se") or 0) ** 2
                                                     + (r.get("factuality_se") or 0) ** 2) ** 0.5
    for name in ("pairwise", "pointwise", "uniform", "blank_ref", "answer_only"):
        ab = next((r for r in rows if r["row"].startswith(f"ablation: {name} ")), None)
        if ab:
            (a, sa), (b, sb) = both(last), both(ab)
            z = (a - b) / (sa * sa + sb * sb) ** 0.5 if sa or sb else float("nan")
            out.append({"name": f"full SRC consistency + factuality - {name} ablation", "value": a - b, "z": z,
                        "target": ">= 2 SE", "met": z >= 2})
    orc = next((r for r in rows if r["row"].startswith("ablation: oracle ")), None)
    if orc:
        for k in ("consistency", "factuality", "accuracy"):
            g_judge, g_orc = last[k] - r0[k], orc[k] - r0[k]
            share = g_judge / g_orc if g_orc > 0 else float("nan")
            out.append({"name": f"R-Scorer {k} gain / oracle {k} gain", "value": share,
                        "target": "(reported: what the judge leaves to the oracle)", "met": None})
    base = by.get("base (short answers)")
    if base and "accuracy" in base:
        out.append({"name": "iteration 0 accuracy - base short-answer accuracy",
                    "value": r0["accuracy"] - base["accuracy"], "target": ">= 0",
                    "met": r0["accuracy"] >= base["accuracy"]})
    judged = its + [x for r in rows if r["row"].startswith("seed ") for x in r.get("judged", [r])]
    for key, name, want in (("judge_same_answer", "same-answer pairs", 0.80),
                            ("judge_factual_only", "pairs differing only in factuality", 0.75)):
        vals = [r[key] for r in judged if key in r]
        if vals:
            out.append({"name": f"judge agreement on {name} (lowest iteration, any seed)", "value": min(vals),
                        "target": f">= {want:.2f}", "met": min(vals) >= want})
    steer = [r[k] for r in judged for k in ("steer_filler", "steer_verdict", "steer_padding") if k in r]
    if steer:
        out.append({"name": "steer win probability (highest: filler, copied verdict, padding)",
                    "value": max(steer), "target": "<= 0.10", "met": max(steer) <= 0.1})
    return out


def markdown(rows: list[dict]) -> str:
    """The table: seed-0 rows ± SE, seed rows ± sd; headroom cells are best-of-N / greedy."""
    fams = sorted({f for r in rows for f in r["families"]})
    head = ["row", *COLUMNS, *[f"acc {f}" for f in fams], "correct: best-of-N / greedy",
            "c+c: best-of-N / greedy", "c+c+f: best-of-N / greedy", "flip rate", "judge agree",
            "same-answer agree", "factual-only agree", "steer (max)", "reader agree", "kept"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    num = lambda r, k: f"{r[k]:.3f}" if k in r else ""  # noqa: E731
    for r in rows:
        cells = [r["row"]]
        for k in COLUMNS:
            v, se = r.get(k), r.get(f"{k}_se", r.get(f"{k}_sd"))
            cells.append("" if v is None else f"{100 * v:.1f} ± {100 * (se or 0):.1f}")
        cells += [pct(r["families"].get(f)) for f in fams]
        cells += [f"{pct(r['bestofn_' + lv])} / {pct(r.get('greedy_' + lv))}" if f"bestofn_{lv}" in r else ""
                  for lv in HEADROOM]
        steer = [r[k] for k in ("steer_filler", "steer_verdict", "steer_padding") if k in r]
        cells += [num(r, "flip_rate"), num(r, "judge_agree"), num(r, "judge_same_answer"),
                  num(r, "judge_factual_only"), f"{max(steer):.3f}" if steer else "",
                  num(r, "reader_agree"), pct(r.get("kept_frac"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
