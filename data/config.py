"""The one typed config of the project: a root model with one section per SRC stage.

Loaded from YAML (`configs/*.yaml`), then overridden field by field with `section.field=value`
strings (from the command line or Prefect deployment parameters). Unknown keys and bad values
are errors naming the field path and the value.

Fields marked `runtime=True` (batch sizes, device, workers) change how fast a stage runs, not
what it produces; `stage_signature()` leaves them out so tuning throughput never invalidates
a cached result.

    python -m data.config configs/builtin.yaml dpo.beta=0.2   # prints the resolved config
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

# the section base, the runtime marker and the dataset sections live in data/config_data.py
from data.config_data import (  # noqa: F401  (re-exported: `from data.config import DataConfig`)
    ConfigError,
    DataConfig,
    FilesConfig,
    HFConfig,
    Section,
    runtime,
)
from data.config_text import format_error, parse_overrides, set_path, yaml_reason
import importlib.util


class ModelConfig(Section):
    base: str = Field(
        "builtin",
        description="'builtin' (the committed tiny LLaVA) or a local path / hub id of an LVLM",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    trust_remote_code: bool = Field(False, description="only for models that need it, by name")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory in training")
    device: str = runtime("auto", "'auto', 'cpu', 'cuda', 'cuda:1', ...")


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: list[str] | str = Field(
        "all-linear", description="module names to adapt, or 'all-linear' (language model only)"
    )
    train_lm_head: bool = Field(
        False, description="also train the output head in full (PEFT modules_to_save): for "
        "words the base rarely emitted; ~vocab x hidden parameters more (131M on a 7B)"
    )


class RationaleSFTConfig(Section):
    lora: LoraConfig = Field(default_factory=LoraConfig)
    learning_rate: float = Field(2e-3, gt=0, description="AdamW learning rate")
    max_steps: int = Field(300, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="examples per step (changes the result)")
    max_examples: int = Field(0, ge=0, description="cap on training examples; 0 = all")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "linear", description="learning-rate schedule after the warm-up (transformers' names)")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of the steps spent warming up")
    save_steps: int = runtime(50, "checkpoint every N steps: a killed training resumes from the "
                              "last checkpoint; 0 = never", ge=0)
    source: Literal["dataset", "teacher"] = Field(
        "dataset", description="rationales shipped with the data, or written by `teacher`"
    )


class TeacherConfig(Section):
    """A teacher VLM behind an OpenAI-compatible chat endpoint (vLLM, TGI, `transformers serve`)."""

    endpoint: str | None = runtime(
        None, "base URL, e.g. http://127.0.0.1:8000/v1 (…/chat/completions is added); where the teacher "
        "runs, not what it says (teacher.model): not in cache keys")
    model: str = Field("", description="model name the endpoint serves, e.g. Qwen/Qwen2-VL-72B-Instruct")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable with the API key")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature of the teacher")
    max_tokens: int = Field(256, ge=1, description="tokens per teacher reply")
    timeout_s: float = runtime(120.0, "seconds per request", gt=0)
    retries: int = runtime(3, "retries of a failed request, with exponential backoff", ge=0)
    concurrency: int = runtime(4, "requests in flight at once", ge=1)


class SearchConfig(Section):
    mode: Literal["beam", "sample"] = Field("beam", description="sentence-level beam or sampling")
    beams: int = Field(4, ge=1, description="B: live beams kept per question")
    per_beam: int = Field(3, ge=1, description="K: sampled continuations per beam and step")
    temperature: float = Field(0.9, gt=0, description="T: sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1.0, description="nucleus sampling mass")
    n_candidates: int = Field(6, ge=2, description="N: distinct candidates kept per question")
    max_sentences: int = Field(8, ge=1, description="give up on a beam after this many sentences")
    max_sentence_tokens: int = Field(32, ge=1, description="tokens per sentence step at most")
    kv_cache: bool = Field(True, description="prefill each prompt once and keep each beam's KV cache "
                           "across steps (models/search_cache.py); false re-runs every prefix (the reference)")
    batch_size: int = runtime(64, "sequences per forward pass")
    shard_size: int = runtime(64, "prompts per checkpointed shard: a killed search resumes "
                              "from its last finished shard", ge=1)
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="decoder of the search: 'transformers' (model.generate), or "
        "'vllm' (a vLLM engine on the GPU: pip install vllm; models/search_vllm.py)"
    )
    vllm_gpu_memory_utilization: float = runtime(
        0.4, "backend vllm: share of GPU memory its engine may take (the policy stays loaded)",
        gt=0.0, le=1.0,
    )

    @model_validator(mode="after")
    def _check_backend(self) -> "SearchConfig":
        if self.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError("search.backend='vllm' needs the vllm package, which is not installed "
                             "here: `pip install vllm` on a CUDA machine, or search.backend=transformers")
        return self


class ScorerConfig(Section):
    model: str = Field(
        "builtin",
        description="'builtin' (the committed tiny judge of the mode: models/builtin/judge, "
        "judge-pointwise, or the claim checker models/builtin/claims), 'train' (train one here on "
        "the world's records), 'oracle' (the built-in world's exact scorer judges: the ceiling "
        "ablation) or a trained judge's path / hub id",
    )
    mode: Literal["pairwise", "pointwise", "claims"] = Field(
        "pairwise", description="judging mode: 'pairwise' (one verdict token per pair), 'pointwise' "
        "(ablation), 'claims' (each claim checked against the reference, the answer read by "
        "scorer.reader, the pair verdict worked out from those marks: models/claims.py)")
    use_gold_answer: bool = Field(True, description="show the gold answer to the judge")
    template: Literal["full", "compact"] = Field(
        "full", description="judge prompt style (data/prompts): 'full' has an instruction line"
    )
    max_length: int = Field(512, ge=64, description="tokens per judge input; candidates are cut")
    train_steps: int = Field(600, ge=1, description="judge SFT steps (scorer.model=train only)")
    train_batch_size: int = Field(32, ge=1, description="judge SFT batch (changes the result)")
    learning_rate: float = Field(2e-3, gt=0, description="judge SFT learning rate")
    lm_loss_weight: float = Field(1.0, ge=0, description="weight of the language-model loss")
    n_train_items: int = Field(3000, ge=1, description="gold rationales to perturb for training")
    n_heldout: int = Field(100, ge=0, description="held-out items to measure judge agreement")
    batch_size: int = runtime(64, "judge inputs per forward pass")
    evidence: Literal["overlap", "all"] = Field(
        "overlap", description="scorer.mode=claims: what of the reference the checker reads per claim: "
        "'overlap' (the facts sharing the most content words with it, data/claims.py) or 'all'")
    hard_marks: bool = Field(False, description="scorer.mode=claims: each mark rounded at 1/2 before the pair "
                             "verdicts, as the oracle's exact marks are (docs/method.md section 3)")
    blank_reference: bool = Field(False, description="ablation: the judge gets an empty reference "
                                  "(does it use the scene?)")
    reader: str | None = Field(None, description="marks candidates supported (docs/reader.md): "
                               "'builtin', a folder or a hub id; None = no reader")
    reader_threshold: float | None = Field(None, ge=0.0, le=1.0, description="confidence a supported "
                                           "verdict needs; None = the reader manifest's `threshold`")
    reference: Literal["dataset", "teacher", "none"] = Field("dataset", description="the judge's reference: the "
        "dataset's own (shapes caption, `reference` column), the teacher's description of each image (cached), or none")
    init: str = Field("builtin", description="scorer.model=distill: the LM the judge and reader are fine-tuned from: "
                      "'builtin' (the tiny judge's weights), a folder or a hub id (e.g. Qwen/Qwen2.5-1.5B-Instruct)")
    lora_r: int = Field(0, ge=0, description="distillation: LoRA rank on scorer.init (merged when saved); 0 = all weights")
    reader_train_steps: int = Field(600, ge=1, description="scorer.reader=distill: reader SFT steps")
    distill_rationale_claims: int = Field(1000, ge=0, description="distillation: scorer-split records whose gold "
                                          "rationale's sentences the teacher also checks (true claims); 0 = none")
    distill_prompts: int = Field(0, ge=0, description="distillation: iteration 1's prompts sent to the teacher; 0 = all")
    distill_twins: bool = Field(True, description="distillation: the teacher also labels a one-word twin of each claim")

    @model_validator(mode="after")
    def _check_claims(self) -> "ScorerConfig":
        if self.reader == "distill" and self.model != "distill":
            raise ValueError("scorer.reader=distill distils the reader with the judge: set scorer.model=distill")
        if self.model == "distill" and self.mode != "claims":
            raise ValueError("scorer.model=distill distils a claim checker and a reader from the teacher: set scorer.mode=claims")
        if self.mode == "claims" and not self.reader and self.model != "oracle":
            raise ValueError("scorer.mode=claims reads each candidate's implied answer with the reader: "
                             "set scorer.reader (builtin, a folder or a hub id)")
        return self


class CurationConfig(Section):
    delta: float = Field(0.2, ge=0.0, le=1.0, description="minimum s_chosen - s_rejected")
    require_correct_chosen: bool = Field(True, description="drop prompts whose chosen is wrong")
    require_supported_chosen: bool | Literal["prefer"] = Field(
        True, description="with a reader: only a supported candidate may be chosen (a prompt with none "
        "is dropped); 'prefer': chosen among the supported where any is, else among all")
    require_factual_chosen: bool | Literal["prefer"] = Field(
        False, description="with the claims judge's marks: only a candidate marked factual may be "
        "chosen (a prompt with none is dropped); 'prefer': among the factual where any is, else all")
    balance_answers: bool = Field(False, description="scale pair weights so every chosen answer "
                                  "carries the same total weight (data.curation.balance_weights)")
    rejected: Literal["lowest", "likeliest", "nearest"] = Field(
        "lowest", description="'lowest' (the paper's), 'likeliest' (unsupported, then most likely, of "
        "those >= delta below the chosen) or 'nearest' (the highest scored of those: a minimal contrast)")
    weighting: Literal["confidence", "uniform"] = Field(
        "confidence", description="'uniform' = plain mean of p(i>j) (ablation)"
    )
    preference: Literal["rationale", "answer_only"] = Field(
        "rationale", description="'answer_only' = correct vs wrong answer (ablation)"
    )


class DPOConfig(Section):
    lora: LoraConfig = Field(default_factory=LoraConfig)
    beta: float = Field(0.1, gt=0, description="DPO temperature")
    loss_type: list[str] = Field(
        default_factory=lambda: ["sigmoid", "sft"], description="TRL loss types, summed"
    )
    loss_weights: list[float] | None = Field(None, description="one weight per loss type")
    use_pair_weights: bool = Field(True, description="multiply each pair's loss by its weight")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate")
    max_steps: int = Field(100, ge=1, description="optimizer steps per iteration (with `epochs`: "
                           "the cap)")
    epochs: float = Field(0.0, ge=0.0, description="> 0: steps = ceil(epochs x pairs / batch_size), "
                          "at most max_steps, so an iteration with fewer kept pairs is not trained "
                          "on them many more times; 0 = always max_steps")
    batch_size: int = Field(8, ge=1, description="pairs per step (changes the result)")
    reference: Literal["previous", "initial"] = Field("previous", description="iteration t's DPO reference: "
        "pi_{t-1} (previous) or pi_0, stage 1's policy (initial: a second model in memory from t = 2)")
    save_steps: int = runtime(50, "checkpoint every N steps: a killed training resumes from the "
                              "last checkpoint; 0 = never", ge=0)

    def steps_for(self, n_pairs: int) -> int:
        """Optimizer steps for an iteration with `n_pairs` curated pairs. Example: epochs 2.5,
        443 pairs, batch 8, max_steps 300 -> ceil(2.5 x 443 / 8) = 139."""
        if self.epochs <= 0:
            return self.max_steps
        return max(1, min(self.max_steps, math.ceil(self.epochs * n_pairs / self.batch_size)))

    @model_validator(mode="after")
    def _check(self) -> "DPOConfig":
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"got {len(self.loss_weights)} loss_weights for {len(self.loss_type)} loss types"
            )
        return self


class EvalConfig(Section):
    max_questions: int = Field(0, ge=0, description="cap on held-out questions; 0 = all")
    max_new_tokens: int = Field(96, ge=1, description="greedy decoding budget")
    n_samples: int = Field(32, ge=0, description="responses kept as samples")
    judge: Literal["auto", "teacher", "none"] = Field(
        "auto", description="who grades consistency and factuality on data without scene facts: "
        "'teacher' (each claim checked and the implied answer read by the teacher, never by the "
        "judge curation uses), 'none' (n/a), 'auto' = teacher when teacher.endpoint is set. The "
        "built-in world is always graded exactly")
    batch_size: int = runtime(64, "questions per generate call")

    def grader(self, world: str, teacher: TeacherConfig) -> str:
        """Who grades consistency and factuality: 'exact' (scene facts), 'teacher' or 'none' (n/a)."""
        asks = self.judge == "teacher" or (self.judge == "auto" and bool(teacher.endpoint and teacher.model))
        return "exact" if world == "shapes" else "teacher" if asks else "none"


class IterateConfig(Section):
    iterations: int = Field(2, ge=0, description="T: SRC iterations after rationale SFT")
    prompts_per_iteration: int = Field(500, ge=1, description="calibration prompts per iteration")


class ReportConfig(Section):
    n_prompts: int = Field(4, ge=0, description="prompts per iteration shown with their candidates, "
                           "scores and win-probability heatmap in report.html")
    n_examples: int = Field(5, ge=0, description="fixed and broken held-out examples shown per "
                            "pair of consecutive evaluations")


class TrackingConfig(Section):
    experiment: str = Field("src", min_length=1, description="MLflow experiment name")
    tracking_uri: str | None = Field(
        None, description="MLflow URI; default: $MLFLOW_TRACKING_URI, else a local SQLite store"
    )
    backend: Literal["mlflow", "none"] = Field(
        "mlflow", description="'mlflow', or 'none': record nothing (no resume, no retraining)")


class RuntimeConfig(Section):
    num_threads: int = runtime(0, "torch threads; 0 = torch's default")
    progress: bool = runtime(True, "show progress bars / log lines")
    launcher: Literal["local", "accelerate"] = runtime(
        "local", "where rationale SFT and DPO train: 'local' (this process) or 'accelerate' (an "
        "`accelerate launch` of runtime.accelerate_config: DDP, FSDP, DeepSpeed; infra/launch.py)")
    accelerate_config: str | None = runtime(
        None, "accelerate config file, e.g. configs/accelerate/ddp.yaml (launcher=accelerate)")
    num_processes: int = runtime(0, "processes to launch (one per GPU); 0 = the config file's", ge=0)
    ray_address: str | None = runtime(
        None, "candidate search and pairwise scoring as shards on Ray (infra/distributed.py): None = "
        "in this process; 'local' = a local cluster of runtime.ray_workers; 'auto' or "
        "'ray://host:10001' = an existing cluster")
    ray_workers: int = runtime(2, "shards (one model replica each) of a Ray stage", ge=1)
    ray_num_gpus: float = runtime(0.0, "GPUs per shard task (1 on a GPU cluster: a replica per GPU)", ge=0)


class SRCConfig(Section):
    seed: int = Field(0, description="seed of everything (data, init, sampling)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    rationale_sft: RationaleSFTConfig = Field(default_factory=RationaleSFTConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    curation: CurationConfig = Field(default_factory=CurationConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    iterate: IterateConfig = Field(default_factory=IterateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _check(self) -> "SRCConfig":
        asks, t = self.teacher_asks(), self.teacher
        if asks and not (t.endpoint and t.model):
            raise ValueError(f"{asks[0]} asks the teacher: set teacher.endpoint and teacher.model (an OpenAI-"
                             f"compatible server: vLLM, TGI, llama.cpp; docs/own-data.md; got {t.endpoint!r}, {t.model!r})")
        if self.scorer.model == "oracle" and self.data.world != "shapes":
            raise ValueError(
                f"scorer.model='oracle' judges with the built-in world's scene facts, which "
                f"data.world={self.data.world!r} has none of: use scorer.model=builtin, train, or a "
                "trained judge's path / hub id")
        rt = self.runtime
        if rt.launcher == "accelerate":
            if not rt.accelerate_config or not Path(rt.accelerate_config).is_file():
                raise ValueError(f"runtime.launcher='accelerate' needs runtime.accelerate_config, an accelerate "
                                 f"config file such as configs/accelerate/ddp.yaml (got {rt.accelerate_config!r})")
        return self


    def teacher_asks(self) -> list[str]:
        """The settings that make a run ask the teacher (validation and `src run`'s preflight)."""
        s, e = self.scorer, self.eval  # eval.judge=teacher on the built-in world too: it is refused there
        grades = e.judge == "teacher" or e.grader(self.data.world, self.teacher) == "teacher"
        return [f for f, on in (("rationale_sft.source=teacher", self.rationale_sft.source == "teacher"),
                                ("scorer.model=distill", s.model == "distill"), ("scorer.reader=distill", s.reader == "distill"),
                                ("scorer.reference=teacher", s.reference == "teacher"), ("eval.judge=teacher", grades)) if on]

def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> SRCConfig:
    """Load a YAML config, apply `section.field=value` overrides, validate.

    Raises:
        ConfigError: file missing or not a mapping, unknown key, or bad value (named).
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML ({yaml_reason(e)})") from None
        except (OSError, UnicodeDecodeError) as e:  # unreadable, or not a text file
            raise ConfigError(f"config file {str(p)!r} cannot be read: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping, got {type(loaded).__name__}")
        tree, source = loaded, str(p)
    parsed = parse_overrides(overrides)
    for key, value in parsed.items():
        set_path(tree, key, value)
    if parsed:
        source += " + overrides " + ", ".join(f"{k}={v!r}" for k, v in parsed.items())
    try:
        return SRCConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_error(e, source)) from None


def stage_signature(section: BaseModel) -> dict[str, Any]:
    """The section as a plain dict without runtime knobs: what a cache key may hash."""
    out: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if not extra.get("runtime"):
            value = getattr(section, name)
            out[name] = stage_signature(value) if isinstance(value, BaseModel) else value
    return out


def digest(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def dump_config(cfg: SRCConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


if __name__ == "__main__":
    try:
        cfg = load_config(sys.argv[1] if len(sys.argv) > 1 else None, sys.argv[2:])
    except ConfigError as e:
        sys.exit(str(e))
    print(dump_config(cfg))
