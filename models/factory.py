"""Build, save and load vision-language models (LVLMs) and their processors.

Two kinds of callers:
  * tests and the CPU "tiny world" build ~1M-parameter LLaVA / Qwen2-VL models from scratch
    (`train_tokenizer`, `build_tiny_llava`, `build_tiny_qwen2vl`), save them with `save_lvlm`;
  * every stage then loads a model with `load_lvlm`, which goes through the Auto classes only,
    so the same code serves a tiny local folder and llava-hf/llava-1.5-7b-hf or Qwen2-VL-7B.

Tokenizer choices (documented once, here):
  * the tokenizer adds no special tokens by itself; the chat templates emit BOS/EOS, so text
    rendered by the template tokenizes the same with or without `add_special_tokens`;
  * `padding_side="left"` is saved and re-set by `load_lvlm`, because batched generation
    needs left padding; TRL's collators pad by hand on the side they need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)
from transformers.processing_utils import ProcessorMixin

from models.chat import LLAVA_CHAT_TEMPLATE, QWEN2VL_CHAT_TEMPLATE

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
QWEN_VISION_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
QWEN_VISION_TOKENS += ["<|image_pad|>", "<|video_pad|>"]
# Linear layers of a Llama/Qwen2 decoder block: what LoRA adapts in the language model.
LM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer for the tiny models (well under a second).

    Byte-level means any text round-trips, even characters never seen in `texts`. The
    LLaVA-style chat template is attached; `build_tiny_qwen2vl` swaps in its own.
    """
    specials = [PAD, BOS, EOS, UNK, IMAGE]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tokenizer = _wrap(tok, bos=BOS, eos=EOS, named={"image_token": IMAGE})
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    return tokenizer


# --------------------------------------------------------------------------- tiny LLaVA


@dataclass
class TinyLlavaSpec:
    """Sizes of the tiny LLaVA; the defaults give ~1M parameters (64 image tokens at 64 px)."""

    image_size: int = 64
    patch_size: int = 8
    vision_hidden_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 128
    # -1: use the last vision layer, so no vision weights sit unused (LLaVA-1.5 uses -2).
    vision_feature_layer: int = -1
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    projector_hidden_act: str = "gelu"


def llava_towers(tokenizer: PreTrainedTokenizerFast, spec: TinyLlavaSpec) -> tuple[CLIPVisionConfig, LlamaConfig]:
    """The CLIP vision tower and Llama decoder configs of a LLaVA-family model of `spec`."""
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        **special_ids(tokenizer),
    )
    return vision, text


def build_tiny_llava(
    tokenizer: PreTrainedTokenizerFast, spec: TinyLlavaSpec | None = None, seed: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Randomly initialised LLaVA (CLIP vision tower + Llama decoder) and its processor."""
    spec = spec or TinyLlavaSpec()
    ids = special_ids(tokenizer)
    vision, text = llava_towers(tokenizer, spec)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        projector_hidden_act=spec.projector_hidden_act,
        vision_feature_select_strategy="default",
        vision_feature_layer=spec.vision_feature_layer,
        image_seq_length=(spec.image_size // spec.patch_size) ** 2,
        **ids,
    )
    model = init_model(LlavaForConditionalGeneration, config, seed, ids)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP prepends a CLS token ("default" then drops it)
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


# --------------------------------------------------------------------------- tiny Qwen2-VL


@dataclass
class TinyQwen2VLSpec:
    """Sizes of the tiny Qwen2-VL; defaults give ~1.1M parameters (16 image tokens at 64 px).

    64 px / patch 8 = 8x8 patches, merged 2x2 -> 16 tokens. `mrope_section` splits the rotary
    half-dimension (head_dim / 2 = 128 / 4 / 2 = 16) between time, height and width.
    """

    image_size: int = 64
    patch_size: int = 8
    merge_size: int = 2
    temporal_patch_size: int = 2
    vision_embed_dim: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_mlp_ratio: int = 2
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    mrope_section: tuple[int, int, int] = (4, 6, 6)


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2-VL / Qwen2.5-VL processor without a video processor.

    The stock processor always builds `Qwen2VLVideoProcessor`, which imports torchvision;
    images need only the image processor and the tokenizer. Saved under the stock class name
    (`stock_class`) so the folder stays a stock checkpoint for machines with torchvision.
    """

    stock_class = "Qwen2VLProcessor"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["processor_class"] = self.stock_class
        return out


def qwen_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Copy of `tokenizer` with Qwen's ChatML/vision tokens, `<|im_end|>` as EOS and no BOS.

    Rebuilt from the backend rather than deep-copied, so that the named `image_token`
    ("<image>" for LLaVA) cannot leak into the Qwen processor.
    """
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.add_special_tokens(QWEN_VISION_TOKENS)
    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    tok = _wrap(backend, bos=None, eos="<|im_end|>", named=named)
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    return tok


def _wrap(
    backend: Tokenizer, bos: str | None, eos: str, named: dict[str, str]
) -> PreTrainedTokenizerFast:
    """HF tokenizer around a `tokenizers` object; `named` become attributes (`tok.image_token`)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=bos,
        eos_token=eos,
        unk_token=UNK,
        extra_special_tokens=named,
        padding_side="left",
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


def qwen_text_config(tok: PreTrainedTokenizerFast, spec: TinyQwen2VLSpec) -> dict[str, Any]:
    """The Qwen2 decoder of a Qwen2-VL-family model of `spec` (multimodal rotary sections)."""
    return {
        "vocab_size": len(tok),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": list(spec.mrope_section),
        },
        **special_ids(tok),
    }


