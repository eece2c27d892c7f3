"""The MLflow layout of a pipeline run, written and read back through the tracker interface
(infra/tracking.py), so it holds for any tracker: MLflow, or the null tracker, which records
nothing and so has no run to resume from.

The pipeline (parent) run holds `config.yaml`, `summary.json`, `report.html` and `report/*.png`
(the iteration report, tasks/report.py), `data/` (rejected rows), `base_eval/`, `scorer/`.
Per iteration t, one child run tagged `src.role=iteration`, `src.iteration=<t>` holding
`candidates.parquet`, `pairwise_scores.parquet`, `preference_pairs.parquet`, `adapter/`,
`eval/metrics.json`, `eval/samples.parquet`, and the metrics `eval/*`, `judge/flip_rate`,
`curate/kept_frac`, `dpo/loss` with step = t, and the tags `src.adapter_digest`, `src.eval_digest`.
"""

from __future__ import annotations

import json
from pathlib import Path

from data.config import digest
from data.schema import (
    CANDIDATES_FILE, CANDIDATE_SCORES_FILE, MARKS_FILE, METRICS_FILE, PAIRS_FILE, PAIR_SCORES_FILE,
    POINT_SCORES_FILE, READER_FILE, SAMPLES_FILE,
)
from infra.store import produce, read_manifest
from data.records import read_records

EVAL_KEYS = ("accuracy", "consistency", "factuality", "format_rate", "mean_length")


def eval_metrics(ref: dict) -> dict:
    summary = json.loads((Path(ref["path"]) / METRICS_FILE).read_text())
    # a metric that was not measured (None) is not logged at all: MLflow has no "n/a"
    out = {f"eval/{k}": summary[k] for k in EVAL_KEYS if summary.get(k) is not None}
    out.update({f"eval/{k}_se": summary[f"{k}_se"] for k in EVAL_KEYS if summary.get(f"{k}_se") is not None})
    for fam, block in summary.get("families", {}).items():
        out[f"eval/family/{fam}/accuracy"] = block["accuracy"]
    return out


def log_iteration(tracker, parent: str, t: int, refs: dict) -> dict:
    """One child run for iteration t with its artifacts and metrics; returns the metrics."""
    run = tracker.start_run(f"iteration-{t}", {"src.role": "iteration", "src.iteration": str(t)},
                            parent_id=parent)
    metrics: dict = {}
    files = {"candidates": [CANDIDATES_FILE],
             "scores": [PAIR_SCORES_FILE, POINT_SCORES_FILE, READER_FILE, MARKS_FILE],
             "pairs": [PAIRS_FILE, CANDIDATE_SCORES_FILE]}
    for name, names in files.items():
        if name not in refs:
            continue
        for fname in names:
            f = Path(refs[name]["path"]) / fname
            if f.exists():
                tracker.log_artifact(run, f)
    if "candidates" in refs:  # what best-of-N adds over greedy (data/headroom.py)
        metrics.update(refs["candidates"]["meta"].get("headroom", {}))
    if "scores" in refs:
        flip = refs["scores"]["meta"].get("flip_rate")
        if flip is not None:
            metrics["judge/flip_rate"] = flip
        for key, name in (("onpolicy_agreement", "onpolicy_agreement"), ("slot_bias", "slot_bias"),
                          ("onpolicy_agree_same_answer", "agree_same_answer"),
                          ("onpolicy_agree_factual_only", "agree_factual_only"),
                          ("steer_filler", "steer_filler"), ("steer_verdict", "steer_verdict"),
                          ("steer_padding", "steer_padding")):
            v = refs["scores"]["meta"].get(key)
            if v is not None and v == v:  # NaN: no decisive pair
                metrics[f"judge/{name}"] = v
        metrics.update({k: v for k, v in refs["scores"]["meta"].items()
                        if k.startswith(("reader/", "claims/")) and v is not None and v == v})
    if "pairs" in refs:
        metrics.update(refs["pairs"]["meta"].get("metrics", {}))
        _log_samples(tracker, run, refs)
    adapter = Path(refs["adapter"]["path"]) / "adapter"
    if adapter.is_dir():
        tracker.log_artifact(run, adapter, "adapter")
    am = refs["adapter"]["meta"].get("metrics", {})
    for k in ("loss", "rewards/margins", "rewards/accuracies"):
        if k in am:
            metrics[f"dpo/{k}"] = am[k]
    if t == 0:
        metrics.update({f"sft/{k}": v for k, v in am.items() if isinstance(v, (int, float))})
    ev = refs["eval"]
    tracker.log_artifact(run, Path(ev["path"]) / METRICS_FILE, "eval")
    tracker.log_artifact(run, Path(ev["path"]) / SAMPLES_FILE, "eval")
    metrics.update(eval_metrics(ev))
    tracker.log_metrics(run, metrics, step=t)
    tracker.log_metrics(parent, {k: v for k, v in metrics.items() if not k.startswith("eval/family")}, step=t)
    tracker.set_tags(run, {"src.adapter_digest": refs["adapter"]["digest"], "src.eval_digest": ev["digest"]})
    tracker.end_run(run)
    return {"iteration": t, "run_id": run, "metrics": metrics}


