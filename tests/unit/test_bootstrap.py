"""The bootstrap of the built-in base: loss falls, save/load round-trips, manifest complete."""

import json

import pytest
import torch

from data.config import load_config
from tools.bootstrap import pretrain
from models.builtin import BUILTIN_BASE
from models.loading import load_lvlm, save_lvlm


def test_short_bootstrap_loss_falls_and_round_trips(tmp_path):
    cfg = load_config(None, ["data.n_eval=8"])
    model, processor, losses = pretrain(cfg, steps=40, batch_size=8, log=lambda m: None)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    save_lvlm(model, processor, tmp_path / "base")
    loaded, proc2 = load_lvlm(str(tmp_path / "base"), device="cpu")
    from data.shapes import generate, load_image
    from models.encode import encode_examples

    r = generate("eval", 2, cfg.data)
    batch = encode_examples(proc2, [load_image(x["image"]) for x in r],
                            [x["question"] for x in r], [x["short_response"] for x in r])
    model.eval()
    with torch.no_grad():
        a = model(**batch).logits
        b = loaded(**batch).logits
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.skipif(not (BUILTIN_BASE / "manifest.json").is_file(), reason="base not built yet")
def test_committed_base_manifest_is_complete():
    m = json.loads((BUILTIN_BASE / "manifest.json").read_text())
    for key in ("command", "seed", "steps", "train_seconds", "code_commit", "accuracy",
                "accuracy_per_family"):
        assert key in m, key
    assert set(m["accuracy_per_family"]) == {"count_color", "count_shape", "color_of", "exists",
                                             "left_right"}
    size = sum(f.stat().st_size for f in BUILTIN_BASE.rglob("*") if f.is_file())
    assert size < 10 * 2**20, size
