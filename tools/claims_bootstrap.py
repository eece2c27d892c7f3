"""Bootstrap the built-in claim checker (models/claims.py): trained, measured, committed with a
manifest.

Training records (data/claims.py): the scorer split's gold rationale sentences and generated
claims about each scene (mentions, near misses, counts, denials, relations), about half true,
each labelled by the world's exact check; with --candidates, also the sentences of a policy's
own search candidates (on pool prompts of another seed, say), labelled the same way. The
checker starts from the committed judge (same tokenizer, already trained on the world's text).
It is measured on claims of the eval split and, with --heldout-candidates, on the sentences of
a policy's candidates it was not trained on.

    python -m tools.claims_bootstrap --config configs/builtin.yaml --out models/builtin/claims
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from data.claims import balance, candidate_claim_records, claim_records
from data.config import load_config
from data.records import read_records
from data.shapes import generate
from models.builtin import BUILTIN_CLAIMS, BUILTIN_JUDGE, git_commit
from models.claims import checker_accuracy, save_checker, train_checker
from models.scorer import load_judge


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("overrides", nargs="*", help="section.field=value")
    ap.add_argument("--out", default=str(BUILTIN_CLAIMS))
    ap.add_argument("--init", default=str(BUILTIN_JUDGE), help="model folder to start from")
    ap.add_argument("--records", type=int, default=4000, help="scorer-split records")
    ap.add_argument("--per-record", type=int, default=4, help="(true, false) claim pairs per record")
    ap.add_argument("--candidates", nargs="*", default=[], help="candidates.parquet files to train on too")
    ap.add_argument("--heldout-candidates", nargs="*", default=[], help="candidates.parquet files to measure on")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--evidence", choices=("overlap", "all"), default="overlap",
                    help="what of the reference the checker reads per claim (scorer.evidence)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    t0 = time.time()
    train = claim_records(generate("scorer", args.records, cfg.data, cfg.seed), cfg.seed, args.per_record)
    policy = [r for f in args.candidates for r in candidate_claim_records(read_records(f))]
    train += balance(policy, cfg.seed)  # the policy's sentences are mostly false: as many true
    print(f"{len(train)} training claims (half true)", flush=True)
    model, tok = load_judge(args.init, device="cpu")

    def tick(step: int, total: int) -> None:
        if step % 250 == 0 or step == total:
            print(f"step {step}/{total} {time.time() - t0:.0f}s", flush=True)

    fit = train_checker(model, tok, train, steps=args.steps, learning_rate=args.lr,
                        batch_size=args.batch_size, max_length=args.max_length, seed=cfg.seed, progress=tick,
                        select=args.evidence == "overlap")
    metrics = measure(model, tok, cfg, args.heldout_candidates, args.max_length, args.evidence == "overlap")
    save_checker(model, tok, args.out, args.max_length, args.evidence, cfg.data.world)
    manifest = {
        "command": "python -m tools.claims_bootstrap " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(), "seed": cfg.seed, "init": Path(args.init).name, "mode": "claims",
        "max_length": args.max_length, "records": args.records, "train_claims": len(train),
        "fit": fit, "metrics": metrics, "seconds": round(time.time() - t0, 1),
    }
    (Path(args.out) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({**fit, **metrics}, indent=2))
    return 0


def measure(model, tok, cfg, heldout: list[str], max_length: int, select: bool) -> dict:
    """Accuracy on the eval split's generated claims, and on held-out candidates' sentences."""
    ev = claim_records(generate("eval", 500, cfg.data, cfg.seed), cfg.seed)
    out = {f"eval/{k}": v for k, v in checker_accuracy(model, tok, ev, max_length, select=select).items()}
    for f in heldout:
        held = candidate_claim_records(read_records(f))
        out.update({f"candidates/{k}": v for k, v in checker_accuracy(model, tok, held, max_length,
                                                                       select=select).items()})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
