"""`src doctor`: is this machine ready to run SRC? Each check prints one line and, when it is
not fine, what to do about it. Exit status 1 if any check failed (warnings do not fail).
With `--config` (and overrides, as `src run` takes them) it also checks that the config loads,
that its model.device is here, and names the tracking store that config would use.

    src doctor
    src doctor --config configs/qwen2vl-7b.yaml model.device=cuda
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from infra.store import PROJECT_DIR, state_dir_problem, state_path

PACKAGES = ("torch", "transformers", "peft", "trl", "datasets", "prefect", "mlflow", "pandas")
MIN_FREE_GIB, WARN_FREE_GIB = 2.0, 10.0


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn" or "FAIL"
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}" + (f"  -> {self.fix}" if self.fix else "")


def check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 10)
    return Check("python", "ok" if ok else "FAIL", f"{v.major}.{v.minor}.{v.micro} ({sys.executable})",
                 "" if ok else "use Python 3.10 or newer (the Makefile uses python3.11)")


def check_packages() -> list[Check]:
    out = []
    for name in PACKAGES:
        try:
            out.append(Check(name, "ok", md.version(name)))
        except md.PackageNotFoundError:
            out.append(Check(name, "FAIL", "not installed", "run `make setup`"))
    return out


def check_gpu() -> Check:
    try:
        import torch
    except ImportError:
        return Check("gpu", "FAIL", "torch does not import", "run `make setup`")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("gpu", "ok", f"{torch.cuda.device_count()} CUDA device(s): {names}")
    cuda = getattr(torch.version, "cuda", None)
    return Check("gpu", "ok", f"none (torch {torch.__version__}, CPU build{'' if not cuda else ', CUDA ' + cuda}): "
                 "the built-in world runs on CPU; 7B presets need a GPU")


def check_disk() -> Check:
    where = state_path()
    probe = next((a for a in (where, *where.parents) if a.is_dir()), Path("/"))  # not created yet
    free = shutil.disk_usage(probe).free / 2**30
    status = "FAIL" if free < MIN_FREE_GIB else "warn" if free < WARN_FREE_GIB else "ok"
    fix = "" if status == "ok" else f"free space or point SRC_STATE_DIR at a larger disk (>= {WARN_FREE_GIB:g} GiB)"
    return Check("disk", status, f"{free:.1f} GiB free at the state dir {where}", fix)


def check_state_writable() -> Check:
    problem = state_dir_problem()  # creates it, as any run would
    if problem:
        return Check("state dir", "FAIL", problem.split("; set SRC_STATE_DIR")[0],
                     "set SRC_STATE_DIR to a folder you can write to")
    return Check("state dir", "ok", f"{state_path()} is writable")


def tracking_store(cfg_uri: str | None) -> tuple[str, str]:
    """(the MLflow tracking URI a run would use, where it comes from), resolved as
    `MLflowTracker` does: tracking.tracking_uri, else $MLFLOW_TRACKING_URI, else SQLite in the
    state dir (`infra.tracking.default_tracking_uri`)."""
    if cfg_uri:
        return cfg_uri, "tracking.tracking_uri of the config"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI"
    if state_dir_problem() is None:
        from infra.tracking import default_tracking_uri

        uri = default_tracking_uri()
    else:  # the state dir check fails; say where the store would be
        uri = f"sqlite:///{state_path() / 'mlflow.db'}"
    return uri, "default: local SQLite store in the state dir"


def check_servers(cfg_uri: str | None = None) -> list[Check]:
    """The tracking store a run would use (a server must answer) and the Prefect API."""
    from cli.preflight import ServiceUnavailable, check_server

    uri, origin = tracking_store(cfg_uri)
    undo = "change tracking.tracking_uri" if origin.startswith("tracking.") else "unset MLFLOW_TRACKING_URI"
    api = os.environ.get("PREFECT_API_URL", "")
    out = []
    for kind, target, ok, fix in (
            ("mlflow", uri, f"tracking store {uri} ({origin})", f"start it with `src up`, or {undo}"),
            ("prefect", api, "PREFECT_API_URL not set to a server: a temporary in-process server",
             "start it with `src up`, or unset PREFECT_API_URL")):
        via = f" ({origin})" if kind == "mlflow" else ""
        try:
            check_server(kind, target)
        except ServiceUnavailable as e:
            out.append(Check(kind, "FAIL", str(e).split(": start it")[0] + via, fix))
            continue
        served = target.startswith(("http://", "https://"))
        out.append(Check(kind, "ok", f"{target} answers{via}" if served else ok))
    return out


def check_config(path: str | None, overrides: list[str]) -> tuple[list[Check], str | None]:
    """The config loads and its model.device is here; returns its tracking.tracking_uri too."""
    from data.config import ConfigError, load_config
    from cli.preflight import DeviceUnavailable, check_device

    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        return [Check("config", "FAIL", " ".join(str(e).split()), "fix the field it names")], None
    shown = path or "the defaults"
    more = f" with {len(overrides)} override(s)" if overrides else ""
    out = [Check("config", "ok", f"{shown} loads{more}")]
    try:
        check_device(cfg.model.device)
        out.append(Check("device", "ok", f"model.device={cfg.model.device!r}"))
    except DeviceUnavailable as e:
        detail, _, fix = str(e).partition("; ")
        out.append(Check("device", "FAIL", detail, fix))
    return out, cfg.tracking.tracking_uri


def check_builtin() -> Check:
    missing = [p for p in ("models/builtin/base", "models/builtin/judge") if not (PROJECT_DIR / p).is_dir()]
    if missing:
        return Check("built-in world", "warn", f"missing {missing}",
                     "`make bootstrap` / `make bootstrap-judge` rebuild them (or use your own model)")
    return Check("built-in world", "ok", "committed base model and R-Scorer present")


def run_checks(config: str | None = None, overrides: list[str] | None = None) -> list[Check]:
    overrides = overrides or []
    cfg_checks, cfg_uri = check_config(config, overrides) if config or overrides else ([], None)
    return [check_python(), *check_packages(), check_gpu(), *cfg_checks, check_disk(),
            check_state_writable(), *check_servers(cfg_uri), check_builtin()]


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(getattr(args, "config", None), getattr(args, "overrides", None))
    for c in checks:
        print(c.line())
    failed = [c.name for c in checks if c.status == "FAIL"]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed"
          + (f"; fix: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Python, packages, GPU, disk, servers; say what to fix",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="also check this config (loads, device, tracking store)")
    p.add_argument("overrides", nargs="*", help="section.field=value overrides, as for `src run`")
    p.set_defaults(fn=cmd_doctor, needs_state_dir=False)  # a bad state dir is one of its checks
