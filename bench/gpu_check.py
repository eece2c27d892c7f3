"""GPU check: one SRC iteration's heavy stages on a 7B-shaped LLaVA with random weights (bf16).

    bash scripts/gpu_check.sh                                 # a lent GPU machine, ~5 min
    python -m bench.gpu_check --shape 7b --device cuda --out gpu_check.json
    python -m bench.gpu_check --shape tiny --device cpu       # the same code on CPU (its test)

Builds LLaVA-1.5-7B's shape from config (CLIP ViT-L/14 at 336 px + a 32-layer, 4096-wide Llama
decoder: 6.7B parameters; the built-in world's small vocabulary, so the logits are smaller
than the real model's 32k) and a Qwen2.5-1.5B-shaped R-Scorer, both with random weights made
on the device (nothing downloaded), and runs on `--prompts` built-in-world questions:
1. candidate search (the pipeline's sentence-level beam search): generated tokens per second,
   and its speed-up over the reference path (`search.kv_cache=false`) with the share of
   identical candidates;
2. pairwise scoring of every ordered candidate pair (one forward per verdict): pairs per second;
3. LoRA DPO steps (gradient checkpointing, the reference = the adapter switched off): seconds
   per optimizer step;
and the peak GPU memory. Prints `name: value` lines and writes them as JSON with `--out`.
Random weights make long, unparsable candidates: the timings are of realistic lengths, the
content is noise. Pairs for DPO are (first, last) candidate of each prompt.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def shapes(kind: str):
    """(policy spec, judge sizes) for `kind`: '7b' (LLaVA-1.5-7B, Qwen2.5-1.5B) or 'tiny'."""
    from models.factory import TinyLlavaSpec

    if kind == "7b":
        policy = TinyLlavaSpec(image_size=336, patch_size=14, vision_hidden_size=1024, vision_layers=24,
                               vision_heads=16, vision_intermediate_size=4096, vision_feature_layer=-2,
                               hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                               intermediate_size=11008, max_position_embeddings=4096)
        judge = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                     num_key_value_heads=2, max_position_embeddings=4096)
    else:
        policy = TinyLlavaSpec()
        judge = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=1024)
    return policy, judge


def run(kind: str, device: str, n_prompts: int, dpo_steps: int) -> dict:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from data.config import load_config
    from data.judging import judge_items
    from data.shapes import generate, load_image
    from models.dpo import train_dpo
    from models.factory import build_tiny_llava
    from models.scorer import score_pairs
    from models.search import search_candidates

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = load_config(ROOT / "configs" / "llava-1.5-7b.yaml", [
        "data.world=shapes", "scorer.template=compact", "search.max_sentences=4",
        f"dpo.max_steps={dpo_steps}", f"dpo.batch_size={min(8, n_prompts)}",
        *([] if cuda else ["search.batch_size=8", "scorer.batch_size=8", "search.max_sentence_tokens=12"])])
    policy_spec, judge_sizes = shapes(kind)
    tok = AutoTokenizer.from_pretrained(ROOT / "models/builtin/base")
    judge_tok = AutoTokenizer.from_pretrained(ROOT / "models/builtin/judge")
    out: dict = {"shape": kind, "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
                 "prompts": n_prompts}
    t = time.perf_counter()
    with torch.device(device):  # random weights made where they run: no 28 GB fp32 copy on the host
        model, processor = build_tiny_llava(tok, policy_spec)
        judge = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(judge_tok), pad_token_id=judge_tok.pad_token_id,
                                             bos_token_id=judge_tok.bos_token_id,
                                             eos_token_id=judge_tok.eos_token_id, **judge_sizes))
    model, judge = model.to(dtype), judge.to(dtype).eval()
    out["policy_params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    out["build_s"] = time.perf_counter() - t
    pool = generate("pool", n_prompts, cfg.data, cfg.seed)
    items = [{"prompt_id": r["id"], "image": load_image(r["image"]), "question": r["question"]} for r in pool]

    def timed(fn):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        return result, time.perf_counter() - t0

    cands, s = timed(lambda: search_candidates(model, processor, items, cfg.search, seed=cfg.seed))
    tokens = sum(c["n_tokens"] for c in cands)
    out.update(search_s=s, candidates=len(cands), search_tokens=tokens, search_tokens_per_s=tokens / s)
    # the reference path (every prefix re-run through generate): what the KV cache saves
    ref, s_ref = timed(lambda: search_candidates(model, processor, items, cfg.search.model_copy(
        update={"kv_cache": False}), seed=cfg.seed))
    same = {(c["prompt_id"], c["text"]) for c in cands} & {(c["prompt_id"], c["text"]) for c in ref}
    out.update(search_reference_s=s_ref, search_speedup_vs_reference=s_ref / s,
               search_same_as_reference=len(same) / max(1, len(ref)))
    by_id = {r["id"]: r for r in pool}
    for c in cands:
        r = by_id[c["prompt_id"]]
        c.update(gold=r["answer"], reference=r["reference"], question=r["question"])
    rows, s = timed(lambda: score_pairs(judge, judge_tok, judge_items(cands), cfg.scorer))
    out.update(scoring_s=s, scored_pairs=len(rows), scoring_pairs_per_s=len(rows) / s)
    pairs = []
    for pid in dict.fromkeys(c["prompt_id"] for c in cands):
        cs = sorted((c for c in cands if c["prompt_id"] == pid), key=lambda c: c["cand_idx"])
        if len(cs) >= 2:
            pairs.append({"prompt_id": pid, "question": cs[0]["question"], "image": by_id[pid]["image"],
                          "chosen": cs[0]["text"], "rejected": cs[-1]["text"], "weight": 1.0})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        metrics, s = timed(lambda: train_dpo(model, processor, pairs, cfg.dpo, Path(tmp) / "adapter", cfg.seed,
                                             gradient_checkpointing=True, merge=False))
    out.update(dpo_pairs=len(pairs), dpo_steps=dpo_steps, dpo_s=s, dpo_step_s=s / dpo_steps,
               dpo_loss=metrics.get("loss"))
    out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("7b", "tiny"), default="7b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--dpo-steps", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    figures = run(args.shape, args.device, args.prompts, args.dpo_steps)
    for k, v in figures.items():
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
