"""`src`: the project's command line.

    src run --config configs/builtin.yaml [section.field=value ...]   # the pipeline, in-process
    src up / src down                     # local Prefect server + worker + MLflow server
    src compare --last 2 --html           # metrics per iteration across pipeline runs
    src retrain --config configs/builtin.yaml   # continue from the champion policy (flows/retrain.py)
    src eval-base --config configs/builtin.yaml
    src doctor                            # is this machine ready? says what to fix
"""

from __future__ import annotations

import argparse
import sys

from infra.environment import apply_defaults


def cmd_eval_base(args: argparse.Namespace) -> int:
    from data.config import load_config
    from data.metrics import format_table
    from models.builtin import evaluate_base, resolve_base
    from models.loading import load_lvlm

    cfg = load_config(args.config, args.overrides)
    path = resolve_base(cfg.model.base)
    model, processor = load_lvlm(path, dtype=cfg.model.dtype, device=cfg.model.device,
                                 trust_remote_code=cfg.model.trust_remote_code)
    n = cfg.eval.max_questions or cfg.data.n_eval
    print(f"evaluating {path} on {n} held-out shapes questions ...", flush=True)
    summary = evaluate_base(model, processor, cfg, n, batch_size=cfg.eval.batch_size)
    print(format_table(summary))
    return 0


def flow_for(args: argparse.Namespace, reads_back: bool = False):
    """The flow, once the config loads, the tracker can read runs back where the command needs
    it (`reads_back`: resume, retraining) and the servers it names answer; before Prefect starts."""
    from cli.preflight import check_services
    from data.config import ConfigError, load_config
    from infra.tracking import NO_RUNS

    cfg = load_config(args.config, args.overrides)
    if reads_back and cfg.tracking.backend == "none":
        raise ConfigError(f"{args.cmd}: {NO_RUNS}")
    check_services(cfg.tracking.tracking_uri, mlflow=cfg.tracking.backend == "mlflow")
    if cfg.runtime.num_threads:
        import torch

        torch.set_num_threads(cfg.runtime.num_threads)
    from flows.src_iterate import src_iterate

    return src_iterate


def cmd_run(args: argparse.Namespace) -> int:
    src_iterate = flow_for(args, reads_back=bool(args.start_from))

    result = src_iterate(config_path=args.config, overrides=args.overrides,
                         start_from=args.start_from)
    print("\nbase model (short answers, before SRC), held-out accuracy per family:")
    print(result["base_table"])
    print("\nper iteration (0 = rationale-tuned, before any DPO):")
    print(result["table"])
    by = result.get("measured_by")
    if by and by != "exact scorer":  # data without scene facts: who graded them, never the R-Scorer
        print(f"consistency and factuality are graded by the {by} (no scene facts to score them "
              "exactly; the R-Scorer that curation uses never grades: models/evaluate.py)")
    elif by is None and result.get("iterations"):
        print("consistency and factuality: n/a (no scene facts, and no teacher to grade them: "
              "set teacher.endpoint and teacher.model, eval.judge)")
    bad = {k: v for k, v in (result.get("rejected") or {}).items() if v}
    if bad:  # your own data: the rows left out, and where each one's reason is
        print(f"rejected rows: {', '.join(f'{k} {v}' for k, v in bad.items())}; file, row, id, field and "
              f"reason of each in {result['rejected_report']} (MLflow: data/rejected_rows.parquet)")
    print(f"\npipeline run {result['parent_run_id']} finished in {result['wall_seconds']:.0f}s")
    if args.summary_json:  # for scripts (bench/): per-iteration metrics, timing, run id
        import json
        from pathlib import Path

        keep = {k: result[k] for k in ("parent_run_id", "iterations", "wall_seconds", "timing", "tracking_uri",
                                       "chain", "base_metrics", "report", "rejected")}
        Path(args.summary_json).write_text(json.dumps(keep, indent=1, default=str))
    uri = result["tracking_uri"]
    if not uri:  # tracking.backend=none
        print(f"iteration report: {result['report']} (not tracked: tracking.backend=none)")
        return 0
    if result.get("report"):
        print(f"iteration report: {result['report']} (also the run's artifact report.html)")
    print(f"open the MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1")
    if result.get("experiment_id") is not None:  # MLflow 3 opens on GenAI traces without the parameter
        print(f"  this run: http://127.0.0.1:5000/#/experiments/{result['experiment_id']}/runs/"
              f"{result['parent_run_id']}?workflowType=machine_learning")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """`src retrain`: one retraining run in-process (ephemeral Prefect, no server needed)."""
    src_iterate = flow_for(args, reads_back=True)

    result = src_iterate(config_path=args.config, overrides=args.overrides, retrain=True,
                         registered_model=args.registered_model,
                         min_improvement=args.min_improvement)
    rec = result["retrain"]
    print(f"\n{result['table']}\n\n{rec['decision']}: {rec['reason']}")
    print(f"{rec['registered_model']}@{rec['alias']} = version {rec['champion_after']['version']}"
          f" (pipeline run {result['parent_run_id']}, MLflow {rec['tracking_uri']})")
    return 0


