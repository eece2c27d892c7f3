"""Every SRC stage once, as plain function calls (no Prefect flow, no MLflow): the built-in
world, or your own data (`data.world=files|hf`, read and validated by the world stage's code).

    python scripts/run_stages.py --config configs/builtin.yaml [section.field=value ...]

Prints the numbers a reader checks first: format rate after rationale SFT, R-Scorer agreement
with the exact scorer, kept fraction, DPO loss, and held-out metrics before/after one round.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.environment import apply_defaults  # noqa: E402

apply_defaults()  # this script's start: before transformers reads the offline settings

import torch  # noqa: E402

from data.config import load_config  # noqa: E402
from data.curation import curate  # noqa: E402
from data.metrics import format_table  # noqa: E402
from data import perturb_text  # noqa: E402
from data.perturb import agreement, candidate_items  # noqa: E402
from data.records import read_records  # noqa: E402
from data.shapes import generate, load_image  # noqa: E402
from models.builtin import resolve_base  # noqa: E402
from models.dpo import train_dpo  # noqa: E402
from models.evaluate import evaluate_policy  # noqa: E402
from models.policy import build_policy  # noqa: E402
from models.builtin import check_template, judge_path  # noqa: E402
from models.judge_training import new_tiny_judge, train_and_save, training_records  # noqa: E402
from models.judge import open_judge  # noqa: E402
from models.search import search_candidates  # noqa: E402
from models.sft import train_rationale_sft  # noqa: E402


def stamp(t0: float, msg: str) -> None:
    print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)


def splits(cfg, out: Path) -> dict[str, list[dict]]:
    """The records of every split: generated (the built-in world) or your data, through the
    world stage's own reading and validation (tasks/world.py)."""
    sizes = {"rationale": cfg.data.n_rationale, "pool": cfg.iterate.prompts_per_iteration,
             "eval": cfg.data.n_eval, "scorer": cfg.scorer.n_train_items}
    if cfg.data.world == "shapes":
        return {s: generate(s, n, cfg.data, cfg.seed) for s, n in sizes.items()}
    from tasks.world import build_world

    (out / "world").mkdir(parents=True, exist_ok=True)
    build_world(cfg.model_dump(mode="json"), out / "world", "run-stages")
    return {s: read_records(out / "world" / f"{s}.parquet")[:n] for s, n in sizes.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("--out", default=None, help="folder for adapters (default: a temp folder)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(cfg.runtime.num_threads or torch.get_num_threads())
    out = Path(args.out or tempfile.mkdtemp(prefix="src-stages-"))
    t0 = time.time()
    base = resolve_base(cfg.model.base)
    results: dict = {}
    data = splits(cfg, out)
    ev_recs = data["eval"]

    def evaluate(model, processor, name):
        summary, _ = evaluate_policy(model, processor, ev_recs, cfg.eval)
        results[name] = {k: summary[k] for k in ("accuracy", "consistency", "factuality", "format_rate")}
        stamp(t0, f"{name}:\n{format_table(summary)}")

    model, processor = build_policy(base, [], dtype=cfg.model.dtype, device=cfg.model.device,
                                    trust_remote_code=cfg.model.trust_remote_code)
    ckpt = cfg.model.gradient_checkpointing
    evaluate(model, processor, "base")
    sft = train_rationale_sft(model, processor, data["rationale"],
                              cfg.rationale_sft, out / "sft", cfg.seed, gradient_checkpointing=ckpt)
    stamp(t0, f"rationale SFT: {sft}")
    evaluate(model, processor, "rationale_tuned")

    held_recs = ev_recs[: max(cfg.scorer.n_heldout, 1)]
    held = (candidate_items if perturb_text.has_facts(held_recs) else perturb_text.candidate_items)(held_recs, cfg.seed)
    if cfg.scorer.model == "distill":
        raise SystemExit("make stages distils no judge (it needs the flow's teacher cache and the first "
                         "search): run `src run`, or give a judge (scorer.model=builtin, a folder or a hub id)")
    if cfg.scorer.model == "train":  # a tiny judge trained here, as `scorer.model=train` does
        if cfg.scorer.mode == "claims":
            raise SystemExit("make stages trains no claim checker: run `src run` with scorer.model=train, "
                             "or give one (scorer.model=builtin, a folder or a hub id)")
        judge, judge_tok = new_tiny_judge(cfg, base)
        train_and_save(judge, judge_tok, cfg, training_records(cfg, data["scorer"]), held, out / "judge")
        where = str(out / "judge")
    elif cfg.scorer.model == "oracle":  # the exact scorer judges (the ceiling ablation)
        where = None
    else:  # the committed judge (or a given one)
        where = judge_path(cfg.scorer.model, cfg.scorer.mode)
        check_template(where, cfg.scorer.template, cfg.scorer.mode)
    judge = open_judge(cfg.scorer, where, cfg.model.device, cfg.seed)  # models/judge.py: any kind
    held_pairs, _, _ = judge.verdicts(held)
    results["scorer"] = jm = agreement(held_pairs, held) if held_pairs else {}
    stamp(t0, f"R-Scorer ({judge.kind}): {jm}")

    pool = data["pool"]
    items = [{"prompt_id": r["id"], "image": load_image(r["image"]), "question": r["question"],
              **({"choices": r["choices"]} if r.get("choices") else {})} for r in pool]
    cands = search_candidates(model, processor, items, cfg.search, seed=cfg.seed)
    by_id = {r["id"]: r for r in pool}
    for c in cands:
        r = by_id[c["prompt_id"]]
        c.update(gold=r["answer"], facts=r.get("facts"), reference=r.get("reference"), question=r["question"])
    stamp(t0, f"search: {len(cands)} candidates for {len(pool)} prompts")
    verdict = judge.judge(cands)
    for c, r in zip(cands, verdict.reads or []):  # the reader's verdict, as the score stage writes it
        c["supported"] = r["supported"]
    cur = curate(cands, verdict.pairs, cfg.curation, point_rows=verdict.points)
    results["curate"] = {**cur.metrics(), **{f"judge/{k}": v for k, v in verdict.diagnostics.items()}}
    stamp(t0, f"curation: {results['curate']} dropped {cur.dropped}")
    pairs = [{**p, "image": by_id[p["prompt_id"]]["image"]} for p in cur.pairs]
    if pairs:
        dm = train_dpo(model, processor, pairs, cfg.dpo, out / "dpo1", cfg.seed, gradient_checkpointing=ckpt)
        results["dpo"] = {k: v for k, v in dm.items() if isinstance(v, (int, float))}
        stamp(t0, f"DPO: {results['dpo']}")
        evaluate(model, processor, "iteration_1")
    print(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
