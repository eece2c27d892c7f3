"""`report.html` of the shared smoke run: every part of it is there and agrees with the stage
outputs it shows; it is self-contained (no script, no external URL)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from PIL import Image

from data.curation import DROP_REASONS
from tests.integration.smoke import children, pipeline_runs


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.ids, self.urls, self.tags = [], [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.imgs.append(a)
        if "id" in a:
            self.ids.append(a["id"])
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def _report(first_run, tmp_path) -> tuple[str, str, object, object]:
    client, exp, runs = pipeline_runs(first_run["state"])
    parent = runs[0].info.run_id
    local = client.download_artifacts(parent, "report.html", str(tmp_path))
    return Path(local).read_text(), parent, client, exp


def _stage_files(state: Path, stage: str, name: str) -> dict[str, Path]:
    """Content digest -> file of every output of `stage` (the digest the MLflow tags name)."""
    out = {}
    for mf in (state / "stages" / stage).glob("*/manifest.json"):
        out[json.loads(mf.read_text())["digest"]] = mf.parent / name
    return out


def test_the_report_has_every_part_and_only_inline_images(first_run, tmp_path):
    text, parent, client, exp = _report(first_run, tmp_path)
    page = _Page()
    page.feed(text)
    assert {"metrics", "iteration-1", "iteration-2", "changes"} <= set(page.ids)
    assert "script" not in page.tags and "link" not in page.tags
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in page.urls), page.urls
    for img in page.imgs:  # every image is a PNG that decodes
        Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).verify()
    alts = [img["alt"] for img in page.imgs]
    assert alts.count("metrics per iteration") == 1
    heatmaps = [a for a in alts if a.startswith("win probabilities of ")]
    assert len(heatmaps) == 8  # 2 iterations x report.n_prompts
    assert len([a for a in alts if a.startswith("image of ")]) == 8
    for reason in DROP_REASONS:
        assert f"<td>{reason}</td>" in text
    # every plotted metric of the issue has a row in the metrics table's header
    for label in ("accuracy", "consistency", "factuality", "format rate", "flip rate", "kept", "dpo loss"):
        assert f"<th>{label}</th>" in text
    assert "fixed (wrong, then right)" in text and "broken (right, then" in text
    assert children(client, exp, parent)  # the page belongs to a run with iterations


def test_the_sampled_pairs_and_changes_agree_with_the_stage_outputs(first_run, tmp_path):
    text, parent, client, exp = _report(first_run, tmp_path)
    state = first_run["state"]
    # each sampled prompt says "kept: ... weight w" or "dropped: <reason>"
    verdicts = re.findall(r"<code>(pool-\d+)</code>: .*?<p><b>(kept|dropped): (.*?)</b></p>", text, re.S)
    assert len(verdicts) == 8
    pairs = pd.concat([pd.read_parquet(f) for f in _stage_files(state, "curate", "preference_pairs.parquet").values()])
    for pid, what, rest in verdicts:
        if what == "dropped":
            assert rest in DROP_REASONS
        else:
            w = float(rest.rsplit("weight ", 1)[1])
            assert any(abs(w - x) <= 1e-3 * abs(x) + 1e-12 for x in pairs.loc[pairs["prompt_id"] == pid, "weight"])
    # fixed / broken counts of iteration 0 -> 1, from the two evaluations' per-question scores
    kids = children(client, exp, parent)
    by_digest = _stage_files(state, "evaluate", "scores.parquet")
    scores = [pd.read_parquet(by_digest[kids[t].data.tags["src.eval_digest"]]) for t in (0, 1)]
    both = scores[0].merge(scores[1], on="id", suffixes=("_0", "_1"))
    fixed = int(((both.accuracy_0 < 0.5) & (both.accuracy_1 >= 0.5)).sum())
    broken = int(((both.accuracy_0 >= 0.5) & (both.accuracy_1 < 0.5)).sum())
    block = text.split("<h3>iteration 0 -&gt; iteration 1</h3>", 1)[1]
    assert block.lstrip().startswith(f"<p>{fixed} fixed (wrong, then right), {broken} broken")
