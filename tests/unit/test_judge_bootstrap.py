"""The built-in judge's plumbing: training + saving with its prompt style, the style check,
how the flow resolves `scorer.model`, and on-policy agreement with the exact scorer."""

from __future__ import annotations

import json

import pytest

from data.config import load_config
from data.judging import onpolicy_agreement
from data.perturb import candidate_items, pair_records
from data.shapes import generate
from models.builtin import BUILTIN_JUDGE, JUDGE_INFO, check_template, judge_info
from models.judge_training import new_tiny_judge, train_and_save
from models.scorer import load_judge, score_pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_model):
    cfg = load_config(None, [f"model.base={base_model}", "scorer.template=compact",
                             "scorer.train_steps=4", "scorer.train_batch_size=8"])
    model, tok = new_tiny_judge(cfg)
    train = pair_records(generate("scorer", 10, cfg.data), 0)
    held = candidate_items(generate("eval", 3, cfg.data), 0)
    out = tmp_path_factory.mktemp("judge") / "judge"
    metrics = train_and_save(model, tok, cfg, train, held, out)
    return {"cfg": cfg, "out": out, "metrics": metrics, "held": held, "model": model, "tok": tok}


def test_train_and_save_records_the_prompt_style(trained):
    out, m = trained["out"], trained["metrics"]
    assert judge_info(out) == {"template": "compact", "use_gold_answer": True, "mode": "pairwise",
                               "max_length": 512}
    assert m["judge/train_steps"] == 4 and 0.0 <= m["judge/agreement"] <= 1.0
    assert m["judge/n_decisive_pairs"] > 0
    # what was saved scores exactly like what was trained
    model, tok = load_judge(str(out), device="cpu")
    items = trained["held"][:1]
    a = score_pairs(model, tok, items, trained["cfg"].scorer)
    b = score_pairs(trained["model"], trained["tok"], items, trained["cfg"].scorer)
    assert [r["p_a"] for r in a] == pytest.approx([r["p_a"] for r in b], abs=1e-6)


def test_a_judge_is_only_read_with_the_style_it_was_trained_on(trained, tmp_path):
    check_template(trained["out"], "compact")
    with pytest.raises(ValueError, match="trained with scorer.template='compact'.*'full'"):
        check_template(trained["out"], "full")
    check_template(tmp_path, "full")  # a judge from elsewhere records nothing: accepted
    assert judge_info(tmp_path) == {}
    # trained on pairs only: refused for pointwise judging, naming the mode
    check_template(trained["out"], "compact", "pairwise")
    with pytest.raises(ValueError, match="pairs only.*scorer.mode=pointwise"):
        check_template(trained["out"], "compact", "pointwise")


def test_builtin_resolves_per_mode_and_focus_records_are_of_the_family():
    from tools.judge_bootstrap import focus_records
    from models.builtin import BUILTIN_POINTWISE_JUDGE, judge_path

    if (BUILTIN_JUDGE / "manifest.json").is_file():
        assert judge_path("builtin") == str(BUILTIN_JUDGE)
    if (BUILTIN_POINTWISE_JUDGE / "manifest.json").is_file():
        assert judge_path("builtin", "pointwise") == str(BUILTIN_POINTWISE_JUDGE)
        assert judge_info(BUILTIN_POINTWISE_JUDGE)["mode"] == "pointwise"
    assert judge_path("/some/judge", "pointwise") == "/some/judge"
    cfg = load_config(None, ["scorer.n_train_items=7"])
    recs = focus_records(cfg, "color_of", 3)
    assert [r["family"] for r in recs] == ["color_of"] * 3
    first = generate("scorer", 7, cfg.data)
    assert not {r["id"] for r in recs} & {r["id"] for r in first}  # after the training items
    assert recs == [r for r in generate("scorer", 25, cfg.data) if r["family"] == "color_of"][1:4]


def test_judge_ref_resolves_builtin_folders_and_refuses_a_style_mismatch(trained):
    from infra.refs import judge_ref

    ref = judge_ref(str(trained["out"]), "compact")
    assert ref["judge_dir"] == str(trained["out"].resolve()) and ref["info"]["template"] == "compact"
    with pytest.raises(ValueError, match="scorer.template"):
        judge_ref(str(trained["out"]), "full")
    if (BUILTIN_JUDGE / "manifest.json").is_file():  # the committed judge
        built = judge_ref("builtin", json.loads((BUILTIN_JUDGE / JUDGE_INFO).read_text())["template"])
        assert built["meta"]["metrics"]["judge/agreement"] > 0.5
        assert built["digest"] != ref["digest"]


def test_onpolicy_agreement_uses_the_exact_scores_of_the_candidates():
    rec = generate("pool", 1, load_config(None).data)[0]
    gold_text = rec["response"]
    wrong = gold_text.rsplit("Answer:", 1)[0] + "Answer: " + ("7" if rec["answer"] != "7" else "8") + "."
    cands = [{"prompt_id": rec["id"], "cand_idx": k, "text": t, "question": rec["question"],
              "reference": rec["reference"], "gold": rec["answer"], "facts": rec["facts"]}
             for k, t in enumerate([gold_text, wrong])]
    right = [{"prompt_id": rec["id"], "a_idx": 0, "b_idx": 1, "p_a": 0.9, "p_b": 0.05, "p_tie": 0.05},
             {"prompt_id": rec["id"], "a_idx": 1, "b_idx": 0, "p_a": 0.1, "p_b": 0.8, "p_tie": 0.1}]
    flipped = [dict(r, p_a=r["p_b"], p_b=r["p_a"]) for r in right]
    assert onpolicy_agreement(right, cands) == {"onpolicy_agreement": 1.0, "onpolicy_decisive_pairs": 1.0}
    assert onpolicy_agreement(flipped, cands)["onpolicy_agreement"] == 0.0
    assert onpolicy_agreement(right, [dict(c, facts=None) for c in cands]) == {}  # no facts: no oracle
