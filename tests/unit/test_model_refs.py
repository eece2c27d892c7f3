"""Bad model references fail before any compute, naming the config field and the value."""

from __future__ import annotations

import pytest

from infra.refs import base_ref, judge_ref
from tests.conftest import BUILTIN_BASE


def test_a_local_folder_is_hashed_by_content():
    ref = base_ref("builtin")
    assert ref["path"] == str(BUILTIN_BASE.resolve()) and len(ref["digest"]) == 64
    assert base_ref(str(BUILTIN_BASE))["digest"] == ref["digest"]


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "a/b/c"])
def test_a_path_that_is_not_a_model_folder_is_named(name):
    with pytest.raises(ValueError, match=f"model.base: '{name}' is not a model folder"):
        base_ref(name)


def test_a_file_is_not_a_model_folder(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="is not a model folder"):
        base_ref(str(f))


def test_offline_a_hub_id_must_be_in_the_local_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="'llava-hf/llava-1.5-7b-hf' is neither a local model folder"):
        base_ref("llava-hf/llava-1.5-7b-hf")
    with pytest.raises(ValueError, match="^scorer.model: 'Qwen/Qwen2.5-1.5B-Instruct'"):
        judge_ref("Qwen/Qwen2.5-1.5B-Instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: a hub id is passed on by name
    assert base_ref("llava-hf/llava-1.5-7b-hf")["path"] == "llava-hf/llava-1.5-7b-hf"
