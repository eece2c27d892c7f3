"""Retraining from the champion policy: continue SRC from the best policy so far and move the
`champion` alias only when held-out accuracy improves.

    src retrain --config configs/builtin.yaml [section.field=value ...]   # cli/main.py
    prefect deployment run src-iterate/retrain      # the scheduled deployment (prefect.yaml)

The champion is the version of the registered model `<tracking.experiment>-policy` (or
`registered_model`) that carries the alias `champion` in the MLflow Model Registry. A policy is
the base plus the adapter chain of iterations 0..t of a pipeline run and of the runs it
continued from (infra/layout.py), so a version's tags say where it lives and how good it was:

    src.pipeline_run_id, src.iteration   -> start_from=<pipeline run id>:<iteration>
    src.eval_accuracy, src.eval_accuracy_se, src.heldout_signature, src.base_digest

Its source is the `adapter/` artifact of the iteration child run (`runs:/<run id>/adapter`: the
form both a SQLite store and a tracking server accept for a folder without an MLmodel file).

A retraining run
1. reads the champion; with none, runs a fresh pipeline and registers its best iteration;
2. otherwise runs the configured iterations from the champion (`run_pipeline(start_from=...)`);
   if the held-out set changed since the champion was registered (data/eval config), the
   champion is first re-evaluated on the current one, so both numbers are comparable;
3. promotes (new version + alias) only if the best new iteration's accuracy beats the
   champion's by more than `min_improvement`;
4. records the decision and why: tag `src.retrain_decision` (initial | promote | keep) and
   `retrain_decision.json` on the new pipeline run, and a Prefect markdown artifact.
"""

from __future__ import annotations

from data.schema import METRICS_FILE

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from data.config import digest, stage_signature
from infra.layout import resolve_start
from infra.refs import base_ref
from flows.runner import StageRunner
from tasks import evaluate, world
from flows.pipeline import run_pipeline
from infra.tracking import make_tracker, require_records

if TYPE_CHECKING:
    from data.config import SRCConfig
    from infra.tracking import Tracker

ALIAS = "champion"
DECISIONS = ("initial", "promote", "keep")


@dataclass(frozen=True)
class Score:
    """Held-out accuracy of one policy, with its standard error (fractions, not percent)."""

    accuracy: float
    se: float = 0.0


@dataclass(frozen=True)
class Decision:
    action: str  # one of DECISIONS
    reason: str


def _pct(s: Score) -> str:
    return f"{100 * s.accuracy:.1f} ± {100 * s.se:.1f}%"


def decide(candidate: Score | None, champion: Score | None,
           min_improvement: float = 0.0) -> Decision:
    """Promote only on a strict improvement of held-out accuracy larger than `min_improvement`.

    >>> decide(Score(0.60, 0.02), Score(0.55, 0.02)).action
    'promote'
    >>> decide(Score(0.55, 0.02), Score(0.55, 0.02)).action   # a tie keeps the champion
    'keep'
    """
    if champion is None:
        if candidate is None:
            raise ValueError("no champion and no candidate: the pipeline evaluated nothing")
        return Decision("initial", f"no champion yet: the best iteration ({_pct(candidate)}) "
                                   "becomes the first champion")
    if candidate is None:
        return Decision("keep", "no new iteration was evaluated (iterate.iterations=0)")
    gain = candidate.accuracy - champion.accuracy
    noise = math.hypot(candidate.se, champion.se)
    vs = (f"candidate {_pct(candidate)} vs champion {_pct(champion)}: "
          f"{100 * gain:+.1f} points, need > {100 * min_improvement:+.1f}")
    if gain > min_improvement:
        caveat = "; within one combined standard error, so possibly noise" if gain < noise else ""
        return Decision("promote", f"held-out accuracy improved ({vs}){caveat}")
    return Decision("keep", f"held-out accuracy did not improve ({vs})")


def best_iteration(iterations: list[dict]) -> dict | None:
    """The iteration with the highest `eval/accuracy`; ties go to the earliest (fewer adapters)."""
    scored = [r for r in iterations if "eval/accuracy" in r["metrics"]]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["metrics"]["eval/accuracy"], -r["iteration"]))


def score_of(metrics: dict) -> Score:
    return Score(float(metrics["eval/accuracy"]), float(metrics.get("eval/accuracy_se", 0.0)))


def policy_model_name(cfg: SRCConfig) -> str:
    """The registered model of an experiment's policies: `<tracking.experiment>-policy`."""
    return f"{cfg.tracking.experiment}-policy"


