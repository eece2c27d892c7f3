"""`make bench`: the efficacy table with ablations and the performance benchmarks (issue 5).

    python -m bench.run            # full: 3 iterations, 1,000 held-out questions (make bench)
    python -m bench.run --quick    # the same figures at small budgets, minutes (make bench-quick)

Writes `bench/results/<full|quick>.json` and `<full|quick>.md` (the tables, every figure with
its target) and prints one line `name: value (target ...)` per figure. Every pipeline runs in
a fresh state folder (`bench/results/state-<mode>/`, emptied first, kept after: its
`mlflow.db` holds every run), so "first run" really is first. Numbers come from here, never from the unit tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import efficacy, perf
from infra.environment import apply_defaults

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

FULL = {"iterations": 3, "search_questions": 32, "score_items": 100, "text_pairs": 200,
        "scale": [100, 300, 1000, 3000], "memory_steps": 6}
QUICK = {"iterations": 1, "search_questions": 8, "score_items": 20, "text_pairs": 40,
         "scale": [20, 60], "memory_steps": 3}


def _wait_for_stage(state: Path, stage: str, timeout: float = 3600.0) -> Path:
    """The first finished output folder of `stage` in the state folder (its manifest is last)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = sorted((state / "stages" / stage).glob("*/manifest.json"))
        if found:
            return found[0].parent
        time.sleep(5)
    raise RuntimeError(f"no {stage} output in {state} after {timeout:.0f}s")


def machine() -> dict:
    import os

    import torch

    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "commit": commit}


def figures(runs: dict, search: dict, scoring: dict, memory: dict, scale: dict) -> list[dict]:
    """Every performance figure with its target (issue 5, section 2)."""
    main, cached = runs["main"], runs["main_cached"]
    tm = main["timing"]
    per = tm["per_stage_seconds"]
    loop = sum(per.get(k, 0.0) for k in ("search", "score", "curate", "dpo", "evaluate"))
    out = [
        {"name": "search speedup vs its reference path (prefixes re-run, kv_cache=false)",
         "value": search["speedup_vs_reference"], "target": ">= 3", "met": search["speedup_vs_reference"] >= 3},
        {"name": "search time / plain batched sampling time, per candidate",
         "value": round(1 / search["speedup_vs_batched_sample"], 2), "target": "<= 1.5",
         "met": 1 / search["speedup_vs_batched_sample"] <= 1.5},
        {"name": "search speedup vs per-question generate loop",
         "value": search["speedup_vs_per_question_sample"], "target": ">= 2", "met": search["speedup_vs_per_question_sample"] >= 2},
        {"name": "search speedup vs the same search per question",
         "value": search["speedup_vs_per_question_search"], "target": "(reported)", "met": None},
        {"name": "search candidate texts identical to the reference path", "value": search["same_as_reference"],
         "target": ">= 0.95", "met": search["same_as_reference"] >= 0.95},
        {"name": "search time inside model forward", "value": search["batched"]["forward_share"],
         "target": ">= 0.70", "met": search["batched"]["forward_share"] >= 0.7},
        {"name": "search tokens/s (candidate tokens; reference path, plain sampling)",
         "value": f"{search['batched']['tokens_per_s']} ({search['reference']['tokens_per_s']}, "
                  f"{search['batched_sample']['tokens_per_s']})", "target": "(reported)", "met": None},
        {"name": "scoring speedup vs generating the verdict per pair",
         "value": scoring["speedup_vs_generate_per_pair"], "target": ">= 20", "met": scoring["speedup_vs_generate_per_pair"] >= 20},
        {"name": "scoring speedup vs batched verdict generation",
         "value": scoring["speedup_vs_generate_batched"], "target": "(reported)", "met": None},
        {"name": "scoring share of an iteration's stage time (N=6)",
         "value": round(per.get("score", 0.0) / loop, 3) if loop else None, "target": "<= 0.25",
         "met": bool(loop) and per.get("score", 0.0) / loop <= 0.25},
        {"name": "DPO / SFT peak resident memory", "value": memory["dpo_over_sft"], "target": "<= 1.3",
         "met": memory["dpo_over_sft"] <= 1.3},
        {"name": "orchestration overhead (flow - stages) / flow", "value": round(tm["overhead_frac"], 3),
         "target": "<= 0.10", "met": tm["overhead_frac"] <= 0.10},
        {"name": "cached re-run / first run wall time (whole `src run` process)",
         "value": round(cached["process_seconds"] / main["process_seconds"], 3), "target": "<= 0.05",
         "met": cached["process_seconds"] / main["process_seconds"] <= 0.05},
        {"name": "cached re-run / first run wall time (the flow alone)",
         "value": round(cached["wall_seconds"] / main["wall_seconds"], 3), "target": "(reported)", "met": None},
        {"name": "scale: time exponent (time ~ prompts^b), search+score",
         "value": scale["time_exponent"]["search+score"], "target": "~1 (linear)",
         "met": abs(scale["time_exponent"]["search+score"] - 1) <= 0.15},
        {"name": "scale: peak memory exponent", "value": scale["memory_exponent"], "target": "(reported)", "met": None},
    ]
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def print_lines(items: list[dict]) -> list[str]:
    lines = []
    for f in items:
        mark = "" if f["met"] is None else (" MET" if f["met"] else " MISSED")
        lines.append(f"{f['name']}: {_fmt(f['value'])} (target {f['target']}){mark}")
    for ln in lines:
        print(ln, flush=True)
    return lines