def build_tiny_qwen2vl(
    tokenizer: PreTrainedTokenizerFast, spec: TinyQwen2VLSpec | None = None, seed: int = 0
) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLImageOnlyProcessor]:
    """Randomly initialised Qwen2-VL and an image-only processor (tokenizer copied and extended)."""
    spec = spec or TinyQwen2VLSpec()
    head_dim = spec.hidden_size // spec.num_heads
    if sum(spec.mrope_section) * 2 != head_dim:
        raise ValueError(
            f"mrope_section {spec.mrope_section} must sum to head_dim/2 = {head_dim // 2}"
        )
    tok = qwen_tokenizer(tokenizer)
    ids = special_ids(tok)
    tid = tok.convert_tokens_to_ids
    config = Qwen2VLConfig(
        vision_config={
            "depth": spec.vision_layers,
            "embed_dim": spec.vision_embed_dim,
            "hidden_size": spec.hidden_size,  # output width of the patch merger
            "num_heads": spec.vision_heads,
            "mlp_ratio": spec.vision_mlp_ratio,
            "patch_size": spec.patch_size,
            "spatial_merge_size": spec.merge_size,
            "temporal_patch_size": spec.temporal_patch_size,
        },
        text_config=qwen_text_config(tok, spec),
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
        **ids,
    )
    model = init_model(Qwen2VLForConditionalGeneration, config, seed, ids)
    pixels = spec.image_size * spec.image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels},  # every image -> image_size^2 px
        patch_size=spec.patch_size,
        temporal_patch_size=spec.temporal_patch_size,
        merge_size=spec.merge_size,
    )
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN2VL_CHAT_TEMPLATE
    )
    return model, processor


def special_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int | None]:
    return {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("pad", "bos", "eos")}


def init_model(cls: type[PreTrainedModel], config: Any, seed: int, ids: dict) -> PreTrainedModel:
    """Seeded random init; the generation config carries the tokenizer's special ids."""
    torch.manual_seed(seed)
    model = cls(config)
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    return model.eval()


# --------------------------------------------------------------------------- utilities


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (distinct) parameters; tied weights count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def language_model_lora_targets(model: torch.nn.Module) -> str:
    """Regex for PEFT `target_modules` matching only the language model's linear layers.

    PEFT full-matches a string against each module name, so the vision tower and projector
    (which also have q_proj/fc layers in some families) are left alone. Works for LLaVA and
    Qwen2-VL in transformers 5 ("model.language_model.layers.N.self_attn.q_proj").

    Raises:
        ValueError: no language-model linear layer matches (an unknown architecture).
    """
    suffixes = "|".join(LM_LINEAR_NAMES)
    pattern = rf"(?:.*\.)?language_model\.(?:.*\.)?(?:{suffixes})"
    hits = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and re.fullmatch(pattern, name)
    ]
    if not hits:
        raise ValueError(
            f"no language-model linear layer matches {pattern!r} in {type(model).__name__}"
        )
    return pattern
