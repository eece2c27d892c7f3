"""Every architecture of the model presets (configs/<preset>.yaml), shrunk to a few hundred thousand
parameters with random weights, for CPU tests: the presets' code paths without a download.

    python -m tools.tiny_archs --arch llava_next --out /tmp/tiny-llava-next

Architectures (`ARCHS`): `llava` (LLaVA-1.5: CLIP + Llama), `llava_next` (LLaVA-NeXT: CLIP +
Llama with any-resolution tiling), `qwen2_vl`, `qwen2_5_vl` (window attention in the vision
tower), and `qwen2` for the R-Scorer preset (a text-only Qwen2/Qwen2.5 causal LM). Each folder
is a stock checkpoint that `models.loading.load_lvlm` (or `models.scorer.load_judge`) loads
through the Auto classes, exactly as it loads the 7B model of the preset.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2VLImageProcessorPil,
)

from models.chat import LLAVA_CHAT_TEMPLATE, QWEN2VL_CHAT_TEMPLATE
from models.factory import (
    IMAGE,
    Qwen2VLImageOnlyProcessor,
    TinyLlavaSpec,
    TinyQwen2VLSpec,
    init_model,
    special_ids,
    build_tiny_llava,
    build_tiny_qwen2vl,
    llava_towers,
    qwen_text_config,
    qwen_tokenizer,
)

ARCHS = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "qwen2")


def build_tiny_llava_next(tokenizer: PreTrainedTokenizerFast, spec: TinyLlavaSpec | None = None,
                          seed: int = 0) -> tuple[LlavaNextForConditionalGeneration, LlavaNextProcessor]:
    """LLaVA-NeXT: the tiny LLaVA's towers, any-resolution tiling over 64 px tiles (a base view
    plus up to 2 tiles for the grid pinpoints below), the image newline parameter."""
    spec = spec or TinyLlavaSpec()
    ids = special_ids(tokenizer)
    s = spec.image_size
    vision, text = llava_towers(tokenizer, spec)
    pinpoints = [[s, s], [s, 2 * s], [2 * s, s]]
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=pinpoints,
                             image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
                             projector_hidden_act=spec.projector_hidden_act,
                             vision_feature_select_strategy="default",
                             vision_feature_layer=spec.vision_feature_layer, **ids)
    model = init_model(LlavaNextForConditionalGeneration, config, seed, ids)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": s}, crop_size={"height": s, "width": s}, image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   patch_size=spec.patch_size, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
    return model, processor


class Qwen25VLImageOnlyProcessor(Qwen2VLImageOnlyProcessor):
    """As `Qwen2VLImageOnlyProcessor`, saved as the stock `Qwen2_5_VLProcessor`."""

    stock_class = "Qwen2_5_VLProcessor"


def build_tiny_qwen2_5_vl(tokenizer: PreTrainedTokenizerFast, spec: TinyQwen2VLSpec | None = None,
                          seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen25VLImageOnlyProcessor]:
    """Qwen2.5-VL: the tiny Qwen2-VL's sizes; a vision tower with window attention (one full
    attention block), RMSNorm and a gated MLP, as in the 7B."""
    spec = spec or TinyQwen2VLSpec()
    tok = qwen_tokenizer(tokenizer)
    ids = special_ids(tok)
    tid = tok.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        vision_config={"depth": spec.vision_layers, "hidden_size": spec.vision_embed_dim,
                       "intermediate_size": spec.vision_embed_dim * spec.vision_mlp_ratio,
                       "num_heads": spec.vision_heads, "out_hidden_size": spec.hidden_size,
                       "patch_size": spec.patch_size, "spatial_merge_size": spec.merge_size,
                       "temporal_patch_size": spec.temporal_patch_size,
                       "window_size": spec.patch_size * spec.merge_size * 2,
                       "fullatt_block_indexes": [spec.vision_layers - 1]},
        text_config=qwen_text_config(tok, spec),
        image_token_id=tid("<|image_pad|>"), video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"), vision_end_token_id=tid("<|vision_end|>"), **ids)
    model = init_model(Qwen2_5_VLForConditionalGeneration, config, seed, ids)
    pixels = spec.image_size * spec.image_size
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": pixels, "longest_edge": pixels},
                                               patch_size=spec.patch_size, temporal_patch_size=spec.temporal_patch_size,
                                               merge_size=spec.merge_size)
    processor = Qwen25VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tok,
                                           chat_template=QWEN2VL_CHAT_TEMPLATE)
    return model, processor


def build_tiny_qwen2_judge(tokenizer: Any, seed: int = 0) -> Qwen2ForCausalLM:
    """The R-Scorer preset's architecture (Qwen2 / Qwen2.5 causal LM), tiny, over `tokenizer`."""
    import torch

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).eval()


def build_arch(arch: str, tokenizer: PreTrainedTokenizerFast, out: str | Path, seed: int = 0) -> Path:
    """Build the tiny `arch` over `tokenizer` (the built-in world's) and save it to `out`."""
    from models.loading import save_lvlm

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")
    out = Path(out)
    if arch == "qwen2":
        from models.scorer import save_judge

        save_judge(build_tiny_qwen2_judge(tokenizer, seed), tokenizer, out)
        return out
    build = {"llava": build_tiny_llava, "llava_next": build_tiny_llava_next, "qwen2_vl": build_tiny_qwen2vl,
             "qwen2_5_vl": build_tiny_qwen2_5_vl}[arch]
    model, processor = build(tokenizer, seed=seed)
    save_lvlm(model, processor, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="build a tiny random-weight model of a preset's architecture")
    ap.add_argument("--arch", required=True, choices=ARCHS)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the built-in base's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from models.builtin import resolve_base

    tok = AutoTokenizer.from_pretrained(args.tokenizer or resolve_base("builtin"))
    print(build_arch(args.arch, tok, args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
