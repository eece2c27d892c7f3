"""Benchmark of the batched sentence-level search against a per-question loop.

    python -m models.search_bench --bench [--threads 1 --device cuda --questions N ...]
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
from models.search import _Beam, _HFRows, _search, _vocab, search_candidates  # noqa: F401

# --------------------------------------------------------------------------- benchmark


class _ForwardClock:
    """Wall time inside the model's forward, split into prefill (many tokens) and decode."""

    def __init__(self, model: Any):
        self.model, self.seconds, self.calls, self._kind, self._t0 = model, {}, 0, "", 0.0

    def _pre(self, _m: Any, _args: Any, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        self._kind = "decode" if ids is not None and ids.shape[1] == 1 else "prefill"
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def _post(self, _m: Any, _args: Any, _kwargs: dict, _out: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds[self._kind] += time.perf_counter() - self._t0
        self.calls += 1

    def run(self, fn: Callable[[], list[list[int]]]) -> dict[str, Any]:
        """Time `fn` (which returns each item's candidate lengths in tokens)."""
        self.seconds, self.calls = {"prefill": 0.0, "decode": 0.0}, 0
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
        return {"seconds": round(wall, 3), "candidates": n, "cand_per_s": round(n / wall, 2),
                "mean_tokens": round(sum(map(sum, lengths)) / max(1, n), 1),
                "forward_share": round(sum(self.seconds.values()) / wall, 3),
                "prefill_share": round(self.seconds["prefill"] / wall, 3),
                "forward_calls": self.calls}


@torch.inference_mode()
def benchmark_search(
    model: Any, processor: Any, items: Sequence[dict], cfg: SearchConfig, seed: int = 0
) -> dict[str, Any]:
    """Candidates/s of the batched search vs per-question loops, and time inside forward.

    `batched`: this module's search over all items. `per_question_search`: the same search
    once per item (what batching across questions buys; it must find the same texts).
    `per_question_sample`: the straightforward loop, one `generate(do_sample=True,
    num_return_sequences=n)` per item, n and max_new_tokens taken from the batched result.
    Search only: the teacher-forced scoring that `search_candidates` adds is not timed.
    """
    model.eval()
    clock, found, singles = _ForwardClock(model), [], []
    rows_fn = _HFRows(model, processor, cfg)  # the vocabulary masks, built once

    def lengths(beams: list[list[_Beam]]) -> list[list[int]]:
        return [[len(b.tokens) for b in bs] for bs in beams]

    def sample_loop() -> list[list[int]]:
        torch.manual_seed(seed)
        out = []
        for it, beams in zip(items, found):
            enc = encode_prompts(processor, [it["image"]], [it["question"]], model_device(model))
            gen = model.generate(**enc, do_sample=True, temperature=cfg.temperature,
                                 top_p=cfg.top_p, num_return_sequences=max(1, len(beams)),
                                 max_new_tokens=max([len(b.tokens) for b in beams] + [1]))
            new = gen[:, enc["input_ids"].shape[1]:]
            out.append((new != processor.tokenizer.pad_token_id).sum(1).tolist())
        return out

    def batched() -> list[list[int]]:
        found.extend(_search(rows_fn, processor.tokenizer, items, cfg, seed))
        return lengths(found)

    def per_question() -> list[list[int]]:
        singles.extend(_search(rows_fn, processor.tokenizer, [it], cfg, seed)[0] for it in items)
        return lengths(singles)

    report: dict[str, Any] = {"batched": clock.run(batched),
                              "per_question_search": clock.run(per_question),
                              "per_question_sample": clock.run(sample_loop)}
    for name in ("per_question_search", "per_question_sample"):
        ratio = report["batched"]["cand_per_s"] / max(report[name]["cand_per_s"], 1e-9)
        report[f"speedup_vs_{name}"] = round(ratio, 2)
    report["same_candidates"] = [[b.text for b in bs] for bs in found] == [
        [b.text for b in bs] for bs in singles]
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
