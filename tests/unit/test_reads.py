"""A stage reads only the config it declares, and its cache key hashes exactly that
(infra/reads.py). The pipeline tests run every stage through `StageConfig`, so a stage that reads
an undeclared section fails them; these tests check the mechanism itself.

Run: .venv/bin/python -m pytest -q tests/unit/test_reads.py
"""

from __future__ import annotations

import sys

import pytest

from data.config import load_config
from tasks import curate, dpo, evaluate, report, score, scorer, search, sft, world
from tools.config_walk import Walk
from infra.reads import StageConfig, UndeclaredRead, project, signature

TASKS = (world, evaluate, sft, scorer, search, score, curate, dpo, report)


def test_declared_sections_and_fields_read_others_raise():
    cfg = load_config("configs/smoke.yaml")
    c = StageConfig(cfg.model_dump(mode="json"), ("search", "iterate.prompts_per_iteration"), "search")
    assert c.search.beams == cfg.search.beams and c.iterate.prompts_per_iteration == cfg.iterate.prompts_per_iteration
    assert c.runtime.num_threads == cfg.runtime.num_threads and c.seed == cfg.seed  # always readable
    with pytest.raises(UndeclaredRead, match="'dpo'.*READS"):
        _ = c.dpo
    with pytest.raises(UndeclaredRead, match="iterate.iterations is read but not declared"):
        _ = c.iterate.iterations


def test_a_stage_is_handed_only_the_sections_it_declares():
    cfg = load_config("configs/smoke.yaml", ["dpo.beta=0.3"])
    view = project(cfg, dpo.READS)
    assert set(view) == {"seed", "dpo", "model", "runtime", "tracking"} and view["dpo"]["beta"] == 0.3
    assert set(project(cfg, search.READS)) == {"seed", "search", "model", "iterate", "runtime", "tracking"}
    c = StageConfig(project(cfg, search.READS), search.READS, "search")  # what a stage function gets
    assert c.search.beams == cfg.search.beams and c.seed == cfg.seed
    with pytest.raises(UndeclaredRead, match="'dpo'"):
        _ = c.dpo


def test_the_key_hashes_what_is_declared_and_nothing_else():
    cfg = load_config("configs/smoke.yaml")
    sig = signature(cfg, ("curation", "iterate.prompts_per_iteration"))
    assert set(sig) == {"curation", "iterate.prompts_per_iteration"}
    assert sig["iterate.prompts_per_iteration"] == cfg.iterate.prompts_per_iteration
    other = load_config("configs/smoke.yaml", ["dpo.beta=0.3", "search.batch_size=3"])
    assert signature(other, search.READS) == signature(cfg, search.READS)  # a runtime knob: same key
    assert signature(other, dpo.READS) != signature(cfg, dpo.READS)
    with pytest.raises(ValueError, match="no field 'nope'"):
        signature(cfg, ("search.nope",))


@pytest.mark.parametrize("module", TASKS, ids=lambda m: m.STAGE)
def test_every_task_declares_valid_reads(module):
    assert module.READS and signature(load_config("configs/smoke.yaml"), module.READS)


def test_a_stage_that_reads_an_undeclared_section_fails(tmp_path, monkeypatch):
    """The world stage with `data` left out of its declaration: its first read refuses."""
    cfg = load_config("configs/smoke.yaml").model_dump(mode="json")
    monkeypatch.setattr(world, "READS", ("scorer.n_train_items",))
    with pytest.raises(UndeclaredRead, match="stage 'world' reads config section 'data'"):
        world.build_world(cfg, tmp_path)


def test_the_config_walk_counts_where_the_dpo_settings_travel():
    """tools/config_walk.py's hook, on real calls: a stage handed its projection carries the DPO
    settings only when it declares them; a call from a lower layer up to a higher one climbs."""
    cfg = load_config("configs/smoke.yaml")
    walk = Walk(None)
    walk.started = True
    sys.setprofile(walk.hook)
    try:
        StageConfig(project(cfg, dpo.READS), dpo.READS, "dpo")
        StageConfig(project(cfg, search.READS), search.READS, "search")  # no dpo section: not a visit
        signature(cfg, curate.READS)
    finally:
        sys.setprofile(None)
    assert walk.places == {"infra/reads.py:StageConfig.__init__": 1, "infra/reads.py:project": 2,
                           "infra/reads.py:signature": 1}
    assert not walk.climbs  # called from tests/, which is no layer


def test_stage_1_hashes_the_teacher_only_where_the_teacher_writes_the_rationales():
    teacher = ["teacher.endpoint=http://127.0.0.1:9/v1", "teacher.model=t"]
    plain, taught = load_config("configs/smoke.yaml"), load_config("configs/smoke.yaml", teacher)
    assert signature(taught, sft.READS) == signature(plain, sft.READS)  # a teacher for distillation: reused
    view = project(taught, sft.READS)
    assert "teacher" not in view
    with pytest.raises(UndeclaredRead, match="'teacher'"):
        _ = StageConfig(view, sft.READS, "rationale_sft").teacher
    a = load_config("configs/smoke.yaml", [*teacher, "rationale_sft.source=teacher"])
    b = load_config("configs/smoke.yaml", [*teacher, "rationale_sft.source=teacher", "teacher.model=u"])
    assert signature(a, sft.READS) != signature(b, sft.READS) != signature(plain, sft.READS)
    assert StageConfig(project(a, sft.READS), sft.READS, "rationale_sft").teacher.model == "t"
    with pytest.raises(ValueError, match="conditional read"):
        signature(plain, ("model", ("teacher", "rationale_sft.source", "teacher")))  # its field undeclared