def _log_samples(tracker, run: str, refs: dict) -> None:
    """Small tables for the MLflow UI (no parquet download needed)."""
    cands = read_records(Path(refs["candidates"]["path"]) / CANDIDATES_FILE)[:60]
    tracker.log_table(run, [{k: c.get(k) for k in ("prompt_id", "cand_idx", "question", "text", "answer",
                                                    "gold", "mean_logprob", "answer_confidence")}
                            for c in cands], "tables/candidates.json")
    pairs = read_records(Path(refs["pairs"]["path"]) / PAIRS_FILE)[:30]
    tracker.log_table(run, [{k: p.get(k) for k in ("prompt_id", "question", "chosen", "rejected",
                                                    "s_chosen", "s_rejected", "weight")}
                            for p in pairs], "tables/preference_pairs.json")


def metrics_table(results: list[dict]) -> str:
    """Markdown table of held-out metrics per iteration."""
    cols = ["accuracy", "consistency", "factuality", "format_rate"]
    head = ("| iteration | " + " | ".join(cols) + " | headroom | flip rate | judge agree "
            "| same-answer agree | reader agree | kept | dpo loss |")
    lines = [head, "|" + "---|" * (len(cols) + 8)]
    for r in results:
        m = r["metrics"]
        cells = [f"{100 * m[f'eval/{c}']:.1f} ± {100 * m.get(f'eval/{c}_se', float('nan')):.1f}"
                 if m.get(f"eval/{c}") is not None else "n/a" for c in cols]
        extra = [m.get("search/headroom"), m.get("judge/flip_rate"), m.get("judge/onpolicy_agreement"),
                 m.get("judge/agree_same_answer"), m.get("reader/agree_consistent"),
                 m.get("curate/kept_frac"), m.get("dpo/loss")]
        cells += ["" if v is None else f"{v:.3f}" for v in extra]
        lines.append(f"| {r['iteration']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def resolve_start(spec: str, tracker) -> dict:
    """`<pipeline run id>[:<iteration>]` -> the adapter chain and judge of that run, imported
    into the store (downloaded through the tracker), and the iteration to continue after.

    Raises:
        ValueError: no such run or iteration, or a tracker that records nothing.
    """
    run_id, _, it = spec.partition(":")
    by_t = _lineage(tracker, run_id)
    if not by_t:
        raise ValueError(f"start_from: run {run_id!r} has no iteration child runs")
    last = int(it) if it else max(by_t)
    if last not in by_t:
        raise ValueError(f"start_from: run {run_id!r} has no iteration {last} (has {sorted(by_t)})")
    chain = []
    for t in range(0, last + 1):
        if t not in by_t:
            raise ValueError(f"start_from: run {run_id!r} lacks iteration {t}")
        if not tracker.has_artifacts(by_t[t], "adapter"):
            continue  # that iteration's DPO was skipped (no pairs kept): the policy did not change
        chain.append(_import(tracker, by_t[t], "adapter", "import_adapter", "adapter"))
    # a run judged by the oracle (scorer.model=oracle) logged no judge
    judge = (_import(tracker, run_id, "scorer", "import_judge", "judge")
             if tracker.has_artifacts(run_id, "scorer") else None)
    return {"chain": chain, "judge": judge, "iteration": last}


def _lineage(tracker, run_id: str) -> dict[int, str]:
    """Iteration -> child run id of a pipeline run, completed by the run it continued from (tag
    `src.start_from`), recursively: a continued run only logs its new iterations."""
    try:
        tags = tracker.run_tags(run_id)
    except LookupError as e:
        raise ValueError(f"start_from: {e}") from e
    children = tracker.child_runs(run_id, {"src.role": "iteration"})
    by_t = {int(t["src.iteration"]): child for child, t in children.items()}
    origin = tags.get("src.start_from")
    if origin:
        prev_id, _, prev_t = origin.partition(":")
        inherited = _lineage(tracker, prev_id)
        upto = int(prev_t) if prev_t else max(inherited, default=-1)
        by_t = {**{t: r for t, r in inherited.items() if t <= upto}, **by_t}
    return by_t


def _import(tracker, run_id: str, artifact: str, stage: str, dest: str) -> dict:
    """Download an artifact folder into the store under a key of its source."""

    def build(out: Path) -> dict:
        tracker.download_artifacts(run_id, artifact, out / dest)
        return {"source_run": run_id, "artifact": artifact}

    key = digest({"run": run_id, "artifact": artifact})[:20]
    ref = produce(stage, key, build)
    assert read_manifest(Path(ref["path"])) is not None
    return ref
