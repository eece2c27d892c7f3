"""Benchmark of the sentence-level search against its reference path and plain sampling.

    python -m tools.search_bench --bench [--threads 1 --device cuda --questions N ...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from data.config import SearchConfig
from models.encode import encode_examples, encode_prompts
from models.generation import model_device
from models.beam import Beam, run_search, vocab_masks
from models.search import HFRows
from models.search_cache import CachedRows

# --------------------------------------------------------------------------- benchmark


class _ForwardClock:
    """Wall time inside the model's forward, split into prefill (many tokens) and decode."""

    def __init__(self, model: Any):
        self.model, self.seconds, self.calls, self._kind, self._t0 = model, {}, 0, "", 0.0
        self.prefill_tokens, self._tokens = 0, 0

    def _pre(self, _m: Any, _args: Any, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        self._kind = "decode" if ids is not None and ids.shape[1] == 1 else "prefill"
        self._tokens = ids.numel() if ids is not None else 0
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def _post(self, _m: Any, _args: Any, _kwargs: dict, _out: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds[self._kind] += time.perf_counter() - self._t0
        self.calls += 1
        self.prefill_tokens += self._tokens if self._kind == "prefill" else 0

    def run(self, fn: Callable[[], list[list[int]]]) -> dict[str, Any]:
        """Time `fn` (which returns each item's candidate lengths in tokens)."""
        self.seconds, self.calls, self.prefill_tokens = {"prefill": 0.0, "decode": 0.0}, 0, 0
        hooks = [self.model.register_forward_pre_hook(self._pre, with_kwargs=True),
                 self.model.register_forward_hook(self._post, with_kwargs=True)]
        try:
            t = time.perf_counter()
            lengths = fn()
            wall = time.perf_counter() - t
        finally:
            for h in hooks:
                h.remove()
        n = sum(map(len, lengths))
        tokens = sum(map(sum, lengths))
        return {"seconds": round(wall, 3), "candidates": n, "cand_per_s": round(n / wall, 2),
                "mean_tokens": round(tokens / max(1, n), 1), "tokens_per_s": round(tokens / wall, 1),
                "forward_share": round(sum(self.seconds.values()) / wall, 3),
                "prefill_share": round(self.seconds["prefill"] / wall, 3),
                "forward_calls": self.calls, "prefill_tokens": self.prefill_tokens}


@torch.inference_mode()
def benchmark_search(
    model: Any, processor: Any, items: Sequence[dict], cfg: SearchConfig, seed: int = 0
) -> dict[str, Any]:
    """Candidates/s and tokens/s of the search against the ways one could do without it, and
    its time inside forward passes.

    `batched`: the search over all items on the KV cache (`search.kv_cache=true`).
    `reference`: the same search re-running every prefix through `generate`
    (`search.kv_cache=false`); it must find the same texts up to float noise.
    `per_question_search`: the cached search once per item (what batching across questions buys).
    `batched_sample`: plain sampling of as many candidates per item as the search found, items
    batched `cfg.batch_size` rows a `generate` call, `max_new_tokens` the longest candidate of
    the batch: what any candidate generator costs (`generate` repeats each prompt per sequence).
    `per_question_sample`: the same sampling, one `generate` call per item (the naive loop).
    Search only: the teacher-forced scoring that `search_candidates` adds is not timed.
    """
    model.eval()
    clock, found, ref, singles = _ForwardClock(model), [], [], []
    vocab = vocab_masks(model, processor)  # the vocabulary masks, built once
    cached, reference = CachedRows(model, processor, cfg, vocab), HFRows(model, processor, cfg)

    def lengths(beams: list[list[Beam]]) -> list[list[int]]:
        return [[len(b.tokens) for b in bs] for bs in beams]

    def sample(group: int) -> Callable[[], list[list[int]]]:
        def run() -> list[list[int]]:
            torch.manual_seed(seed)
            out = []
            for lo in range(0, len(items), group):
                its, beams = items[lo:lo + group], found[lo:lo + group]
                n = max(1, max(len(bs) for bs in beams))
                enc = encode_prompts(processor, [it["image"] for it in its], [it["question"] for it in its],
                                     model_device(model))
                gen = model.generate(**enc, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                                     num_return_sequences=n, pad_token_id=processor.tokenizer.pad_token_id,
                                     max_new_tokens=max([len(b.tokens) for bs in beams for b in bs] + [1]))
                new = (gen[:, enc["input_ids"].shape[1]:] != processor.tokenizer.pad_token_id).sum(1)
                out += [new[i * n:(i + 1) * n].tolist() for i in range(len(its))]
            return out
        return run

    def batched() -> list[list[int]]:
        found.extend(run_search(cached, processor.tokenizer, items, cfg, seed))
        return lengths(found)

    def reference_run() -> list[list[int]]:
        ref.extend(run_search(reference, processor.tokenizer, items, cfg, seed))
        return lengths(ref)

    def per_question() -> list[list[int]]:
        singles.extend(run_search(cached, processor.tokenizer, [it], cfg, seed)[0] for it in items)
        return lengths(singles)

    n_per = max(1, cfg.n_candidates)
    report: dict[str, Any] = {"batched": clock.run(batched), "reference": clock.run(reference_run),
                              "per_question_search": clock.run(per_question),
                              "batched_sample": clock.run(sample(max(1, cfg.batch_size // n_per))),
                              "per_question_sample": clock.run(sample(1))}
    for name in ("reference", "per_question_search", "per_question_sample", "batched_sample"):
        ratio = report["batched"]["cand_per_s"] / max(report[name]["cand_per_s"], 1e-9)
        report[f"speedup_vs_{name}"] = round(ratio, 2)
    texts = lambda beams: [[b.text for b in bs] for bs in beams]  # noqa: E731
    report["same_candidates"] = texts(found) == texts(singles)
    same = sum(len(set(a) & set(b)) for a, b in zip(texts(found), texts(ref)))
    report["same_as_reference"] = round(same / max(1, sum(map(len, texts(ref)))), 3)
    report["examples"] = [b.text for b in found[0][:3]] if found else []
    return report


def _bench_main(argv: list[str] | None = None) -> int:
    """A fresh tiny LLaVA tuned briefly on gold rationales (or --model), benchmarked."""
    import json

    from data.config import DataConfig
    from data.shapes import corpus, generate, load_image
    from models.factory import build_tiny_llava, train_tokenizer
    from models.loading import load_lvlm

    ap = argparse.ArgumentParser(description="benchmark the candidate search")
    ap.add_argument("--bench", action="store_true", required=True)
    ap.add_argument("--model", default="", help="a saved LVLM folder; default: fresh tiny LLaVA")
    ap.add_argument("--train-steps", type=int, default=150, help="rationale SFT of a fresh model")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--mode", default="beam", choices=["beam", "sample"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    args = ap.parse_args(argv)
    if args.threads:  # 1 on a shared CPU: OpenMP spin-waits stall tiny models under contention
        torch.set_num_threads(args.threads)
    data = DataConfig()
    if args.model:
        model, processor = load_lvlm(args.model, device=args.device)
    else:
        model, processor = build_tiny_llava(train_tokenizer(corpus(data, n=500)))
        model.to(args.device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for step in range(args.train_steps):  # full-parameter SFT on `<rationale> Answer: x.`
            recs = generate("rationale", 32, data, start=32 * step)
            loss = model(**encode_examples(
                processor, [load_image(r["image"]) for r in recs], [r["question"] for r in recs],
                [r["response"] for r in recs], args.device)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"trained {args.train_steps} steps, last loss {loss.item():.3f}", flush=True)
    items = [{"prompt_id": r["id"], "image": load_image(r["image"]), "question": r["question"]}
             for r in generate("pool", args.questions, data)]
    cfg = SearchConfig(mode=args.mode, batch_size=args.batch_size)
    print(json.dumps(benchmark_search(model, processor, items, cfg), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(_bench_main())
