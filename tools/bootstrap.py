"""Bootstrap the built-in base model: a tiny LLaVA pre-trained from scratch on short answers.

Like LLaVA's short-answer instruction data, the base sees only `Answer: x.` targets for
questions, so it answers without reasoning aloud and SRC has something real to fix. As in
LLaVA's stage-1 feature alignment, part of every batch is captioning ("Describe the image." ->
the scene's reference description): measured on 2 cores, a from-scratch tiny LLaVA trained on
short answers alone stayed at chance for 1,200 steps (one answer token per example is too
little signal to learn to read the image), while caption pre-training gives a dense signal. The result is committed
under models/builtin/base with a manifest (command, seed, steps, wall time, commit, accuracy).

    python -m tools.bootstrap --config configs/builtin.yaml --steps 1600 --out models/builtin/base

This is a from-scratch full-parameter pre-training on an endless procedural stream, which
TRL's SFTTrainer (finite datasets, LoRA-oriented defaults) does not fit; the loop is ~30 lines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from data.config import SRCConfig, load_config
from data.metrics import format_table
from data.shapes import generate, load_image
from models.encode import encode_examples
from models.factory import TinyLlavaSpec, build_tiny_llava, count_parameters, train_tokenizer
from models.loading import save_lvlm
from models.builtin import BUILTIN_BASE, evaluate_base, git_commit

CAPTION_PROMPT = "Describe the image."

Log = Callable[[str], None]


def pretrain(
    cfg: SRCConfig, steps: int, batch_size: int = 32, lr: float = 2e-3, log: Log = print,
    spec: TinyLlavaSpec | None = None, caption_frac: float = 0.5,
) -> tuple[torch.nn.Module, object, list[float]]:
    """Train tokenizer + tiny LLaVA from scratch on the short-answer stream; returns losses.

    The tokenizer is trained on the world's text and the judge templates, so the built-in
    R-Scorer shares it and every verdict word is one token.
    """
    from models.scorer import JUDGE_VOCAB_SIZE, judge_corpus

    torch.manual_seed(cfg.seed)
    tokenizer = train_tokenizer(judge_corpus(cfg.data, seed=cfg.seed) + [CAPTION_PROMPT],
                                JUDGE_VOCAB_SIZE)
    spec = spec or TinyLlavaSpec(image_size=cfg.data.image_size)
    model, processor = build_tiny_llava(tokenizer, spec, seed=cfg.seed)
    log(f"tiny LLaVA: {count_parameters(model):,} parameters, vocab {len(tokenizer)}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    # linear warm-up then cosine decay to 10% of the peak learning rate
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    )
    model.train()
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        recs = generate("pretrain", batch_size, cfg.data, cfg.seed, start=step * batch_size)
        n_cap = int(batch_size * caption_frac)
        questions = [CAPTION_PROMPT] * n_cap + [r["question"] for r in recs[n_cap:]]
        targets = [r["reference"] for r in recs[:n_cap]] + [r["short_response"] for r in recs[n_cap:]]
        batch = encode_examples(processor, [load_image(r["image"]) for r in recs], questions, targets)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step == steps - 1:
            recent = sum(losses[-50:]) / len(losses[-50:])
            rate = (step + 1) / (time.time() - t0)
            log(f"step {step + 1}/{steps} loss {recent:.3f} ({rate:.1f} steps/s, "
                f"eta {(steps - step - 1) / rate:.0f}s)")
    return model, processor, losses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", default=str(BUILTIN_BASE))
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--caption-frac", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model, processor, losses = pretrain(cfg, args.steps, args.batch_size, args.lr,
                                        caption_frac=args.caption_frac)
    train_s = time.time() - t0
    summary = evaluate_base(model, processor, cfg, args.eval_n)
    print(format_table(summary))
    out = Path(args.out)
    save_lvlm(model, processor, out)
    manifest = {
        "command": "python -m tools.bootstrap " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": cfg.seed, "steps": args.steps, "caption_frac": args.caption_frac, "batch_size": args.batch_size, "lr": args.lr,
        "train_seconds": round(train_s, 1), "code_commit": git_commit(),
        "parameters": count_parameters(model), "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "eval_n": args.eval_n,
        "accuracy": summary["accuracy"],
        "accuracy_per_family": {f: b["accuracy"] for f, b in summary["families"].items()},
        "torch": torch.__version__,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"saved to {out} ({train_s:.0f}s training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
