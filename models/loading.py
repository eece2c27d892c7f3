"""Saving and loading an LVLM with its processor: the committed tiny models and real
checkpoints (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL) by local folder or hub id, through
the same Auto classes; nothing special-cases the tiny ones."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PreTrainedModel
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available
from transformers.utils import logging as hf_logging

from models.factory import Qwen2VLImageOnlyProcessor

# model_type -> stock processor class, for families whose stock processor needs a video
# processor (torchvision-only); see `Qwen2VLImageOnlyProcessor`.
NO_VIDEO_FALLBACK = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def save_lvlm(model: PreTrainedModel, processor: ProcessorMixin, path: str | os.PathLike) -> Path:
    """Save model weights/config and processor (tokenizer, image processor, chat template)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def load_lvlm(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load any image-text-to-text model and its processor from a local folder or hub id.

    Only the Auto classes are used. The one exception: Qwen2-VL-family processors are built
    without their video processor when torchvision is missing (chosen by `model_type`).

    Args:
        name_or_path: local folder, or hub id such as "llava-hf/llava-1.5-7b-hf".
        dtype: "float32", "bfloat16", "float16" or "auto" (the checkpoint's dtype).
        device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
        trust_remote_code: passed to the Auto classes.

    Raises:
        ValueError: the path does not exist and is not a hub id, or loading failed (offline,
            missing files); the message names `name_or_path`.
    """
    name = str(name_or_path)
    local = Path(name).expanduser()
    if not local.exists() and (not _HUB_ID.match(name) or name.startswith((".", "~"))):
        raise ValueError(f"model path {name!r} does not exist and is not a hub id")
    source = str(local) if local.exists() else name
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype, None)
    if torch_dtype is None:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    common = {"trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **common)
        processor = load_processor(source, config.model_type, common)
        with weights_bar_hidden():
            model = AutoModelForImageTextToText.from_pretrained(
                source, config=config, dtype=torch_dtype, device_map=device, use_safetensors=True, **common
            )  # safetensors only: a pickled checkpoint (pytorch_model.bin) could run code on load
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false")
        hint = " (HF_HUB_OFFLINE is set: download it first or pass a local folder)"
        hint = hint if offline else ""
        raise ValueError(f"could not load model {name!r}{hint}: {err}") from err
    processor.tokenizer.padding_side = "left"  # batched generation
    return model.eval(), processor


@contextmanager
def weights_bar_hidden() -> Iterator[None]:
    """transformers 5 draws a "Loading weights" tqdm bar per `from_pretrained`: in a run log a
    line of bar per model load (search, scoring, DPO and evaluation each load one). Hidden while
    our loaders run, through transformers' own tqdm hook; download bars (huggingface_hub's) are
    untouched."""
    def hook(factory: Any, args: Any, kwargs: dict) -> Any:
        if kwargs.get("desc") == "Loading weights":
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous else factory(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(hook)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


def load_processor(source: str, model_type: str, common: dict[str, Any]) -> ProcessorMixin:
    """AutoProcessor, except the documented image-only fallback for the Qwen2-VL family.

    That fallback is taken when torchvision is missing, or when the folder has no video
    processor config (our saved tiny models), which the stock processor cannot do without.
    """
    if model_type not in NO_VIDEO_FALLBACK:
        return AutoProcessor.from_pretrained(source, **common)
    if is_torchvision_available():
        try:
            return AutoProcessor.from_pretrained(source, **common)
        except (OSError, ValueError):
            pass
    processor = Qwen2VLImageOnlyProcessor.from_pretrained(source)
    processor.stock_class = NO_VIDEO_FALLBACK[model_type]
    return processor