def add_retrain_command(subparsers: argparse._SubParsersAction) -> None:
    """`src retrain`."""
    p = subparsers.add_parser("retrain", help="continue from the champion policy; promote "
                                              "only if held-out accuracy improves")
    p.add_argument("--config", default="configs/builtin.yaml", help="YAML config")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides")
    p.add_argument("--registered-model", default=None,
                   help="registered model name (default: <tracking.experiment>-policy)")
    p.add_argument("--min-improvement", type=float, default=0.0,
                   help="accuracy gain (fraction) the candidate must exceed to be promoted; "
                        "negative accepts a small regression (e.g. to refresh the champion)")
    p.set_defaults(fn=cmd_retrain)


def main(argv: list[str] | None = None) -> int:
    apply_defaults()  # infra/environment.py: before anything imports prefect, mlflow, transformers
    ap = argparse.ArgumentParser(prog="src", description="Self-Rationale Calibration for LVLMs.",
                                 epilog="start with `src doctor`, then `src run`; "
                                        "`src <command> --help` shows examples",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    examples = {
        "run": "examples:\n  src run --config configs/builtin.yaml\n"
               "  src run --config configs/smoke.yaml iterate.iterations=1 dpo.beta=0.2\n"
               "  src run --start-from <pipeline run id>:2 iterate.iterations=2",
        "eval-base": "example:\n  src eval-base --config configs/builtin.yaml eval.max_questions=200",
    }
    for name, fn, help_ in [
        ("run", cmd_run, "run the SRC pipeline in-process (ephemeral Prefect, no server)"),
        ("eval-base", cmd_eval_base, "evaluate the base model on the held-out split"),
    ]:
        p = sub.add_parser(name, help=help_, description=help_, epilog=examples[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", default="configs/builtin.yaml", help="YAML config")
        p.add_argument("overrides", nargs="*", help="section.field=value overrides")
        if name == "run":
            p.add_argument("--start-from", default=None,
                           help="<pipeline run id>[:<iteration>] to continue from")
            p.add_argument("--summary-json", default=None, metavar="PATH",
                           help="also write the run's per-iteration metrics and timing as JSON")
        p.set_defaults(fn=fn)
    from cli import compare, doctor, services

    doctor.add_commands(sub)
    compare.add_commands(sub)
    services.add_commands(sub)  # up, down
    add_retrain_command(sub)
    return dispatch(ap.parse_args(argv))


# commands that load a model: their config must load and its device exist before Prefect starts
LOADS_MODEL = ("run", "eval-base", "retrain")


def print_error(e: BaseException) -> None:
    """One `error: ...` line per line of the message (a DataError names each bad split on
    its own line), on stderr."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    for line in lines:
        print(f"error: {line}", file=sys.stderr)


def preflight(args: argparse.Namespace) -> None:
    """Checks that need no model, run before any command that loads one: the config loads
    (ConfigError), its model.device is on this machine (DeviceUnavailable), its judge and reader
    were trained for its data, and a teacher it asks answers (ServiceUnavailable)."""
    if getattr(args, "cmd", None) not in LOADS_MODEL:
        return
    from data.config import load_config
    from cli.preflight import check_device, check_teacher
    from infra.refs import check_judging

    cfg = load_config(args.config, args.overrides)
    check_device(cfg.model.device)
    if args.cmd != "eval-base":
        check_judging(cfg)  # a judge or reader of another world: one line, before Prefect starts
        check_teacher(cfg)


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; user mistakes (bad config, bad ids, a state dir that cannot be
    used, a device that is not here) become `error:` lines and exit 2. The state dir is checked
    first: Prefect keeps its home and results in it (infra/environment.py)."""
    from data.config import ConfigError
    from infra.store import state_dir_problem

    if getattr(args, "needs_state_dir", True):  # `src doctor` reports it as a check instead
        problem = state_dir_problem()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    try:
        preflight(args)
        return args.fn(args)
    except (ConfigError, ValueError) as e:
        print_error(e)
        return 2
    except Exception as e:
        from cli.preflight import lost_service

        why = lost_service(e)
        if why is None:
            raise
        print(f"error: {why}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
