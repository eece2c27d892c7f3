"""The iteration report of a pipeline run: one self-contained HTML page (`report.html`).

It opens offline in any browser and in the MLflow artifact viewer: no script, no external URL,
every image inline as a `data:` URI. It shows
1. the held-out metrics per iteration, as a table and as plots (report/plots.py, the panels of
   `src compare`);
2. per SRC iteration, why curation dropped prompts, and for a sample of prompts: the image,
   the candidates with their scores, the pairwise win-probability matrix as a heatmap, and
   the chosen/rejected pair with its weight (or why the prompt was dropped);
3. what changed between consecutive evaluations on the same held-out questions: fixed
   (wrong -> right) and broken (right -> wrong) examples.
The plots are also written as PNG files beside the page (the flow logs them too).

Plain functions over the stage output folders (parquet/JSON); no model, no Prefect, no MLflow.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from data.config import CurationConfig
from data.curation import DROP_REASONS, aggregate_pairs, curate
from report.plots import heatmap, plot, table_cells
from data.scoring import normalize_answer
from data.schema import (
    CANDIDATES_FILE, CANDIDATE_SCORES_FILE, EVAL_ROWS_FILE, METRICS_FILE, PAIRS_FILE,
    PAIR_SCORES_FILE, POINT_SCORES_FILE, SPLIT_FILES,
)
from data.headroom import LEVELS, warning

HTML_FILE, METRICS_PNG = "report.html", "metrics.png"
_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 80em; color: #222; }
.warn { color: #a40; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.prompt { border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; margin: 1em 0; }
.row { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }
img.scene { width: 160px; height: 160px; image-rendering: pixelated; border: 1px solid #999; }
td img.scene { width: 96px; height: 96px; }
img.plot { max-width: 100%; }
.ok { color: #0a7a2f; font-weight: bold; } .bad { color: #b3261e; font-weight: bold; }
.chosen { background: #e8f5e9; } .rejected { background: #fdecea; }
code, .text { font-family: monospace; font-size: 0.9em; }
"""


@dataclass
class IterationOutputs:
    """The stage output folders of one iteration (iteration 0: only the evaluation)."""

    iteration: int
    metrics: dict[str, float]
    eval_dir: Path
    candidates_dir: Path | None = None
    scores_dir: Path | None = None
    pairs_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- pure pieces

def win_matrix(pair_rows: pd.DataFrame, n: int) -> list[list[float]]:
    """n x n matrix of p(i beats j) (both orders combined, data/curation.py); NaN diagonal and
    for pairs that were not judged."""
    m = [[math.nan] * n for _ in range(n)]
    for r in aggregate_pairs(pair_rows).itertuples():
        if r.i < n and r.j < n:
            m[r.i][r.j], m[r.j][r.i] = float(r.p_i_over_j), float(r.p_j_over_i)
    return m


def drop_reason(cands: pd.DataFrame, pair_rows: pd.DataFrame | None, point_rows: pd.DataFrame | None,
                cfg: CurationConfig) -> str | None:
    """Why curation dropped this one prompt (a `DROP_REASONS` name), None when it kept it:
    the curation itself, run on the prompt alone, so the answer is the stage's own."""
    if cfg.preference == "answer_only":
        pair_rows = point_rows = None
    result = curate(cands, pair_rows, cfg, point_rows=point_rows)
    return None if result.kept else next(k for k in DROP_REASONS if result.dropped[k])


