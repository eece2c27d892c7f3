"""The 7B model presets (configs/<preset>.yaml), each run through every SRC stage on CPU with its
architecture shrunk to random-weight tiny models (tools/tiny_archs.py): rationale SFT, search,
pairwise scoring, curation, DPO and evaluation, as the recipe's plain stage calls without
Prefect (`make stages`, scripts/run_stages.py).

The test changes only what a CPU cannot do or what makes a tiny random model learn the answer
format in seconds: the model folders, float32 instead of bfloat16, a small local A-OKVQA-shaped
dataset (data/examples.py, read through the preset's own `data.world=hf` and `aokvqa`
mapping) instead of the hub's A-OKVQA, and small sizes and steps. Architecture, gradient checkpointing, LoRA targets, the
judge's prompt style and every other field are the preset's own. The stage calls judge with
a given pair judge (the tiny one); the preset's own judge, distilled from its teacher with
LoRA on a 1.5B LM, runs through `src run` with a test teacher (tools/fake_teacher.py) in
`test_a_preset_distils_its_judge_from_its_teacher_with_lora`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tests.integration.smoke import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

# preset -> (tiny arch, the architecture class of the preset's real checkpoint)
PRESETS = {
    "llava-1.5-7b": ("llava", "LlavaForConditionalGeneration"),
    "llava-next-8b": ("llava_next", "LlavaNextForConditionalGeneration"),
    "qwen2-vl-7b": ("qwen2_vl", "Qwen2VLForConditionalGeneration"),
    "qwen2.5-vl-7b": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
}
TINY = [
    "data.n_rationale=200", "data.n_pool=8", "data.n_eval=12", "model.dtype=float32", "model.device=cpu",
    "rationale_sft.max_steps=80", "rationale_sft.batch_size=8", "rationale_sft.learning_rate=3e-3",
    "rationale_sft.lora.train_lm_head=true", "search.beams=2", "search.per_beam=2", "search.n_candidates=3",
    "search.max_sentences=3", "search.max_sentence_tokens=12", "search.batch_size=8",
    "iterate.prompts_per_iteration=4", "scorer.n_heldout=4", "scorer.max_length=512", "scorer.batch_size=8",
    "curation.delta=0", "curation.require_correct_chosen=false", "dpo.max_steps=2", "dpo.batch_size=2",
    "eval.max_new_tokens=24", "eval.batch_size=8", "runtime.num_threads=1",
]
# the stage calls judge with a given pair judge, not the preset's distilled claims judge
GIVEN_JUDGE = ["scorer.mode=pairwise", "scorer.reader=null", "scorer.reference=dataset", "eval.judge=none"]


@pytest.fixture(scope="module")
def aokvqa(tmp_path_factory) -> Path:
    """A local dataset in A-OKVQA's layout (train / validation), without scene facts."""
    from data.examples import write_aokvqa

    out = tmp_path_factory.mktemp("data") / "aokvqa"
    write_aokvqa(out, n_train=220, n_eval=12)
    return out


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory) -> Path:
    """The R-Scorer preset's architecture (Qwen2.5: Qwen2ForCausalLM), over the built-in judge's
    tokenizer (its verdict words are single tokens)."""
    from transformers import AutoTokenizer

    from tools.tiny_archs import build_arch

    out = tmp_path_factory.mktemp("judge") / "qwen2"
    return build_arch("qwen2", AutoTokenizer.from_pretrained(ROOT / "models/builtin/judge"), out)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_preset_runs_every_stage_with_its_architecture_shrunk(preset, tiny_judge, aokvqa, tmp_path):
    from transformers import AutoTokenizer

    import run_stages
    from data.config import load_config
    from tools.tiny_archs import build_arch

    arch, real_class = PRESETS[preset]
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml")
    assert cfg.model.dtype == "bfloat16" and cfg.model.gradient_checkpointing
    assert cfg.rationale_sft.lora.target_modules == "all-linear" == cfg.dpo.lora.target_modules
    assert (cfg.scorer.model, cfg.scorer.reader, cfg.scorer.init) == ("distill", "distill", "Qwen/Qwen2.5-1.5B-Instruct")
    assert cfg.scorer.lora_r > 0 and cfg.teacher.endpoint and cfg.teacher.model
    assert (cfg.data.world, cfg.data.hf.mapping) == ("hf", "aokvqa")
    base = build_arch(arch, AutoTokenizer.from_pretrained(ROOT / "models/builtin/base"), tmp_path / arch)
    assert json.loads((base / "config.json").read_text())["architectures"] == [real_class]
    out = run_stages.main(["--config", f"configs/{preset}.yaml", "--out", str(tmp_path / "run"),
                           f"model.base={base}", f"scorer.model={tiny_judge}", f"data.hf.dataset={aokvqa}",
                           *TINY, *GIVEN_JUDGE, "iterate.iterations=1"])
    assert [r["iteration"] for r in out["iterations"]] == [0, 1]
    last = out["iterations"][1]["metrics"]
    assert last["curate/kept"] >= 1 and 0.0 <= last["judge/flip_rate"] <= 1.0
    assert math.isfinite(last["dpo/loss"])
    dpo = Path(out["chain"][-1])
    assert json.loads((dpo / "metrics.json").read_text())["steps"] == 2
    adapter = json.loads((dpo / "adapter" / "adapter_config.json").read_text())
    # LoRA on the language model only: the vision tower and projector stay as they are
    assert "language_model" in adapter["target_modules"] and "visual" not in adapter["target_modules"]


def test_a_preset_distils_its_judge_from_its_teacher_with_lora(tiny_judge, aokvqa, tmp_path):
    """`src run` on qwen2.5-vl-7b with its own scorer section (distill, claims, reader, teacher
    references, LoRA) over a test teacher; only scorer.init is the tiny Qwen2 in place of 1.5B."""
    from transformers import AutoTokenizer

    from models.scorer import load_judge
    from tests.integration.smoke import src_run
    from tools.fake_teacher import FakeTeacher, examples_index, start_server
    from tools.tiny_archs import build_arch

    base = build_arch("qwen2_5_vl", AutoTokenizer.from_pretrained(ROOT / "models/builtin/base"), tmp_path / "base")
    server, url = start_server(FakeTeacher(examples_index(220, 12)))
    try:
        state = tmp_path / "state"
        src_run(state, "--config", "configs/qwen2.5-vl-7b.yaml", f"model.base={base}", f"scorer.init={tiny_judge}",
                f"data.hf.dataset={aokvqa}", f"teacher.endpoint={url}", "teacher.model=fake", *TINY,
                "scorer.train_steps=4", "scorer.reader_train_steps=2", "scorer.train_batch_size=4",
                "iterate.iterations=1", "tracking.experiment=src-preset")
    finally:
        server.shutdown()
    folder = next((state / "stages" / "distil").glob("*/judge"))
    assert not (folder / "adapter_config.json").exists() and not (folder / "reader" / "adapter_config.json").exists()
    model, _ = load_judge(str(folder), device="cpu")  # LoRA merged: a plain Qwen2 judge
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert json.loads((folder / "src_judge.json").read_text())["world"] == "hf"
