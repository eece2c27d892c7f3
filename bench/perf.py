"""Performance benchmarks of issue 5, each a plain function returning a dict of figures.

- search: the sentence-level beam search on its KV cache vs the reference path (every prefix
  re-run), plain batched sampling and a per-question `generate` loop (tools/search_bench.py),
  the share of search time inside forward passes, tokens/s;
- scoring: ordered pairs/s of the one-forward verdict reading vs generating the verdict as
  text and parsing it (per pair, the straightforward way, and batched);
- memory: peak resident memory of DPO steps vs SFT steps of the same batch, each in its own
  process (`python -m bench.perf memory sft|dpo ...`);
- scale: one iteration's stages at several pool sizes, each in its own process.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from data.config import load_config
from infra.refs import base_ref, given_judge_ref
from flows.run import own_judge
from flows.runner import StageRunner
from tasks import curate, distil, dpo, score, search, sft, world

ROOT = Path(__file__).resolve().parents[1]
_VERDICT_TEXT = re.compile(r"\s*(Tie|A|B)(?![a-z])")


def _policy(cfg: Any, chain: list[str]) -> tuple[Any, Any]:
    from models.builtin import resolve_base
    from models.policy import build_policy

    adapters = [str(Path(p) / "adapter") for p in chain if (Path(p) / "adapter").is_dir()]
    return build_policy(resolve_base(cfg.model.base), adapters, device=cfg.model.device)


def _items(cfg: Any, n: int, split: str = "pool") -> list[dict]:
    from data.shapes import generate, load_image

    return [{"prompt_id": r["id"], "image": load_image(r["image"]), "question": r["question"],
             "record": r} for r in generate(split, n, cfg.data, cfg.seed)]


def bench_search(cfg: Any, chain: list[str], n_questions: int) -> dict:
    """The search (KV cache) vs its reference path, plain sampling and per-question loops, on
    the rationale-tuned policy (tools/search_bench.py)."""
    from tools.search_bench import benchmark_search

    model, processor = _policy(cfg, chain[:1])
    rep = benchmark_search(model, processor, _items(cfg, n_questions), cfg.search, seed=cfg.seed)
    return {"questions": n_questions, **{k: rep[k] for k in (
        "batched", "reference", "per_question_search", "batched_sample", "per_question_sample",
        "speedup_vs_reference", "speedup_vs_per_question_search", "speedup_vs_batched_sample",
        "speedup_vs_per_question_sample", "same_candidates", "same_as_reference")}}


def _judge_inputs(cfg: Any, n_items: int) -> tuple[Any, Any, list[dict]]:
    from data.perturb import candidate_items
    from data.shapes import generate
    from models.builtin import judge_path
    from models.scorer import load_judge

    # the one-forward verdict reading of the pair judge (the claims judge reads its marks the same way)
    model, tok = load_judge(judge_path("builtin", "pairwise"), device=cfg.model.device)
    items = candidate_items(generate("eval", n_items, cfg.data, cfg.seed), cfg.seed)
    for it in items:  # N = 6 candidates per prompt, as the search gives
        it["candidates"], it["kinds"], it["qualities"] = (it["candidates"][:6], it["kinds"][:6],
                                                          it["qualities"][:6])
    return model, tok, items


@torch.inference_mode()
def _generate_verdicts(model: Any, tok: Any, rows: list[list[int]], batch: int) -> list[str]:
    """The verdict as text: greedy generation of a few tokens, then parsed (the slow way)."""
    from models.scorer import judge_pad_id, pad_left

    out = []
    for s in range(0, len(rows), batch):
        enc = pad_left(rows[s:s + batch], judge_pad_id(tok), model.device)
        gen = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=judge_pad_id(tok))
        for text in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True):
            m = _VERDICT_TEXT.match(text)  # ' TieGold answer' -> Tie; ' Answer' -> unparsable
            out.append(m.group(1) if m else "unparsable")
    return out


def bench_scoring(cfg: Any, n_items: int, n_text_pairs: int) -> dict:
    """Ordered pairs/s: one forward per batch (the R-Scorer's way) vs generated text."""
    from models.scorer import PAIRWISE, VERDICTS, items_rows, verdict_probs

    model, tok, items = _judge_inputs(cfg, n_items)
    _, rows = items_rows(tok, items, cfg.scorer, PAIRWISE)
    t = time.perf_counter()
    probs = verdict_probs(model, tok, rows, VERDICTS[PAIRWISE], cfg.scorer.batch_size)
    fwd = len(rows) / (time.perf_counter() - t)
    sub = rows[:n_text_pairs]
    t = time.perf_counter()
    per_pair = _generate_verdicts(model, tok, sub, 1)
    gen1 = len(sub) / (time.perf_counter() - t)
    t = time.perf_counter()
    batched = _generate_verdicts(model, tok, sub, cfg.scorer.batch_size)
    genb = len(sub) / (time.perf_counter() - t)
    argmax = [VERDICTS[PAIRWISE][i] for i in probs[:len(sub)].argmax(1).tolist()]
    return {"ordered_pairs": len(rows), "forward_pairs_per_s": round(fwd, 1),
            "generate_per_pair_pairs_per_s": round(gen1, 1),
            "generate_batched_pairs_per_s": round(genb, 1),
            "speedup_vs_generate_per_pair": round(fwd / gen1, 1),
            "speedup_vs_generate_batched": round(fwd / genb, 1),
            "text_verdict_agrees_with_argmax": sum(a == b for a, b in zip(argmax, per_pair)) / len(sub),
            "text_unparsable": sum(v == "unparsable" for v in batched) / len(sub)}


# --------------------------------------------------------------------------- memory


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def memory_step(kind: str, config: str, overrides: list[str], steps: int, batch: int) -> dict:
    """Peak RSS of `steps` SFT or DPO steps at batch `batch` on the rationale pairs, this process."""
    import tempfile

    from data.shapes import generate
    from models.builtin import resolve_base
    from models.policy import build_policy

    cfg = load_config(config, overrides)
    torch.set_num_threads(1)
    model, processor = build_policy(resolve_base(cfg.model.base), [], device="cpu")
    recs = generate("rationale", steps * batch, cfg.data, cfg.seed)
    before = _peak_rss_mb()
    out = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    t = time.perf_counter()
    if kind == "sft":
        from models.sft import train_rationale_sft

        sc = cfg.rationale_sft.model_copy(update={"max_steps": steps, "batch_size": batch})
        train_rationale_sft(model, processor, recs, sc, out, cfg.seed)
    else:
        from models.dpo import train_dpo

        pairs = [{"prompt_id": r["id"], "question": r["question"], "image": r["image"],
                  "chosen": r["response"], "rejected": r["rationale"] + " Answer: none.",
                  "weight": 1.0} for r in recs]
        dc = cfg.dpo.model_copy(update={"max_steps": steps, "batch_size": batch})
        train_dpo(model, processor, pairs, dc, out, cfg.seed)
    return {"kind": kind, "steps": steps, "batch": batch, "seconds": round(time.perf_counter() - t, 1),
            "peak_rss_mb_before_training": round(before, 1), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def bench_memory(config: str, steps: int = 6, batch: int = 8) -> dict:
    """DPO vs SFT peak RSS, each in a fresh process (ru_maxrss is per process)."""
    res = {}
    for kind in ("sft", "dpo"):
        cmd = [sys.executable, "-m", "bench.perf", "memory", kind, "--config", config,
               "--steps", str(steps), "--batch", str(batch)]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"memory benchmark {kind} failed:\n{p.stderr[-2000:]}")
        res[kind] = json.loads(p.stdout.strip().splitlines()[-1])
    res["dpo_over_sft"] = round(res["dpo"]["peak_rss_mb"] / res["sft"]["peak_rss_mb"], 3)
    grow = lambda r: r["peak_rss_mb"] - r["peak_rss_mb_before_training"]  # noqa: E731
    res["dpo_over_sft_training_growth"] = round(grow(res["dpo"]) / max(grow(res["sft"]), 1e-9), 3)
    return res


# --------------------------------------------------------------------------- scale


def scale_point(config: str, overrides: list[str], n_prompts: int) -> dict:
    """One iteration's search -> score -> curate -> DPO on `n_prompts` pool prompts: the
    recipe's own stage steps (flows/runner.py, plain calls through the store of
    $SRC_STATE_DIR, where the main run's world and rationale SFT are reused), each timed by its
    own build time; peak RSS is this process's. The search stage's time includes the greedy
    responses it decodes for the headroom."""
    cfg = load_config(config, [*overrides, f"iterate.prompts_per_iteration={n_prompts}"])
    torch.set_num_threads(1)
    run = StageRunner(cfg, prefect=False)
    base = base_ref(cfg.model.base)
    w = run(world)
    chain = [run(sft, base=base, world=w)]
    cands = run(search, base=base, chain=chain, world=w, iteration=1)
    judge = (own_judge(run, cfg.scorer.model, base, w, given_judge_ref(cfg.scorer, cfg.data.world))
             or run(distil, candidates=cands, world=w))
    scores = run(score, judge=judge, candidates=cands)
    pairs = run(curate, candidates=cands, scores=scores)
    run(dpo, base=base, chain=chain, pairs=pairs, world=w)
    sec = {c["stage"]: c["build_seconds"] for c in run.calls if c["stage"] in ("search", "score", "curate", "dpo")}
    return {"prompts": n_prompts, "candidates": cands["meta"]["n_candidates"],
            "pairs": int(pairs["meta"].get("metrics", {}).get("curate/kept", 0)),
            "seconds": {k: round(v, 1) for k, v in sec.items()},
            "total_seconds": round(sum(sec.values()), 1), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def bench_scale(config: str, overrides: list[str], state: Path, sizes: list[int]) -> dict:
    """Each size in its own process on the store `state`; the growth exponent b of time ~
    prompts^b per stage."""
    import math

    points = []
    for n in sizes:
        cmd = [sys.executable, "-m", "bench.perf", "scale", "--config", config, "--prompts", str(n), *overrides]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "SRC_STATE_DIR": str(state)})
        if p.returncode != 0:
            raise RuntimeError(f"scale point {n} failed:\n{p.stderr[-2000:]}")
        points.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"  scale {n}: {points[-1]['total_seconds']}s, {points[-1]['peak_rss_mb']} MB", flush=True)

    def slope(ys: list[float]) -> float:  # least squares on log-log
        xs = [math.log(pt["prompts"]) for pt in points]
        ys = [math.log(max(y, 1e-6)) for y in ys]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")

    exps = {k: round(slope([pt["seconds"][k] for pt in points]), 2) for k in ("search", "score")}
    exps["search+score"] = round(slope([pt["seconds"]["search"] + pt["seconds"]["score"] for pt in points]), 2)
    exps["total"] = round(slope([pt["total_seconds"] for pt in points]), 2)
    return {"points": points, "time_exponent": exps,
            "memory_exponent": round(slope([pt["peak_rss_mb"] for pt in points]), 2)}


def main(argv: list[str] | None = None) -> int:
    """Subprocess entry points: `memory sft|dpo` and `scale` print one JSON line."""
    import argparse

    ap = argparse.ArgumentParser(description="bench subprocesses")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("memory")
    m.add_argument("kind", choices=["sft", "dpo"])
    s = sub.add_parser("scale")
    s.add_argument("--prompts", type=int, required=True)
    for p in (m, s):
        p.add_argument("--config", default="configs/builtin.yaml")
        p.add_argument("overrides", nargs="*")
    m.add_argument("--steps", type=int, default=6)
    m.add_argument("--batch", type=int, default=8)
    a = ap.parse_args(argv)
    if a.cmd == "memory":
        res = memory_step(a.kind, a.config, a.overrides, a.steps, a.batch)
    else:
        res = scale_point(a.config, a.overrides, a.prompts)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
