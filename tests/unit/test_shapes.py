"""The shapes world: determinism, balance, gold rationales that score perfectly."""

import collections
import io
import json

import pytest
from PIL import Image

from data.config import DataConfig
from data.scoring import score_shapes
from data.shapes import FAMILIES, answers_of, generate


@pytest.fixture(scope="module")
def cfg():
    return DataConfig()


def test_deterministic_for_a_seed(cfg):
    a = generate("eval", 40, cfg, seed=3)
    b = generate("eval", 40, cfg, seed=3)
    assert a == b
    c = generate("eval", 40, cfg, seed=4)
    assert [r["image"] for r in a] != [r["image"] for r in c]


def test_generate_start_continues_the_same_stream(cfg):
    whole = generate("pool", 30, cfg, seed=0)
    parts = generate("pool", 10, cfg, seed=0) + generate("pool", 20, cfg, seed=0, start=10)
    assert whole == parts


def test_splits_are_disjoint_streams(cfg):
    a = generate("eval", 50, cfg)
    b = generate("pool", 50, cfg)
    assert not {r["image"] for r in a} & {r["image"] for r in b}


def test_answers_balanced_within_each_family(cfg):
    recs = generate("eval", 1000, cfg)
    per_family = collections.defaultdict(collections.Counter)
    for r in recs:
        per_family[r["family"]][r["answer"]] += 1
    assert set(per_family) == set(FAMILIES)
    for fam, counts in per_family.items():
        assert set(counts) == set(answers_of(fam)), fam
        assert max(counts.values()) - min(counts.values()) <= 1, (fam, counts)


def test_gold_responses_score_perfectly_and_short_answers_do_not_reason(cfg):
    for r in generate("rationale", 500, cfg):
        gold = score_shapes(r["response"], r["facts"], r["answer"])
        assert gold.parsable and gold.correct and gold.consistent and gold.factual, r["response"]
        short = score_shapes(r["short_response"], r["facts"], r["answer"])
        assert short.parsable and short.correct
        assert not short.consistent and not short.factual


def test_reference_lists_every_object(cfg):
    for r in generate("eval", 50, cfg):
        objs = json.loads(r["facts"])["objects"]
        for o in objs:
            assert f"a {o['color']} {o['shape']}" in r["reference"]
        assert cfg.min_objects <= len(objs) <= cfg.max_objects


def test_images_decode_at_the_configured_size(cfg):
    r = generate("eval", 1, cfg)[0]
    img = Image.open(io.BytesIO(r["image"]))
    assert img.size == (cfg.image_size, cfg.image_size)
    # the scene is drawn: more than the background colour is present
    assert len(set(img.convert("RGB").getdata())) > 2


def test_unknown_split_is_a_clear_error(cfg):
    with pytest.raises(ValueError, match="unknown split 'train'"):
        generate("train", 1, cfg)


def test_sweep_rationales_state_every_object_then_the_same_conclusion(cfg):
    sweep_cfg = DataConfig(rationale_style="sweep")
    relevant, sweep = generate("rationale", 300, cfg), generate("rationale", 300, sweep_cfg)
    # same scenes, questions and answers: only the rationale (and a facts marker) differ
    assert [r["image"] for r in relevant] == [r["image"] for r in sweep]
    assert [r["answer"] for r in relevant] == [r["answer"] for r in sweep]
    for rel, r in zip(relevant, sweep):
        f = json.loads(r["facts"])
        assert f["rationale_style"] == "sweep" and "rationale_style" not in json.loads(rel["facts"])
        gold = score_shapes(r["response"], r["facts"], r["answer"])
        assert gold.parsable and gold.correct and gold.consistent and gold.factual, r["response"]
        order = sorted(f["objects"], key=lambda o: (o["row"], o["col"]))
        mentions = [s for s in r["rationale"].split(". ") if s.startswith("There is a")]
        assert [m.split(" at ")[0] for m in mentions] == [
            f"There is a {o['color']} {o['shape']}" for o in order]
        # the closing sentence of "relevant" (count, absence, relation) closes "sweep" too
        last = rel["rationale"].rstrip(".").split(". ")[-1]
        if not last.startswith("There is a"):
            assert r["rationale"].endswith(last + ".")


def test_unknown_rationale_style_is_refused():
    with pytest.raises(ValueError, match="rationale_style"):
        DataConfig(rationale_style="caption")
