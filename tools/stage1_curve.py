"""Stage 1's learning curve on the built-in world: held-out accuracy, consistency and factuality
every N steps of rationale SFT, for one data seed and one training seed (docs/method.md 1).

The run trains exactly what the pipeline's stage 1 trains (`models.sft.train_rationale_sft` on
the world's rationale split, the config's `rationale_sft` section) and, every `--every` steps,
answers the held-out questions of the run (`data.n_eval`) and a disjoint dev slice (`--dev`
questions after them) greedily, scored by the exact scorer. `--train-seed` draws the LoRA
init and the data order apart from the data (`seed`), which the pipeline ties together.

    python -m tools.stage1_curve --seed 2 --train-seed 0 --every 100 --json curve.json
    python -m tools.stage1_curve --seed 2 --set rationale_sft.max_steps=4000 --every 500

`--init` continues a policy instead of the base: the adapters given (a run's stage-1 adapter,
`<state>/stages/rationale_sft/<key>/adapter`, then any DPO adapters) are merged first and
scored as step 0. With `--records-from` it trains on gold rationales the run never saw: the
"gold control" of docs/method.md section 7, what one SRC iteration's update does with
perfect data instead of curated pairs:

    python -m tools.stage1_curve --seed 1 --init <state>/stages/rationale_sft/<key>/adapter \
        --records-from 20000 --every 300 --set data.n_rationale=2400 rationale_sft.max_steps=300 \
        rationale_sft.batch_size=8 rationale_sft.learning_rate=5e-4 rationale_sft.lora.train_lm_head=false

About 11 minutes for 1,500 steps on one core. The final adapter goes to `--adapter`
(default `.src/stage1-curve/adapter`, outside git); no stage of the state folder is touched.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from data.config import ConfigError, load_config
from data.shapes import generate
from infra.store import write_json
from models.builtin import resolve_base
from models.evaluate import evaluate_policy
from models.policy import build_policy
from models.sft import train_rationale_sft

METRICS = ("accuracy", "consistency", "factuality")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("--seed", type=int, default=0, help="the world's seed (data)")
    ap.add_argument("--train-seed", type=int, default=None, help="LoRA init and order (default: --seed)")
    ap.add_argument("--every", type=int, default=100, help="evaluate every N steps")
    ap.add_argument("--dev", type=int, default=300, help="dev-slice questions (after the eval ones)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, section.field=value")
    ap.add_argument("--json", default=None, help="write the curve here (after every point)")
    ap.add_argument("--adapter", default=".src/stage1-curve/adapter", help="where the final adapter goes")
    ap.add_argument("--init", nargs="*", default=[], help="adapters merged into the base first, in "
                    "order (continue a run's policy); scored as step 0")
    ap.add_argument("--records-from", type=int, default=0, help="index of the first rationale record "
                    "(data.n_rationale from there on): 20000 = ones the built-in stage 1 never saw")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, [f"seed={args.seed}", *args.set])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.data.world != "shapes":
        print(f"error: the curve needs the built-in world's exact scorer; data.world is "
              f"{cfg.data.world!r}", file=sys.stderr)
        return 2
    if cfg.runtime.num_threads:  # as the flow does (flows/src_iterate.py)
        torch.set_num_threads(cfg.runtime.num_threads)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    records = generate("rationale", cfg.data.n_rationale, cfg.data, cfg.seed, start=args.records_from)
    splits = {"eval": generate("eval", cfg.data.n_eval, cfg.data, cfg.seed),
              "dev": generate("eval", args.dev, cfg.data, cfg.seed, start=cfg.data.n_eval)}
    try:
        model, processor = build_policy(resolve_base(cfg.model.base), args.init, dtype=cfg.model.dtype,
                                        device=cfg.model.device)
    except (OSError, ValueError) as e:  # a missing folder, or an adapter that does not fit
        print(f"error: --init: {e}", file=sys.stderr)
        return 2
    curve: list[dict] = []
    start = time.perf_counter()

    def score(step: int, total: int, loss: float | None) -> None:
        point = {"step": step, "loss": None if loss is None else round(loss, 4)}
        for name, recs in splits.items():
            summary, _ = evaluate_policy(model, processor, recs, cfg.eval)
            point[name] = {m: round(100 * summary[m], 1) for m in METRICS}
        point["seconds"] = round(time.perf_counter() - start)
        curve.append(point)
        if args.json:  # after every point: a killed run keeps its curve so far
            write_json(Path(args.json), {"seed": cfg.seed, "train_seed": train_seed, "set": args.set,
                                         "init": args.init, "records_from": args.records_from,
                                         "curve": curve})
        e = point["eval"]
        print(f"step {step:5d}/{total}  loss {point['loss']}  eval {e['accuracy']:.1f} / "
              f"{e['consistency']:.1f} / {e['factuality']:.1f}  dev consistency "
              f"{point['dev']['consistency']:.1f}", flush=True)

    def at_step(step: int, total: int, logs: dict) -> None:
        if step and not step % args.every and "loss" in logs:  # the closing log has no "loss"
            score(step, total, float(logs["loss"]))

    if args.init:  # the policy it continues from, before any step
        score(0, cfg.rationale_sft.max_steps, None)
    train_rationale_sft(model, processor, records, cfg.rationale_sft, args.adapter, train_seed,
                        at_step, merge=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