def markdown(mode: str, mach: dict, rows: list[dict], eff_t: list[dict], perf_f: list[dict],
             scale: dict, wall: float) -> str:
    lines = [f"# SRC benchmarks ({mode})", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, GPU {mach['gpu']}; "
             f"torch {mach['torch']}; {mach['date']}, commit {mach['commit']}; bench wall time {wall / 60:.1f} min.",
             "", "## Efficacy (held-out split, ± one standard error, percent)", "", efficacy.markdown(rows), "",
             "| efficacy target | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {t['name']} | {_fmt(t['value'])} | {t['target']} | {t['met']} |" for t in eff_t]
    lines += ["", "## Performance", "", "| figure | value | target | met |", "|---|---|---|---|"]
    lines += [f"| {f['name']} | {_fmt(f['value'])} | {f['target']} | {'' if f['met'] is None else f['met']} |"
              for f in perf_f]
    lines += ["", "### Scale curve (one iteration: search, score, curate, DPO)", "",
              "| prompts | candidates | pairs | search s | score s | curate s | dpo s | total s | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in scale["points"]:
        s = p["seconds"]
        lines.append(f"| {p['prompts']} | {p['candidates']} | {p['pairs']} | {s['search']} | {s['score']} | "
                     f"{s['curate']} | {s['dpo']} | {p['total_seconds']} | {p['peak_rss_mb']} |")
    lines.append(f"\nTime exponents (log-log fit): {scale['time_exponent']}; memory: {scale['memory_exponent']}.")
    return "\n".join(lines) + "\n"


def perf_only(args: argparse.Namespace) -> int:
    """`--perf-only`: the micro-benchmarks again over the last bench's runs (their logs and
    state folder in --out), the efficacy rows and scale curve kept; the result says when and
    at which commit the performance figures were measured."""
    from data.config import load_config

    mode = "quick" if args.quick else "full"
    budget, out = (QUICK if args.quick else FULL), Path(args.out)
    prev = json.loads((out / f"{mode}.json").read_text())
    runs = {n: json.loads((out / f"logs-{mode}" / f"run-{n}.json").read_text()) for n in prev["details"]["runs"]}
    old = {f["name"]: f["value"] for f in prev["performance"]}
    for n, r in runs.items():  # the process wall time, or (older results) the ratio it gave
        r["process_seconds"] = prev["details"]["runs"][n].get("process_seconds")
    if runs["main"]["process_seconds"] is None:
        runs["main"]["process_seconds"] = 1.0
        runs["main_cached"]["process_seconds"] = old["cached re-run / first run wall time (whole `src run` process)"]
    cfg = load_config(args.config, efficacy.QUICK if args.quick else [])
    t0 = time.time()
    search = perf.bench_search(cfg, runs["main"]["chain"], budget["search_questions"])
    scoring = perf.bench_scoring(cfg, budget["score_items"], budget["text_pairs"])
    memory = perf.bench_memory(args.config, budget["memory_steps"])
    perf_f = figures(runs, search, scoring, memory, prev["details"]["scale"])
    mach = machine()
    prev["details"].update(search=search, scoring=scoring, memory=memory)
    prev.update(performance=perf_f, efficacy_targets=efficacy.targets(prev["efficacy"]),
                perf_measured={"date": mach["date"], "commit": mach["commit"], "seconds": time.time() - t0})
    (out / f"{mode}.json").write_text(json.dumps(prev, indent=1, default=str))
    md = markdown(mode, prev["machine"], prev["efficacy"], prev["efficacy_targets"], perf_f,
                  prev["details"]["scale"], prev["wall_seconds"])
    md = md.replace("\n## Performance\n", f"\n## Performance\n\nMeasured again with `--perf-only` on an idle "
                    f"machine, {mach['date']}, commit {mach['commit']}.\n", 1)
    (out / f"{mode}.md").write_text(md)
    print_lines(perf_f)
    print(f"wrote {out / (mode + '.json')} and {out / (mode + '.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small budgets: minutes, not comparable")
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--workers", type=int, default=2, help="ablation pipelines at a time")
    ap.add_argument("--scale", default="", help="pool sizes of the scale curve, e.g. 100,300,1000,3000 "
                    "(default: 100,300,1000,3000)")
    ap.add_argument("--perf-only", action="store_true",
                    help="measure search, scoring and memory again (on an idle machine), keeping the "
                         "efficacy runs and scale curve of the last bench in --out")
    args = ap.parse_args(argv)
    apply_defaults()  # infra/environment.py; the pipelines it starts are `src run`s, which do too
    if args.perf_only:
        return perf_only(args)
    mode = "quick" if args.quick else "full"
    budget = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / f"state-{mode}"
    shutil.rmtree(state, ignore_errors=True)
    logs = out / f"logs-{mode}"
    logs.mkdir(exist_ok=True)
    t0 = time.time()
    from data.config import load_config

    over = efficacy.QUICK if args.quick else []
    cfg = load_config(args.config, over)
    sizes = [int(x) for x in args.scale.split(",")] if args.scale else budget["scale"]

    def scale_job() -> dict:  # on the core the main run leaves idle, once its SFT exists
        sft = _wait_for_stage(state, "rationale_sft")
        print(f"[bench {mode}] scale curve {sizes} on {sft.name}, next to the main run", flush=True)
        return perf.bench_scale(args.config, over, state, sizes)

    print(f"[bench {mode}] efficacy: main run, cached re-run, {len(efficacy.ABLATIONS)} ablations", flush=True)
    runs = efficacy.run_all(state, logs, budget["iterations"], args.quick, args.workers, args.config,
                            alongside=scale_job)
    scale = runs.pop("alongside")
    rows = efficacy.table(runs)
    eff_t = efficacy.targets(rows)
    chain = runs["main"]["chain"]
    print(f"[bench {mode}] performance: search, scoring, memory", flush=True)
    search = perf.bench_search(cfg, chain, budget["search_questions"])
    scoring = perf.bench_scoring(cfg, budget["score_items"], budget["text_pairs"])
    memory = perf.bench_memory(args.config, budget["memory_steps"])
    perf_f = figures(runs, search, scoring, memory, scale)
    wall = time.time() - t0
    mach = machine()
    result = {"mode": mode, "machine": mach, "wall_seconds": wall, "efficacy": rows,
              "efficacy_targets": eff_t, "performance": perf_f,
              "details": {"search": search, "scoring": scoring, "memory": memory, "scale": scale,
                          "timing": runs["main"]["timing"],
                          "runs": {n: {"parent_run_id": r["parent_run_id"], "wall_seconds": r["wall_seconds"],
                                       "process_seconds": r["process_seconds"]} for n, r in runs.items()}}}
    (out / f"{mode}.json").write_text(json.dumps(result, indent=1, default=str))
    (out / f"{mode}.md").write_text(markdown(mode, mach, rows, eff_t, perf_f, scale, wall))
    print(f"\n[bench {mode}] efficacy\n" + efficacy.markdown(rows))
    print_lines(eff_t)
    print_lines(perf_f)
    print(f"bench wall time: {wall / 60:.1f} min (target {'10' if args.quick else '60'} min)")
    print(f"wrote {out / (mode + '.json')} and {out / (mode + '.md')}; runs and logs in {state}, {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