def changes(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Held-out questions answered wrong before and right after ("fixed"), and the reverse
    ("broken"), matched by id; columns of `after` plus `response_before`, `answer_before`."""
    b = before[["id", "accuracy", "response", "answer"]].rename(
        columns={"accuracy": "acc_before", "response": "response_before", "answer": "answer_before"})
    m = after.merge(b, on="id", how="inner")
    return {"fixed": m[(m["acc_before"] < 0.5) & (m["accuracy"] >= 0.5)],
            "broken": m[(m["acc_before"] >= 0.5) & (m["accuracy"] < 0.5)]}


def sample_prompts(prompt_ids: list[str], kept: set[str], n: int) -> list[str]:
    """`n` prompts in a stable pseudo-random order (by hash), half kept and half dropped when
    both exist: the reader sees pairs that trained and prompts that did not."""
    def order(ids):
        return sorted(ids, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    ks, ds = order([p for p in prompt_ids if p in kept]), order([p for p in prompt_ids if p not in kept])
    take_k = min(len(ks), max(n - len(ds), (n + 1) // 2))
    return ks[:take_k] + ds[: n - take_k]


# ---------------------------------------------------------------- html helpers

def _esc(v: Any) -> str:
    return html.escape("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _img(data: bytes, cls: str, alt: str) -> str:
    return (f'<img class="{cls}" alt="{_esc(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def _table(head: list[str] | None, rows: list[list[str]], num_from: int = 99, raw: bool = False) -> str:
    th = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>" if head else ""
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c if raw else _esc(c)}</td>' if k >= num_from
                         else f"<td>{c if raw else _esc(c)}</td>" for k, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table>{th}{body}</table>"


def _mark(ok: bool) -> str:
    return '<span class="ok">right</span>' if ok else '<span class="bad">wrong</span>'


# ---------------------------------------------------------------- sections

def _metrics_section(rows: list[dict], base: dict | None, out: Path) -> tuple[str, list[Path]]:
    head, body = table_cells(([{**base, "iteration": "base"}] if base else []) + rows)
    head, body = head[1:], [cells[1:] for cells in body]  # one run: no run column
    parts = ["<h2 id='metrics'>Held-out metrics per iteration</h2>",
             "<p>Percent, ± one standard error. Iteration 0 is the rationale-tuned model; "
             "'base' is the base model answering briefly.</p>", _table(head, body, num_from=1)]
    pngs = []
    if any(r["metrics"] for r in rows):
        pngs.append(plot(rows, out / METRICS_PNG))
        parts.append(_img(pngs[0].read_bytes(), "plot", "metrics per iteration"))
    return "\n".join(parts), pngs


def _prompt_block(pid: str, cands: pd.DataFrame, scores: dict[int, float], pairs: pd.DataFrame | None,
                  chosen: dict | None, reason: str | None, image: bytes | None, png: Path) -> str:
    first = cands.iloc[0]
    gold = first.get("gold")
    gold_n = None if gold is None or (isinstance(gold, float) and math.isnan(gold)) else normalize_answer(str(gold))
    rows = []
    for c in cands.itertuples():
        role = ""
        if chosen and c.cand_idx == chosen["chosen_idx"]:
            role = "chosen"
        elif chosen and c.cand_idx == chosen["rejected_idx"]:
            role = "rejected"
        ans = c.answer if isinstance(c.answer, str) else None
        norm = normalize_answer(ans) if ans else ""  # as curation: normalised to '' is unparsable
        verdict = "unparsable" if not norm else _mark(norm == gold_n) if gold_n is not None else ""
        rows.append((role, [str(c.cand_idx), _esc(c.text), _esc(ans), verdict, _num(scores.get(c.cand_idx)),
                            _num(getattr(c, "mean_logprob", None))]))
    th = "".join(f"<th>{h}</th>" for h in ("#", "candidate", "answer", "vs gold", "R-Scorer score",
                                             "mean log-prob"))
    trs = "".join(f'<tr class="{role}">' + "".join(
        f'<td class="{"num" if k in (0, 4, 5) else "text" if k == 1 else ""}">{cell}</td>'
        for k, cell in enumerate(cells)) + "</tr>" for role, cells in rows)
    if chosen:
        verdict = (f"kept: candidate {chosen['chosen_idx']} (score {chosen['s_chosen']:.3f}) chosen over "
                   f"{chosen['rejected_idx']} (score {chosen['s_rejected']:.3f}), weight {chosen['weight']:.4g}")
    else:
        verdict = f"dropped: {reason or 'unknown'}"
    side = []
    if image:
        side.append(_img(image, "scene", f"image of {pid}"))
    if pairs is not None and len(pairs):
        n = int(cands["cand_idx"].max()) + 1
        side.append(_img(heatmap(win_matrix(pairs, n), png).read_bytes(), "heat", f"win probabilities of {pid}"))
    return (f'<div class="prompt"><h4><code>{_esc(pid)}</code>: {_esc(first.get("question"))} '
            f'(gold: <code>{_esc(gold)}</code>)</h4><div class="row">{"".join(side)}</div>'
            f"<p><b>{_esc(verdict)}</b></p><table><tr>{th}</tr>{trs}</table></div>")


def _headroom_block(m: dict) -> list[str]:
    """What best-of-N adds over the greedy response on this iteration's prompts
    (data/headroom.py), and the warning when that is nothing."""
    rows = [[name.replace("_", " + "), _num(100 * m[f"search/bestofn_{name}"], "{:.1f}%"),
             _num(100 * m[f"search/greedy_{name}"], "{:.1f}%")]
            for name in LEVELS if f"search/bestofn_{name}" in m]
    if not rows:
        return []
    warn = warning(m)
    return ["<h3>Headroom: prompts with such a response</h3>",
            _table(["level", "best of N candidates", "greedy response"], rows, num_from=1)] + (
        [f"<p class='warn'><b>Warning:</b> {_esc(warn)}</p>"] if warn else [])


def _iteration_section(it: IterationOutputs, images: dict[str, bytes], cfg: CurationConfig,
                       n_prompts: int, out: Path) -> tuple[str, list[Path]]:
    t = it.iteration
    cands = pd.read_parquet(it.candidates_dir / CANDIDATES_FILE)
    pair_file, point_file = it.scores_dir / PAIR_SCORES_FILE, it.scores_dir / POINT_SCORES_FILE
    pair_rows = pd.read_parquet(pair_file) if pair_file.is_file() else None
    point_rows = pd.read_parquet(point_file) if point_file.is_file() else None
    prefs = pd.read_parquet(it.pairs_dir / PAIRS_FILE)
    cscores = pd.read_parquet(it.pairs_dir / CANDIDATE_SCORES_FILE)
    curated = json.loads((it.pairs_dir / METRICS_FILE).read_text())
    dropped = curated.get("dropped", {})
    n_total = int(curated.get("metrics", {}).get("curate/n_prompts", cands["prompt_id"].nunique()))
    m = it.metrics
    parts = [f"<h2 id='iteration-{t}'>Iteration {t}</h2>",
             f"<p>{n_total} prompts searched, {len(prefs)} pairs kept "
             f"(kept fraction {_num(m.get('curate/kept_frac'))}); judge flip rate "
             f"{_num(m.get('judge/flip_rate'))}; DPO loss {_num(m.get('dpo/loss'))}.</p>",
             *_headroom_block(m),
             "<h3>Why curation dropped prompts</h3>",
             _table(["reason", "prompts"], [[k, str(v)] for k, v in dropped.items()] + [["kept", str(len(prefs))]],
                    num_from=1)]
    by_prompt = {p: g.sort_values("cand_idx") for p, g in cands.groupby("prompt_id", sort=False)}
    kept = {r["prompt_id"]: r for r in prefs.to_dict("records")}
    scores_of = {p: dict(zip(g["cand_idx"], g["score"])) for p, g in cscores.groupby("prompt_id")}
    pngs = []
    parts.append(f"<h3>Sample of {min(n_prompts, len(by_prompt))} prompts</h3>"
                 "<p>Heatmap: p(row candidate beats column candidate), both presentation orders "
                 "combined.</p>")
    for k, pid in enumerate(sample_prompts(list(by_prompt), set(kept), n_prompts)):
        pc = by_prompt[pid]
        pp = pair_rows[pair_rows["prompt_id"] == pid] if pair_rows is not None else None
        qp = point_rows[point_rows["prompt_id"] == pid] if point_rows is not None else None
        sc = scores_of.get(pid, {})
        reason = None if pid in kept else drop_reason(pc, pp, qp, cfg)
        png = out / f"iteration-{t}-prompt-{k}.png"
        parts.append(_prompt_block(pid, pc, sc, pp, kept.get(pid), reason, images.get(pid), png))
        if png.is_file():
            pngs.append(png)
    return "\n".join(parts), pngs


def _changes_section(label: str, before: pd.DataFrame, after: pd.DataFrame, images: dict[str, bytes],
                     n_examples: int) -> str:
    ch = changes(before, after)
    parts = [f"<h3>{_esc(label)}</h3>",
             f"<p>{len(ch['fixed'])} fixed (wrong, then right), {len(ch['broken'])} broken (right, then "
             f"wrong), out of {len(after.merge(before[['id']], on='id'))} held-out questions.</p>"]
    for name, df in ch.items():
        if not len(df):
            continue
        rows = [[_img(images[r["id"]], "scene", r["id"]) if r["id"] in images else "",
                 f"<code>{_esc(r['id'])}</code> {_esc(r['question'])}", f"<code>{_esc(r['gold'])}</code>",
                 f'<span class="text">{_esc(r["response_before"])}</span>',
                 f'<span class="text">{_esc(r["response"])}</span>']
                for r in df.head(n_examples).to_dict("records")]
        parts.append(f"<h4>{name} (first {len(rows)})</h4>")
        parts.append(_table(["image", "question", "gold", "before", "after"], rows, raw=True))
    return "\n".join(parts)


# ---------------------------------------------------------------- the page

def build_report(world_dir: Path, iterations: list[IterationOutputs], out: str | Path,
                 curation: CurationConfig, base_eval_dir: Path | None = None,
                 base_metrics: dict | None = None, n_prompts: int = 4, n_examples: int = 5,
                 title: str = "SRC iteration report", facts: dict[str, str] | None = None) -> dict[str, Any]:
    """Write `report.html` and its PNG plots into `out`; returns {"html": path, "pngs": [paths]}.

    Args:
        world_dir: the world stage's folder (pool and eval images).
        iterations: ascending; those with candidates get an iteration section.
        curation: the run's curation config (to say why each sampled prompt was dropped).
        base_eval_dir / base_metrics: the base model's evaluation, the first "before".
        facts: key -> value lines shown under the title (config digest, models, ...).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for split in ("pool", "eval"):
        f = Path(world_dir) / SPLIT_FILES[split]
        if f.is_file():
            df = pd.read_parquet(f, columns=["id", "image"])
            images.update({i: b for i, b in zip(df["id"], df["image"]) if isinstance(b, bytes)})
    rows = [{"run_id": "this run", "run_name": "", "iteration": it.iteration, "metrics": it.metrics}
            for it in iterations]
    base = {"run_id": "this run", "run_name": "", "metrics": base_metrics} if base_metrics else None
    metrics_html, pngs = _metrics_section(rows, base, out)
    body = [metrics_html]
    searched = [it for it in iterations if it.candidates_dir is not None]
    for it in searched:
        section, more = _iteration_section(it, images, curation, n_prompts, out)
        body.append(section)
        pngs += more
    evals = ([("base", base_eval_dir)] if base_eval_dir else []) + [(f"iteration {it.iteration}", it.eval_dir)
                                                                   for it in iterations]
    if len(evals) > 1:
        body.append("<h2 id='changes'>What changed between evaluations</h2>")
        frames = [(label, pd.read_parquet(Path(d) / EVAL_ROWS_FILE)) for label, d in evals]
        for (lb, before), (la, after) in zip(frames, frames[1:]):
            body.append(_changes_section(f"{lb} -> {la}", before, after, images, n_examples))
    toc = " · ".join(["<a href='#metrics'>metrics</a>"]
                     + [f"<a href='#iteration-{it.iteration}'>iteration {it.iteration}</a>" for it in searched]
                     + (["<a href='#changes'>changes</a>"] if len(evals) > 1 else []))
    facts_html = _table(None, [[k, v] for k, v in (facts or {}).items()]) if facts else ""
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>{_esc(title)}</h1>\n{facts_html}\n<p>{toc}</p>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path = out / HTML_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return {"html": path, "pngs": pngs}
