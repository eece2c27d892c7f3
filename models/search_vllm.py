"""The vLLM backend of candidate search (`search.backend: vllm`), for CUDA machines.

vLLM is no dependency of this project: it pins its own CUDA build of torch and does not install
on the CPU machines the project is developed and tested on. It is imported here only, and config
validation refuses `search.backend=vllm` where it is missing. The sentence-level beam search
itself (ranking, dedup, when a beam is finished, the per-row random keys) is
`models.beam.run_search`, shared with the transformers backend; this module only continues rows,
the one step vLLM does faster (paged KV cache; prefix caching shares the prompt and image of a
question's B x K rows, the prefill that `model.generate` repeats):

  * pi_t (the policy with its adapters merged) is saved to a temporary folder with `save_lvlm`,
    and a vLLM engine is started on it next to the policy, taking
    `search.vllm_gpu_memory_utilization` of the GPU; it is shut down before the search
    returns, so scoring and DPO get the memory back;
  * a question's prompt is its chat-template text tokenised once, with one image placeholder
    (vLLM expands it to the model's image tokens itself);
  * each row is one request (`request_specs`): prompt ids + the beam's token ids, the image,
    and `SamplingParams(temperature=T, top_p, max_tokens=<step budget>, seed=<the row's key>,
    logprobs=0, stop_token_ids=..., logit_bias=...)` with the transformers backend's
    boundaries and bans (`models.beam.vocab_masks`): a row stops at EOS or, in beam mode, at its
    first token holding `.`, `?`, `!` or a newline; special tokens but EOS are never sampled;
  * a row's log-prob sum is vLLM's cumulative log-prob of the sampled tokens, taken from the
    raw logits (before temperature: vLLM V1's default `logprobs_mode`), as the transformers
    backend's T=1 sum (`row_result`).

The records are then built exactly as for the transformers backend (`search_candidates`: the
policy's teacher-forced pass gives the log-probs and the answer confidence), so every later stage
is unchanged. The candidates differ from the transformers backend's for the same seed (vLLM draws
from its own per-request generator): same distribution, other draws. `search.batch_size` is the
rows handed to vLLM per step; vLLM batches inside, so larger (e.g. 512) is faster there.

Tested on CPU: `request_specs`, `row_result` and the prompt (plain functions, no vLLM needed);
tests/unit/test_search_vllm.py runs the backend against the transformers one where vLLM and a
GPU exist (marker `gpu`).
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Sequence
from typing import Any

import torch

from data.config import SearchConfig
from models.chat import render_prompt
from models.loading import save_lvlm
from models.beam import Beam, Progress, Row, Vocab, run_search, vocab_masks

BAN_BIAS = -100.0  # a logit bias no token overcomes: vLLM's way to leave a token out


def request_specs(rows: Sequence[Row], cfg: SearchConfig, budget: int, sentence: bool,
                  vocab: Vocab) -> list[dict[str, Any]]:
    """One vLLM request per row, as plain data: `prompt_token_ids` (the question's prompt ids +
    the beam's tokens), `image`, and `sampling` (the `SamplingParams` keyword arguments).

    A row's `inputs` is the question's prompt state from `_VLLMRows.prompt`.
    Example: a row with prompt ids [1, 5, 4] (4 = the image placeholder) and beam tokens [9, 7],
    seed 42, beam mode, budget 32 -> prompt_token_ids [1, 5, 4, 9, 7], sampling {"seed": 42,
    "max_tokens": 32, "stop_token_ids": <EOS and boundary tokens>, ...}.
    """
    stop = vocab.stop if sentence else vocab.eos
    stop_ids = stop.nonzero().flatten().tolist()
    bias = {int(i): BAN_BIAS for i in vocab.banned.nonzero().flatten().tolist()}
    return [{
        "prompt_token_ids": list(r.inputs["prompt_token_ids"]) + list(r.tokens),
        "image": r.inputs["image"],
        "sampling": {"n": 1, "temperature": cfg.temperature, "top_p": cfg.top_p,
                     "max_tokens": budget, "seed": r.seed, "logprobs": 0,
                     "stop_token_ids": stop_ids, "logit_bias": bias,
                     # neutral values: a checkpoint's generation_config must not reshape scores
                     "repetition_penalty": 1.0, "skip_special_tokens": False},
    } for r in rows]


def row_result(token_ids: Sequence[int], cumulative_logprob: float | None,
               eos: torch.Tensor) -> tuple[list[int], float, bool]:
    """A finished vLLM completion as the search's row result: (new token ids, log-prob sum,
    ended with EOS).

    Raises:
        ValueError: no cumulative log-prob (the request did not ask for log-probs).
    """
    if cumulative_logprob is None:
        raise ValueError("vLLM returned no cumulative log-prob: request logprobs=0")
    tokens = [int(t) for t in token_ids]
    ended = bool(tokens) and bool(eos[tokens[-1]])
    return tokens, float(cumulative_logprob), ended


class _VLLMRows:
    """The search backend (see `models.search.HFRows`) on a vLLM engine."""

    def __init__(self, llm: Any, processor: Any, cfg: SearchConfig, vocab: Vocab):
        self.llm, self.processor, self.cfg, self.vocab = llm, processor, cfg, vocab

    def prompt(self, item: dict) -> dict[str, Any]:
        text = render_prompt(self.processor, item["question"])
        ids = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"prompt_token_ids": ids, "image": item["image"]}

    def __call__(self, rows: Sequence[Row], sentence: bool, budget: int) -> list[tuple[list[int], float, bool]]:
        from vllm import SamplingParams

        specs = request_specs(rows, self.cfg, budget, sentence, self.vocab)
        prompts = [{"prompt_token_ids": s["prompt_token_ids"], "multi_modal_data": {"image": s["image"]}}
                   for s in specs]
        outs = self.llm.generate(prompts, [SamplingParams(**s["sampling"]) for s in specs], use_tqdm=False)
        return [row_result(o.outputs[0].token_ids, o.outputs[0].cumulative_logprob, self.vocab.eos)
                for o in outs]


def vllm_search(model: Any, processor: Any, items: Sequence[dict], cfg: SearchConfig, seed: int,
                progress: Progress | None = None) -> list[list[Beam]]:
    """`models.beam.run_search` with rows continued by a vLLM engine on `model`'s weights."""
    from vllm import LLM

    vocab = vocab_masks(model, processor)
    with tempfile.TemporaryDirectory(prefix="src-vllm-") as folder:
        save_lvlm(model, processor, folder)
        llm = LLM(model=folder, tokenizer=folder, dtype=str(model.dtype).removeprefix("torch."),
                  seed=seed, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                  enable_prefix_caching=True, limit_mm_per_prompt={"image": 1})
        try:
            return run_search(_VLLMRows(llm, processor, cfg, vocab), processor.tokenizer, items, cfg,
                           seed, progress)
        finally:
            del llm
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
