"""Bootstrap the built-in reader (models/reader.py): trained, measured, committed with a manifest.

Training records (data/reading.py): the scorer split's gold rationales and edited copies of
them, each labelled with what it implies, plus (with --onpolicy) a policy's own search
candidates on other scorer-split prompts, labelled the same way. The reader starts from the
committed judge (same tokenizer, already trained on the world's text). It is measured on the
eval split: how often it reads the implied answer of held-out edited records, and, with
--onpolicy, how often its `supported` verdict equals the exact scorer's consistency on the
policy's held-out candidates (all, and the correct ones).

    python -m tools.reader_bootstrap --config configs/builtin.yaml --out models/builtin/reader \
        --onpolicy <stage-1 adapter> --onpolicy-cache /tmp/reader-cache
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from data.config import load_config
from data.reading import candidate_records, reader_records
from data.scoring import score_shapes
from data.shapes import generate
from tools.judge_bootstrap import adapter_record, adapter_digest, cached_candidates
from models.builtin import BUILTIN_JUDGE, BUILTIN_READER, git_commit
from models.reader import (
    agreement, load_reader, read_answers, read_candidates, train_reader,
)

THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)  # tried on the held-out candidates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("overrides", nargs="*", help="section.field=value")
    ap.add_argument("--out", default=str(BUILTIN_READER))
    ap.add_argument("--init", default=str(BUILTIN_JUDGE), help="model folder to start from")
    ap.add_argument("--records", type=int, default=12000, help="scorer-split records (gold + edits)")
    ap.add_argument("--edits", type=int, default=3, help="edited copies per record")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--onpolicy", default="", metavar="ADAPTER",
                    help="also train on this stage-1 adapter's candidates (scorer split, 800 prompts)")
    ap.add_argument("--onpolicy-n", type=int, default=800)
    ap.add_argument("--onpolicy-repeat", type=int, default=3, help="times each policy record is seen")
    ap.add_argument("--onpolicy-cache", default="", help="folder caching the candidates")
    ap.add_argument("--n-heldout", type=int, default=2000, help="held-out edited records to measure on")
    ap.add_argument("--threshold", type=float, default=None,
                    help="confidence a supported verdict needs; default: the best of THRESHOLDS on "
                         "the held-out policy candidates (--heldout-candidates or --onpolicy), else 0")
    ap.add_argument("--heldout-candidates", default="",
                    help="parquet of a policy's candidates on eval-split prompts (with facts) to "
                         "measure on and choose the threshold with")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    t0 = time.time()
    recs = generate("scorer", args.records, cfg.data, cfg.seed)
    train = reader_records(recs, cfg.seed, args.edits)
    held_policy: list[dict] = []
    if args.onpolicy:
        # prompts after the records used above, so no prompt is in both
        pool = generate("scorer", args.onpolicy_n, cfg.data, cfg.seed, start=args.records)
        train += candidate_records(cached_candidates(cfg, args.onpolicy, pool, args.onpolicy_cache, "train")
                                   ) * args.onpolicy_repeat
        held_policy = cached_candidates(cfg, args.onpolicy, generate("eval", 150, cfg.data, cfg.seed),
                                        args.onpolicy_cache, "heldout")
    if args.heldout_candidates:
        from data.records import read_records

        held_policy = read_records(args.heldout_candidates)
    print(f"{len(train)} training records", flush=True)
    model, tok = load_reader(args.init, device="cpu")

    def tick(step: int, total: int, logs: dict | None = None) -> None:
        if step % 200 == 0 or step == total:
            print(f"step {step}/{total} loss {(logs or {}).get('loss', float('nan')):.4f} "
                  f"{time.time() - t0:.0f}s", flush=True)

    fit = train_reader(model, tok, train, args.out, steps=args.steps, learning_rate=args.lr,
                       batch_size=args.batch_size, seed=cfg.seed, progress=tick)
    metrics, threshold = measure(model, tok, cfg, args.n_heldout, held_policy, args.threshold)
    manifest = {
        "threshold": threshold,
        "command": "python -m tools.reader_bootstrap " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(), "seed": cfg.seed, "init": Path(args.init).name,
        "records": args.records, "edits": args.edits, "onpolicy": bool(args.onpolicy),
        "onpolicy_n": args.onpolicy_n if args.onpolicy else 0, "train_records": len(train),
        "adapter": adapter_record(args.onpolicy) if args.onpolicy else None,
        "adapter_sha256": adapter_digest(args.onpolicy) if args.onpolicy else None,
        "fit": fit, "metrics": metrics, "seconds": round(time.time() - t0, 1),
        "world": cfg.data.world,  # a reader of this world only: infra/refs.py refuses it elsewhere
    }
    init_manifest = Path(args.init) / "manifest.json"
    if init_manifest.is_file() and Path(args.init).resolve() != BUILTIN_JUDGE.resolve():
        # continued from an earlier reader (the committed one is trained in two phases, Makefile)
        manifest["init_manifest"] = json.loads(init_manifest.read_text())
    (Path(args.out) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(Path(args.out) / "_trainer", ignore_errors=True)  # the Trainer's scratch folder
    print(json.dumps(metrics, indent=2))
    return 0


def measure(model, tok, cfg, n_heldout: int, held_policy: list[dict],
            threshold: float | None) -> tuple[dict, float]:
    """Held-out reading accuracy on edited eval records; on a policy's held-out candidates
    (when given) the agreement of `supported` with exact consistency at each of THRESHOLDS,
    and the threshold to use (the given one, else the best there, else 0)."""
    ev = reader_records(generate("eval", max(1, n_heldout // 4), cfg.data, cfg.seed), cfg.seed)[:n_heldout]
    read, _ = read_answers(model, tok, [r["question"] for r in ev], [r["rationale"] for r in ev])
    out = {"reader/heldout_read_accuracy": sum(a == r["implied"] for a, r in zip(read, ev)) / len(ev)}
    if not held_policy:
        return out, threshold or 0.0
    ex = [score_shapes(c["text"], c["facts"], c["gold"]) for c in held_policy]
    consistent = [e.consistent if e.parsable else None for e in ex]
    rows = read_candidates(model, tok, held_policy)  # threshold 0: every read answer counts

    def at(t: float) -> dict:
        said = [{**r, "supported": r["supported"] and r["confidence"] >= t}
                if r["supported"] is not None else r for r in rows]
        return agreement(said, consistent, [e.correct for e in ex])

    by_t = {t: at(t) for t in THRESHOLDS}
    if threshold is None:
        threshold = max(THRESHOLDS, key=lambda t: (by_t[t].get("reader/agree_consistent", 0.0), -t))
    out.update(by_t.get(threshold) or at(threshold))
    out["reader/agree_consistent_by_threshold"] = {str(t): round(m.get("reader/agree_consistent", 0.0), 4)
                                                   for t, m in by_t.items()}
    right = [e.consistent for e in ex if e.correct]
    if right:
        out["reader/consistent_share_correct"] = sum(right) / len(right)
    return out, threshold


if __name__ == "__main__":
    raise SystemExit(main())