def heldout_signature(cfg: SRCConfig) -> str:
    """What a held-out accuracy depends on besides the policy: eval set, decoding, seed.
    The base is checked separately (a champion's adapters only fit the base they grew on)."""
    model = {k: v for k, v in stage_signature(cfg.model).items() if k != "base"}
    return digest({"data": stage_signature(cfg.data), "eval": stage_signature(cfg.eval),
                   "model": model, "seed": cfg.seed})[:16]


def get_champion(tracker: Tracker, name: str) -> dict | None:
    """The champion version as a plain dict, or None (no registered model or no alias)."""
    mv = tracker.version_by_alias(name, ALIAS)
    if mv is None:
        return None
    tags = mv["tags"]
    missing = [k for k in ("src.pipeline_run_id", "src.iteration", "src.eval_accuracy")
               if k not in tags]
    if missing:
        raise ValueError(f"registered model {name!r} version {mv['version']} (alias {ALIAS!r}) lacks "
                         f"tags {missing}: it was not registered by a retraining run; move the "
                         f"alias to a version that has them or use another registered_model")
    return {**mv, "start": f"{tags['src.pipeline_run_id']}:{tags['src.iteration']}",
            "score": Score(float(tags["src.eval_accuracy"]),
                           float(tags.get("src.eval_accuracy_se", 0.0)))}


def _adapter_source(tracker: Tracker, iterations: list[dict], best: dict,
                    champion: dict | None) -> tuple[str, str]:
    """(source URI, run id) of the best policy's last adapter. An iteration whose DPO was
    skipped (no pairs kept) has no adapter: its policy is the previous iteration's."""
    for r in sorted(iterations, key=lambda r: -r["iteration"]):
        if r["iteration"] <= best["iteration"] and tracker.has_artifacts(r["run_id"], "adapter"):
            return f"runs:/{r['run_id']}/adapter", r["run_id"]
    if champion is None:
        raise ValueError(f"iteration {best['iteration']} of run {best['run_id']} has no adapter "
                         "artifact before it: nothing to register")
    return champion["source"], champion["run_id"]


def register(tracker: Tracker, name: str, source: tuple[str, str], tags: dict[str, str],
             description: str) -> str:
    """A new version of `name` (created on first use) with the alias moved to it."""
    uri, run_id = source
    return tracker.register_version(
        name, ALIAS, uri, run_id, tags, description,
        model_description=f"SRC policies; alias `{ALIAS}` = the best so far (flows/retrain.py). "
                          "A version's tags src.pipeline_run_id and src.iteration give "
                          "start_from=<run id>:<iteration>.")


def _reevaluate(cfg: SRCConfig, spec: str, tracker: Tracker) -> Score:
    """Held-out accuracy of the policy at `<run id>:<t>` on the current config's held-out set
    (cached stage tasks, so a repeat costs nothing)."""
    run = StageRunner(cfg)
    base = base_ref(cfg.model.base)
    w = run(world)
    chain = resolve_start(spec, tracker)["chain"]
    ev = run(evaluate, base=base, chain=chain, world=w)  # accuracy is what the champion is compared on
    summary = json.loads((Path(ev["path"]) / METRICS_FILE).read_text())
    return Score(float(summary["accuracy"]), float(summary.get("accuracy_se", 0.0)))


def champion_baseline(cfg: SRCConfig, tracker: Tracker, name: str, base: str,
                      say: Callable[[str], None]) -> tuple[dict | None, Score | None, bool]:
    """The champion, its accuracy on the current held-out set, and whether that needed a
    re-evaluation (the data/eval config changed since it was registered).

    Raises:
        ValueError: the champion grew on another base model (its adapters do not fit).
    """
    champion = get_champion(tracker, name)
    if not champion:
        say(f"no champion of {name!r} at {tracker.uri}: running a fresh pipeline")
        return None, None, False
    t, v = champion["tags"], champion["version"]
    if t.get("src.base_digest", base) != base:
        raise ValueError(
            f"champion v{v} of {name!r} grew on a base with digest {t['src.base_digest'][:12]}, "
            f"model.base={cfg.model.base!r} has {base[:12]}: its adapters do not fit; pass "
            "another registered_model to start a new lineage")
    score, reevaluated = champion["score"], False
    if t.get("src.heldout_signature") != heldout_signature(cfg):
        say(f"held-out set changed since champion v{v} was registered: re-evaluating it")
        score, reevaluated = _reevaluate(cfg, champion["start"], tracker), True
    say(f"champion v{v} of {name!r}: {champion['start']}, accuracy {_pct(score)}")
    return champion, score, reevaluated


