"""The policy pi_t as base model + a chain of LoRA adapters, and the LoRA plumbing of training.

Decision (docs/method.md section 6, "any pi_t is rebuilt from the base and the chain of adapters"):
every training stage (rationale SFT, then each DPO iteration) trains a *fresh* LoRA adapter on
the current policy; the adapter folder is that stage's product; afterwards the adapter is merged
into the weights (`merge_and_unload()`). So:
  * pi_t = base merged with [rationale SFT adapter, DPO adapter 1, ..., DPO adapter t], in
    order; `build_policy` rebuilds any pi_t from files alone, never from state left in a process;
  * during DPO iteration t the reference (TRL disables the adapter) is exactly pi_{t-1}, with
    no second model copy in memory and no "ref" adapter (TRL adds one, a frozen copy, when it
    is handed a model that already carries an adapter: we never do that).
A merge in bf16/fp16 rounds W + BA; the in-memory and the rebuilt policy merge the same way,
and in float32 the rebuilt policy's logits equal the in-memory ones to ~1e-6 (tested).

Next to each adapter we write `base_model.json` (model_type, architecture, base name), so that
`check_adapter_fits` can refuse an adapter trained on another architecture even where the
module names and shapes happen to agree (the tiny LLaVA and tiny Qwen2-VL decoders do).

The training plumbing shared by `models.sft` and `models.dpo` lives here too: the PEFT
`LoraConfig` built from a config section, the TRL argument defaults, the progress callback,
and `finish_adapter` (save, merge, clean up).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftConfig, PeftModel
from peft.tuners.tuners_utils import check_target_module_exists
from safetensors.torch import load_file
from transformers import PreTrainedModel, TrainerCallback
from transformers.processing_utils import ProcessorMixin
from transformers.trainer_callback import PrinterCallback

from data.config import LoraConfig
from models.factory import language_model_lora_targets
from models.loading import load_lvlm

Progress = Callable[[int, int, dict[str, Any]], None]
BASE_INFO_FILE = "base_model.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # never adapter_model.bin: unpickling can run code


# --------------------------------------------------------------------------- building pi_t


def build_policy(
    base: str,
    adapters: list[str] | tuple[str, ...] = (),
    dtype: str = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load `base` and merge the adapters into it, in order: pi_t for t = len(adapters).

    Raises:
        ValueError: the base cannot be loaded, or an adapter does not fit (see `check_adapter_fits`).
    """
    model, processor = load_lvlm(base, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    for path in adapters:
        check_adapter_fits(model, path)
        with library_deprecations_hidden():
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        model = peft_model.merge_and_unload()
    return model.eval(), processor


def check_adapter_fits(base_model: torch.nn.Module, adapter_dir: str | Path) -> None:
    """Refuse an adapter that was not trained on this kind of model, with a message saying why.

    Checks, in order: the folder holds a LoRA adapter; the architecture recorded next to it
    (if any) is the model's; its target modules match modules of the model; every LoRA weight
    names an existing linear layer with matching shapes; every targeted layer has weights.

    Raises:
        ValueError: naming the adapter folder and the first mismatches.
    """
    path = Path(adapter_dir)
    where = f"adapter {str(path)!r}"
    if not (path / "adapter_config.json").is_file():
        raise ValueError(f"{where}: no adapter_config.json (not a PEFT adapter folder)")
    config = PeftConfig.from_pretrained(str(path))
    if config.peft_type != "LORA":  # a user's file, not a programming error: ValueError
        raise ValueError(f"{where}: a {config.peft_type} adapter, only LoRA adapters are supported")
    info_file = path / BASE_INFO_FILE
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        model_type = getattr(getattr(base_model, "config", None), "model_type", None)
        if info.get("model_type") and model_type and info["model_type"] != model_type:
            raise ValueError(
                f"{where} was trained on a {info['model_type']!r} model "
                f"({info.get('architecture')}), not on this {model_type!r} model "
                f"({type(base_model).__name__})"
            )
    linear = {
        name: m for name, m in base_model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    targeted = {n for n in linear if check_target_module_exists(config, n)}
    if not targeted:
        raise ValueError(
            f"{where}: target_modules {config.target_modules!r} match no linear layer of "
            f"{type(base_model).__name__}"
        )
    shapes = _adapter_shapes(path)
    problems: list[str] = []
    seen: set[str] = set()
    for key, shape in sorted(shapes.items()):
        module, _, kind = key.rpartition(".lora_")
        module = module.removeprefix("base_model.model.")
        seen.add(module)
        layer = linear.get(module)
        if layer is None:
            problems.append(f"{module}: no such linear layer")
            continue
        want = (config.r, layer.in_features) if kind.startswith("A") else (layer.out_features, config.r)
        if tuple(shape) != want:
            problems.append(f"{module}.lora_{kind}: shape {tuple(shape)}, the model needs {want}")
    problems += [f"{m}: targeted but the adapter has no weights for it" for m in sorted(targeted - seen)]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise ValueError(f"{where} does not fit {type(base_model).__name__}: {shown}")


def _adapter_shapes(path: Path) -> dict[str, torch.Size]:
    """LoRA tensor name -> shape, read from the adapter's safetensors file."""
    file = path / ADAPTER_WEIGHTS
    if not file.is_file():
        pickled = " (adapter_model.bin is not read: convert it to safetensors)" if (
            path / "adapter_model.bin").is_file() else ""
        raise ValueError(f"adapter {str(path)!r}: no {ADAPTER_WEIGHTS}{pickled}")
    return {k: v.shape for k, v in load_file(str(file)).items() if ".lora_" in k}


# --------------------------------------------------------------------------- training plumbing


def peft_lora_config(model: torch.nn.Module, cfg: LoraConfig) -> PeftLoraConfig:
    """PEFT LoraConfig from a config section; "all-linear" = the language model's linear layers.

    PEFT's own "all-linear" would also adapt the vision tower and the projector, which SRC
    does not train (the paper tunes the language model; the projector is tiny anyway).
    `train_lm_head` trains the output head in full (`modules_to_save`).
    """
    targets = cfg.target_modules
    if targets == "all-linear":
        targets = language_model_lora_targets(model)
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        # A base pre-trained on short answers gives words it never emitted ('There', 'objects')
        # ~0.3% each, and LoRA inside the layers barely lifts them (measured: ' There' at 3.4%
        # after rationale SFT), so sampled search candidates start sentences with junk tokens.
        # Training the output head itself fixes exactly that (TRL refuses LoRA on lm_head).
        modules_to_save=["lm_head"] if cfg.train_lm_head else None,
    )


def per_device_batch(batch_size: int, what: str = "batch_size") -> int:
    """Examples per process so that the global batch stays `batch_size` under a distributed
    launch (`WORLD_SIZE` processes): the result then does not depend on the GPU count.

    Raises:
        ValueError: `batch_size` is not a multiple of the number of processes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if batch_size % world:
        raise ValueError(f"{what}={batch_size} is not a multiple of the {world} training processes")
    return batch_size // world


def trainer_defaults(
    model: torch.nn.Module, seed: int, gradient_checkpointing: bool, disable_tqdm: bool,
    checkpoint_dir: str | Path | None = None, save_steps: int = 0,
) -> dict[str, Any]:
    """TRL/Trainer arguments every stage shares; they undo TRL defaults that hurt here.

    TRL 1.16's configs default to `gradient_checkpointing=True` (about 20% slower, pointless on
    a tiny model) and to `bf16=True` autocast whenever fp16 is off, also on CPU. transformers 5
    renamed the flag `activation_checkpointing` and copies TRL's old-name default into it unless
    the new name is set, so we set the new name: checkpointing only when asked; bf16 autocast
    only for a bf16 model. No reporting integrations, a log line (and a progress call) every
    step; checkpoints (weights, optimizer, scheduler, RNG) every `save_steps` into
    `checkpoint_dir` only when both are given: `run_trainer` resumes from the last one.
    """
    param = next(model.parameters())
    ckpt = {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 1} if (
        checkpoint_dir and save_steps > 0) else {"save_strategy": "no"}
    return {
        **ckpt,
        "seed": seed,
        "data_seed": seed,
        "report_to": [],
        "logging_strategy": "steps",
        "logging_steps": 1,
        "disable_tqdm": disable_tqdm,
        "activation_checkpointing": gradient_checkpointing,
        "bf16": param.dtype == torch.bfloat16,
        "fp16": False,
        "use_cpu": param.device.type == "cpu",  # train where the model was put
        "dataloader_num_workers": 0,
    }


class ProgressReporter(TrainerCallback):
    """Calls `progress(step, total, logs)` on every Trainer log event (each step, and the end)."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.progress(int(state.global_step), int(state.max_steps), dict(logs or {}))


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-<step>` in `folder` that a kill did not cut short, else None.

    The Trainer writes `trainer_state.json` last (after weights, optimizer, scheduler and RNG
    states), so a checkpoint whose state file parses is complete; incomplete ones are removed.
    """
    found = sorted(((int(p.name.rpartition("-")[2]), p) for p in folder.glob("checkpoint-*")
                    if p.is_dir() and p.name.rpartition("-")[2].isdigit()), reverse=True)
    for _, path in found:
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)  # killed while it was being written
    return None


@contextmanager
def library_deprecations_hidden() -> Iterator[None]:
    """Around PEFT adapter loading and a TRL trainer's construction and training: PEFT and TRL
    read `is_gradient_checkpointing` and the transformers Trainer calls
    `gradient_checkpointing_enable`, names transformers 5 deprecated; each printed a
    FutureWarning per model load or training that no code of ours can mend. Only those two
    messages are hidden, only there."""
    with warnings.catch_warnings():
        for name in ("is_gradient_checkpointing", "gradient_checkpointing_enable"):
            warnings.filterwarnings("ignore", message=f"`{name}` is deprecated", category=FutureWarning)
        yield


def lora_trainer(trainer_class: type, model: Any, args: Any, dataset: Any, processor: Any, lora: Any,
                 progress: Progress | None, **extra: Any) -> Any:
    """A TRL trainer (SFTTrainer, DPOTrainer or a subclass) that injects a LoRA adapter of
    `lora` (config.LoraConfig) into `model`, reporting to `progress`; `extra` goes to the
    trainer as is (DPO's `ref_model`)."""
    with library_deprecations_hidden():
        return trainer_class(model=model, args=args, train_dataset=dataset, processing_class=processor,
                             peft_config=peft_lora_config(model, lora),
                             callbacks=[ProgressReporter(progress)] if progress else None, **extra)


def run_trainer(trainer: Any) -> tuple[float, list[dict[str, Any]]]:
    """`trainer.train()`, from the last checkpoint in `output_dir` if checkpoints are on;
    returns wall seconds and the per-step log entries (those with a loss).

    The Trainer prints every log dict to stdout when its bar is off (`PrinterCallback`); our
    progress callback is the channel for those, so the printer is removed.
    """
    trainer.remove_callback(PrinterCallback)
    resume = (last_complete_checkpoint(Path(trainer.args.output_dir))
              if trainer.args.save_strategy != "no" else None)
    start = time.perf_counter()
    with library_deprecations_hidden():
        trainer.train(resume_from_checkpoint=resume)  # a killed stage goes on from its last checkpoint
    seconds = time.perf_counter() - start
    steps = [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    return seconds, steps


def portable_name(name: str) -> str:
    """A model path inside this project as a path relative to it (`models/builtin/base`), so
    that what records it reads the same in any checkout; anything else as given."""
    project = Path(__file__).resolve().parents[1]
    try:
        return Path(name).resolve().relative_to(project).as_posix() if name else name
    except ValueError:  # outside the project, or a hub id
        return name


def finish_adapter(
    peft_model: PeftModel, base_model: PreTrainedModel, out_dir: str | Path, merge: bool = True
) -> Path:
    """Save the adapter (the stage's product) to `out_dir`, then merge it into `base_model`.

    After a merge, `base_model` (the very object the caller passed to the trainer) holds
    pi_t = pi_{t-1} + adapter, with plain linear layers again. TRL patches `forward` on the
    instance (its fused LM head); that patch is removed so the caller gets a stock model.
    With `merge=False` the adapter stays injected and active (tests inspect it).
    `base_model.json` records the architecture, for `check_adapter_fits`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    base = portable_name(getattr(base_model.config, "_name_or_path", "") or "")
    # the folder's content is its digest: no absolute path of this checkout in it (PEFT writes
    # the base's path into adapter_config.json and a model card README.md)
    (out / "README.md").unlink(missing_ok=True)
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base or config.get("base_model_name_or_path")
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    info = {
        "model_type": getattr(base_model.config, "model_type", None),
        "architecture": type(base_model).__name__,
        "base": base or None,
    }
    (out / BASE_INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    if merge:
        merged = peft_model.merge_and_unload()
        assert merged is base_model, "PEFT merged into a different object than the caller's model"
    vars(base_model).pop("forward", None)
    if getattr(base_model, "is_activation_checkpointing", False):
        base_model.activation_checkpointing_disable()  # the Trainer turned it on for training only
    base_model.eval()
    return out

