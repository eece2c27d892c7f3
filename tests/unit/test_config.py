"""Config loading, overrides and error messages that name the field and the value."""

from pathlib import Path

import pytest

from data.config import ConfigError, digest, load_config, stage_signature
from data.config_text import parse_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["builtin.yaml", "smoke.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.search.n_candidates >= 2


def test_defaults_follow_method_md():
    cfg = load_config()
    s = cfg.search
    assert (s.beams, s.per_beam, s.temperature, s.n_candidates) == (4, 3, 0.9, 6)
    assert cfg.curation.delta == 0.2 and cfg.curation.require_correct_chosen
    assert cfg.dpo.beta == 0.1 and cfg.dpo.loss_type == ["sigmoid", "sft"]
    assert cfg.scorer.mode == "pairwise"


def test_overrides_are_yaml_typed():
    cfg = load_config(None, ["dpo.beta=0.2", "search.mode=sample", "dpo.loss_type=[sigmoid]"])
    assert cfg.dpo.beta == 0.2 and cfg.search.mode == "sample" and cfg.dpo.loss_type == ["sigmoid"]
    assert parse_overrides({"a.b": 1}) == {"a.b": 1}


def test_unknown_key_names_the_path_and_value():
    with pytest.raises(ConfigError, match=r"dpo\.betta: unknown key \(value 0\.2\)"):
        load_config(None, ["dpo.betta=0.2"])


def test_bad_value_names_the_path_and_value():
    with pytest.raises(ConfigError, match=r"search\.beams: .*greater than or equal to 1 \(got -1\)"):
        load_config(None, ["search.beams=-1"])
    with pytest.raises(ConfigError, match="got 1 loss_weights for 2 loss types"):
        load_config(None, ["dpo.loss_weights=[1.0]"])
    with pytest.raises(ConfigError, match=r"max_objects \(12\) does not fit a 3x3 grid"):
        load_config(None, ["data.max_objects=12"])


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["dpo.beta"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="search.beams.*is not a section"):
        load_config(None, ["search.beams=2", "search.beams.x=1"])


def test_yaml_errors_are_one_line_naming_the_override_or_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_overrides(["data.files.columns={id: qid"])
    msg = str(e.value)
    assert msg.startswith("override data.files.columns={id: qid: the value is not valid YAML (")
    assert "column 9" in msg and "\n" not in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\n  b: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(e.value).startswith(f"config file {str(bad)!r} is not valid YAML (") and "line 2" in str(e.value)
    assert "\n" not in str(e.value)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(binary)


def test_runtime_knobs_do_not_change_the_stage_signature():
    a = load_config(None, ["search.batch_size=8"])
    b = load_config(None, ["search.batch_size=128"])
    c = load_config(None, ["search.beams=2"])
    assert "batch_size" not in stage_signature(a.search)
    assert digest(stage_signature(a.search)) == digest(stage_signature(b.search))
    assert digest(stage_signature(a.search)) != digest(stage_signature(c.search))
    assert "device" not in stage_signature(a.model)


def test_teacher_source_needs_an_endpoint_and_a_model():
    with pytest.raises(ConfigError, match="rationale_sft.source=teacher asks the teacher: set teacher.endpoint and teacher.model.*got None, ''"):
        load_config(None, ["rationale_sft.source=teacher"])
    cfg = load_config(None, ["rationale_sft.source=teacher", "teacher.endpoint=http://127.0.0.1:8000/v1",
                             "teacher.model=Qwen/Qwen2-VL-72B-Instruct"])
    assert cfg.teacher.model == "Qwen/Qwen2-VL-72B-Instruct"
    assert "concurrency" not in stage_signature(cfg.teacher)  # a runtime knob


def test_dpo_epochs_set_the_steps_from_the_kept_pairs_under_the_cap():
    from data.config import DPOConfig

    assert DPOConfig(max_steps=120).steps_for(443) == 120  # epochs 0: max_steps as given
    cfg = DPOConfig(epochs=2.5, max_steps=300, batch_size=8)
    assert cfg.steps_for(443) == 139 and cfg.steps_for(10) == 4 and cfg.steps_for(5000) == 300
    assert cfg.steps_for(0) == 1


@pytest.mark.parametrize("over, says", [
    (["scorer.model=distill", "scorer.mode=claims", "scorer.reader=builtin"], "scorer.model=distill asks the teacher"),
    (["scorer.reference=teacher"], "scorer.reference=teacher asks the teacher"),
    (["eval.judge=teacher"], "eval.judge=teacher asks the teacher"),
    (["scorer.model=builtin", "scorer.reader=distill"], "set scorer.model=distill"),
    (["scorer.model=distill", "scorer.mode=pairwise", "teacher.endpoint=http://x/v1", "teacher.model=m"],
     "set scorer.mode=claims"),
])
def test_distillation_settings_that_cannot_work_are_refused_naming_the_field(over, says):
    with pytest.raises(ConfigError) as err:
        load_config("configs/builtin.yaml", over)
    assert says in str(err.value)


def test_where_the_teacher_is_served_is_not_part_of_any_key():
    a = load_config("configs/qwen2.5-vl-7b.yaml", ["teacher.endpoint=http://a:1/v1"])
    b = load_config("configs/qwen2.5-vl-7b.yaml", ["teacher.endpoint=http://b:2/v1"])
    assert stage_signature(a.teacher) == stage_signature(b.teacher)
    assert stage_signature(a.teacher) != stage_signature(load_config("configs/qwen2.5-vl-7b.yaml",
                                                                     ["teacher.model=other"]).teacher)
