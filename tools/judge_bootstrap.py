"""Bootstrap the built-in R-Scorer: a tiny judge trained on perturbation pairs, then measured.

The judge (models/scorer.py: a ~0.7M-parameter Llama sharing the base model's tokenizer) is
trained on the scorer split's perturbation pairs (data/perturb.py) and measured on held-out
eval-split candidates against the exact scorer (`judge/agreement`: unordered pairs the exact
scorer does not tie, both orders aggregated as in docs/method.md section 3). Training it takes far longer on
2 CPU cores than a `make run` should, so, like the base model, the result is committed under
models/builtin/judge with a manifest (command, seed, steps, wall time, commit, agreement), and
the pipeline's `scorer.model: builtin` loads it; `scorer.model: train` trains one in the
pipeline instead (a new world or tokenizer).

    python -m tools.judge_bootstrap --config configs/builtin.yaml --out models/builtin/judge
    python -m tools.judge_bootstrap --config configs/builtin.yaml scorer.train_steps=200 --out /tmp/judge
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from data.config import SRCConfig, load_config
from data.judging import judge_items, onpolicy_agreement, onpolicy_pair_records, with_steers
from data.perturb import agreement, candidate_items, pair_records, point_records
from data.shapes import generate
from models.builtin import BUILTIN_JUDGE, check_template, git_commit, resolve_base
from models.judge import Judge
from models.judge_training import new_tiny_judge, train_and_save, training_records
from models.scorer import (
    load_judge, pair_accuracy, score_pairs, score_points,
)

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("overrides", nargs="*", help="section.field=value, e.g. scorer.train_steps=3000")
    ap.add_argument("--out", default=str(BUILTIN_JUDGE))
    ap.add_argument("--n-heldout", type=int, default=300, help="eval-split items to measure on")
    ap.add_argument("--eval-every", type=int, default=0, help="agreement on 60 items every N steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0 = torch's default")
    ap.add_argument("--init", default="", help="continue training this judge folder (a second phase)")
    ap.add_argument("--focus", default="", metavar="FAMILY:N",
                    help="add N more scorer-split records of one question family (a family the "
                    "judge lags on), drawn after the first scorer.n_train_items")
    ap.add_argument("--flaw-pairs", type=int, default=2,
                    help="flaw-vs-flaw pairs per record (up to 6; e.g. misled vs unreasonable)")
    ap.add_argument("--onpolicy", default="", metavar="ADAPTER",
                    help="also train on the candidates of this policy (the base + this rationale "
                    "adapter, e.g. a run's sft/adapter) labelled by the exact scorer")
    ap.add_argument("--onpolicy-n", type=int, default=600,
                    help="scorer-split prompts the policy searches for --onpolicy pairs")
    ap.add_argument("--steer-share", type=float, default=0.2,
                    help="with --onpolicy: share of decisive pairs also trained with filler, a copied "
                    "verdict line or padding on the losing response (label unchanged)")
    ap.add_argument("--same-answer-share", type=float, default=0.0,
                    help="with --onpolicy: > 0 keeps on-policy pairs of different answers at most at "
                    "this share of the same-answer pairs (where only the rationale differs)")
    ap.add_argument("--onpolicy-cache", default="",
                    help="folder that keeps the searched candidates (parquet) for a re-run")
    ap.add_argument("--perturb-share", type=float, default=0.5,
                    help="with --onpolicy: perturbation pairs kept, as a share of on-policy pairs")
    return ap


def training_data(cfg, args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict]]:
    """(training records, held-out items, held-out on-policy candidates) of the command line's
    choices: perturbations of scorer-split records (a focus family, flaw pairs), and with
    --onpolicy a policy's own candidates labelled by the exact scorer."""
    recs = generate("scorer", cfg.scorer.n_train_items, cfg.data, cfg.seed)
    if args.focus:
        recs += focus_records(cfg, *_parse_focus(args.focus, cfg))
    train = training_records(cfg, recs, args.flaw_pairs)
    held = candidate_items(generate("eval", args.n_heldout, cfg.data, cfg.seed), cfg.seed)
    onpolicy_held: list[dict] = []
    if args.onpolicy:
        start = cfg.scorer.n_train_items + (int(args.focus.split(":")[1]) if args.focus else 0)
        pool = generate("scorer", start + args.onpolicy_n, cfg.data, cfg.seed)[start:]
        onpolicy_held = cached_candidates(cfg, args.onpolicy, generate("eval", 150, cfg.data, cfg.seed),
                                          args.onpolicy_cache, "heldout")
        onp = onpolicy_pair_records(cached_candidates(cfg, args.onpolicy, pool, args.onpolicy_cache, "train"),
                                    cfg.seed)
        rng = random.Random(f"mix/{cfg.seed}")
        if args.same_answer_share > 0:
            onp = _same_answer_focus(onp, args.same_answer_share, rng)
        keep = _whole_pairs(train, int(args.perturb_share * len(onp)), rng)
        print(f"on-policy: {len(onp)} pair rows from {len(pool)} prompts; {len(keep)} of "
              f"{len(train)} perturbation rows kept", flush=True)
        train = with_steers(onp + keep, args.steer_share, cfg.seed)
    return train, held, onpolicy_held


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    train, held, onpolicy_held = training_data(cfg, args)
    print(f"{len(train)} training records, {len(held)} held-out items; {cfg.scorer}", flush=True)
    if args.init:
        model, tokenizer = load_judge(args.init, device="cpu")
        check_template(args.init, cfg.scorer.template)
        model.train()
    else:
        model, tokenizer = new_tiny_judge(cfg)
    t0 = time.time()

    def tick(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            print(f"  step {done}/{total} {time.time() - t0:.0f}s", flush=True)
        if args.eval_every and done % args.eval_every == 0:
            a = agreement(score_pairs(model, tokenizer, held[:60], cfg.scorer), held[:60])
            model.train()
            print(f"  step {done}: agreement {a['judge/agreement']:.3f} tie_acc "
                  f"{a['judge/tie_acc']:.3f}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = train_and_save(model, tokenizer, cfg, train, held, out, tick)
    if onpolicy_held:
        m.update(onpolicy_metrics(model, tokenizer, cfg, onpolicy_held))
    m["judge/heldout_pair_acc"] = pair_accuracy(
        model, tokenizer, pair_records(generate("eval", 100, cfg.data, cfg.seed), cfg.seed), cfg.scorer)
    if cfg.scorer.mode == "pointwise":
        m["judge/heldout_point_acc"] = point_accuracy(model, tokenizer, cfg, args.n_heldout // 2)
    manifest = {
        "command": "python -m tools.judge_bootstrap " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": cfg.seed, "scorer": cfg.scorer.model_dump(mode="json"),
        "init": _init_record(args.init),
        "onpolicy": ({"adapter": args.onpolicy, "adapter_manifest": adapter_record(args.onpolicy),
                      "prompts": args.onpolicy_n, "perturb_share": args.perturb_share,
                      "same_answer_share": args.same_answer_share, "steer_share": args.steer_share}
                     if args.onpolicy else None),
        "wall_seconds": round(time.time() - t0, 1), "code_commit": git_commit(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "n_train_records": len(train), "n_heldout_items": len(held),
        "metrics": m, "torch": torch.__version__,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for k, v in m.items():
        print(f"{k:28s} {v:.4f}")
    print(f"saved to {out}")
    return 0


def policy_candidates(cfg: SRCConfig, adapter: str, records: list[dict]) -> list[dict]:
    """The search's candidates of the base + `adapter` on `records` (the config's search),
    with what judging and the exact scorer need (question, reference, gold, facts)."""
    from data.shapes import load_image
    from models.policy import build_policy
    from models.search import search_candidates

    model, processor = build_policy(resolve_base(cfg.model.base), [adapter], dtype=cfg.model.dtype,
                                    device="cpu")
    items = [{"prompt_id": r["id"], "image": load_image(r["image"]), "question": r["question"]}
             for r in records]
    t0 = time.time()
    cands = search_candidates(model, processor, items, cfg.search, seed=cfg.seed)
    by_id = {r["id"]: r for r in records}
    for c in cands:
        r = by_id[c["prompt_id"]]
        c.update(gold=r["answer"], facts=r["facts"], reference=r.get("reference"), question=r["question"])
    print(f"  searched {len(records)} prompts: {len(cands)} candidates, {time.time() - t0:.0f}s", flush=True)
    return cands


def onpolicy_metrics(model: torch.nn.Module, tokenizer: object, cfg: SRCConfig,
                     cands: list[dict]) -> dict[str, float]:
    """A judge on a policy's own candidates against the exact scorer: agreement on all and on
    same-answer pairs, and the win probability a wrong candidate gets from each steer
    (`judge/steer_<how>`: filler, a copied verdict line, padding) against the right one."""
    m = onpolicy_agreement(score_pairs(model, tokenizer, judge_items(cands), cfg.scorer), cands)
    m.update(Judge(cfg.scorer, model, tokenizer, seed=cfg.seed).steer(cands, n_prompts=None))
    return {f"judge/{k}": v for k, v in m.items()}


def cached_candidates(cfg: SRCConfig, adapter: str, records: list[dict], cache: str, name: str) -> list[dict]:
    """`policy_candidates`, read from / written to `cache` when a cache is given; the file name
    hashes the adapter's weights, the prompts, the search config and the seed, so another
    policy or prompt set never reads these candidates."""
    import hashlib

    from data.records import read_records, write_records

    h = hashlib.sha256((adapter_digest(adapter) or adapter).encode())
    h.update(json.dumps([[r["id"] for r in records], cfg.search.model_dump(mode="json"), cfg.seed]).encode())
    f = Path(cache) / f"{name}-{h.hexdigest()[:16]}.parquet" if cache else None
    if f is not None and f.is_file():
        return read_records(f)
    cands = policy_candidates(cfg, adapter, records)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        write_records(cands, f)
    return cands


def adapter_digest(adapter: str) -> str | None:
    """sha256 of an adapter folder's weights; None when it has none (e.g. a hub id)."""
    import hashlib

    f = Path(adapter) / "adapter_model.safetensors"
    return hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None


def _same_answer_focus(rows: list[dict], share: float, rng: random.Random) -> list[dict]:
    """Every pair whose two responses state the same answer, and of the others at most
    `share` x as many (both orders kept together)."""
    from data.scoring import parse_response

    pairs = [rows[i:i + 2] for i in range(0, len(rows) - 1, 2)]
    is_same = [parse_response(p[0]["response_a"]).answer == parse_response(p[0]["response_b"]).answer
               for p in pairs]
    same = [p for p, s in zip(pairs, is_same) if s]
    other = [p for p, s in zip(pairs, is_same) if not s]
    other = rng.sample(other, min(len(other), int(share * len(same))))
    print(f"  same-answer focus: {len(same)} same-answer pairs, {len(other)} others", flush=True)
    return [r for p in same + other for r in p]


def _whole_pairs(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    """About `n` of `rows`, keeping both orders of a pair (adjacent rows) together."""
    pairs = [rows[i:i + 2] for i in range(0, len(rows) - 1, 2)]
    return [r for p in rng.sample(pairs, min(len(pairs), n // 2)) for r in p]


def adapter_record(adapter: str) -> dict:
    """What trained the policy adapter, where its folder says (base_model.json)."""
    f = Path(adapter) / "base_model.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def point_accuracy(model: torch.nn.Module, tokenizer: object, cfg: SRCConfig, n_records: int) -> float:
    """Share of held-out pointwise items (eval split, half Good, half Bad) the judge gets right
    (p(Good) > 1/2 exactly for the Good ones)."""
    pts = point_records(generate("eval", n_records, cfg.data, cfg.seed), cfg.seed)
    items = [{"prompt_id": p["id"], "question": p["question"], "reference": p["reference"],
              "gold": p["gold"], "candidates": [p["response"]]} for p in pts]
    rows = score_points(model, tokenizer, items, cfg.scorer)
    return sum((r["p_good"] > 0.5) == (p["verdict"] == "Good") for r, p in zip(rows, pts)) / max(1, len(pts))


def focus_records(cfg: SRCConfig, family: str, n: int) -> list[dict]:
    """`n` scorer-split records of `family` after the first `scorer.n_train_items` (families
    cycle in order, so every len(families)-th record is one)."""
    fams = list(cfg.data.families)
    k = fams.index(family)
    start = cfg.scorer.n_train_items
    start += (k - start) % len(fams)  # the first record of `family` from there
    out = []
    while len(out) < n:
        out.append(generate("scorer", 1, cfg.data, cfg.seed, start=start)[0])
        start += len(fams)
    return out


def _parse_focus(spec: str, cfg: SRCConfig) -> tuple[str, int]:
    fam, _, n = spec.partition(":")
    if fam not in cfg.data.families or not n.isdigit():
        raise SystemExit(f"--focus {spec!r}: expected FAMILY:N with FAMILY one of {list(cfg.data.families)}")
    return fam, int(n)


def _init_record(path: str) -> dict | None:
    """What a second training phase started from: the earlier phase's manifest, verbatim."""
    if not path:
        return None
    f = Path(path) / "manifest.json"
    return json.loads(f.read_text()) if f.is_file() else {"path": path}


if __name__ == "__main__":
    raise SystemExit(main())