def retrain_pipeline(cfg: SRCConfig, registered_model: str | None = None, tracker: Tracker | None = None,
                     config_path: str | None = None, min_improvement: float = 0.0) -> dict:
    """One retraining run (see the module docstring); returns run_pipeline's result plus
    `retrain`: the decision record also logged as `retrain_decision.json`."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact


    say = get_run_logger().info
    tracker = tracker or make_tracker(cfg.tracking)
    require_records(tracker, "retraining")  # the champion lives in the tracker's registry
    name = registered_model or policy_model_name(cfg)
    base = base_ref(cfg.model.base)["digest"]
    champion, before, reevaluated = champion_baseline(cfg, tracker, name, base, say)
    spec = champion["start"] if champion else None

    result = run_pipeline(cfg, start_from=spec, tracker=tracker, config_path=config_path)
    parent, best = result["parent_run_id"], best_iteration(result["iterations"])
    decision = decide(score_of(best["metrics"]) if best else None, before, min_improvement)
    now = get_champion(tracker, name) if decision.action == "promote" else None
    if now and now["version"] != champion["version"]:  # another run promoted meanwhile
        decision = Decision("keep", f"{decision.reason}; but the champion moved to "
                                    f"v{now['version']} during this run: not overriding it")
    version = champion["version"] if champion else None
    if decision.action in ("initial", "promote"):
        cand = score_of(best["metrics"])
        tags = {"src.pipeline_run_id": parent, "src.iteration": str(best["iteration"]),
                "src.iteration_run_id": best["run_id"], "src.eval_accuracy": repr(cand.accuracy),
                "src.eval_accuracy_se": repr(cand.se), "src.heldout_signature":
                heldout_signature(cfg), "src.base_digest": base, "src.start_from": spec or "",
                "src.decision": decision.action}
        source = _adapter_source(tracker, result["iterations"], best, champion)
        version = register(tracker, name, source, tags,
                           f"the policy at iteration {best['iteration']} of pipeline run "
                           f"{parent} (start_from={parent}:{best['iteration']}); {decision.reason}")
    record: dict[str, Any] = {
        "decision": decision.action, "reason": decision.reason, "registered_model": name,
        "alias": ALIAS, "min_improvement": min_improvement,
        "heldout_signature": heldout_signature(cfg),
        "champion_before": None if not champion else {
            "version": champion["version"], "start_from": spec, "accuracy": before.accuracy,
            "accuracy_se": before.se, "reevaluated": reevaluated},
        "candidate": None if not best else {
            "pipeline_run_id": parent, "iteration": best["iteration"], "run_id": best["run_id"],
            **{k: best["metrics"].get(f"eval/{k}") for k in ("accuracy", "accuracy_se")}},
        "champion_after": {"version": version},
        "tracking_uri": tracker.uri,
    }
    tracker.set_tags(parent, {"src.retrain_decision": decision.action,
                              "src.registered_model": name, "src.champion_version": version or ""})
    tracker.log_dict(parent, record, "retrain_decision.json")
    say(f"retrain decision: {decision.action}: {decision.reason}")
    create_markdown_artifact(key="src-retrain-decision", markdown=decision_markdown(record),
                             description=f"retraining decision for {name}")
    return {**result, "retrain": record}


def decision_markdown(record: dict) -> str:
    """The decision as a short markdown report (Prefect artifact)."""
    b, c = record["champion_before"], record["candidate"]
    alias = (f"Registered model `{record['registered_model']}`, alias `{record['alias']}` -> "
             f"version {record['champion_after']['version']}")
    lines = [f"# Retraining: **{record['decision']}**", "", record["reason"], "", alias, "",
             "| | version / run | iteration | accuracy |", "|---|---|---|---|"]
    if b:
        note = " (re-evaluated)" if b["reevaluated"] else ""
        lines.append(f"| champion before | v{b['version']} `{b['start_from']}` | "
                     f"{b['start_from'].split(':')[-1]} | {_pct(Score(b['accuracy'], b['accuracy_se']))}{note} |")
    if c:
        lines.append(f"| candidate | `{c['pipeline_run_id']}` | {c['iteration']} | "
                     f"{_pct(Score(c['accuracy'], c['accuracy_se'] or 0.0))} |")
    lines += ["", f"MLflow: `{record['tracking_uri']}`"]
    return "\n".join(lines) + "\n"
