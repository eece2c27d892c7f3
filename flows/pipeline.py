"""The SRC recipe (docs/method.md) that the `src-iterate` flow runs (flows/src_iterate.py),
retraining (flows/retrain.py) runs, and `make stages` runs without Prefect: rationale SFT, then
T iterations of search -> judge -> curate -> DPO -> evaluate, every stage a cached step.

Each stage's key, timing and resume are the stage runner's (flows/runner.py); tracking, the
report and the summary are the run's (flows/run.py): what is left here is the method.
Re-running the same command after a crash reuses every finished stage and runs only the rest.
"""

from __future__ import annotations

from data.config import SRCConfig
from flows.run import Run
from infra.tracking import Tracker
from tasks import curate, distil, dpo, evaluate, score, search, sft


def run_pipeline(cfg: SRCConfig, start_from: str | None = None, tracker: Tracker | None = None,
                 config_path: str | None = None, prefect: bool = True) -> dict:
    """The whole SRC loop; returns what `src run` prints (flows/run.py:Run.finish)."""
    with Run(cfg, tracker, config_path, start_from, prefect) as run:
        world, base = run.world(), run.base
        run.base_eval()
        if start_from:  # a logged run's adapters and judge, then its next iteration
            chain, judge, first = run.resume()
        else:  # 1. rationale fine-tuning; the judge, trained or given (or None: distilled below)
            adapter = run(sft, base=base, world=world)
            chain, judge, first = [adapter], run.judge_of_its_own(), 1
            run.iteration(0, adapter=adapter, eval=run(evaluate, base=base, chain=chain, world=world))
        run.log_judge(judge)
        for t in range(first, first + cfg.iterate.iterations):
            run.say(f"iteration {t}: search -> score -> curate -> dpo -> eval")
            # 2. candidate search: N rationale + answer candidates per question from pi_{t-1}
            cands = run(search, base=base, chain=chain, world=world, iteration=t)
            if judge is None:  # scorer.model=distill: the teacher teaches it on these candidates
                judge = run.log_judge(run(distil, candidates=cands, world=world))
            # 3. the R-Scorer judges every pair of candidates, in both orders
            scores = run(score, judge=judge, candidates=cands)
            # 4. confidence-weighted curation of (chosen, rejected) pairs
            pairs = run(curate, candidates=cands, scores=scores)
            # 5. LoRA DPO on the pairs: pi_t
            adapter = run(dpo, base=base, chain=chain, pairs=pairs, world=world)
            chain = chain + [adapter]
            run.iteration(t, candidates=cands, scores=scores, pairs=pairs, adapter=adapter,
                          eval=run(evaluate, base=base, chain=chain, world=world))
        return run.finish(chain)
