"""`src doctor`: is this machine ready to run SRC? Each check prints one line and, when it is
not fine, what to do about it. Exit status 1 if any check failed (warnings do not fail).

    src doctor
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import sys
from dataclasses import dataclass

from tasks.store import PROJECT_DIR, state_dir

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
    where = state_dir()
    free = shutil.disk_usage(where).free / 2**30
    status = "FAIL" if free < MIN_FREE_GIB else "warn" if free < WARN_FREE_GIB else "ok"
    fix = "" if status == "ok" else f"free space or point SRC_STATE_DIR at a larger disk (>= {WARN_FREE_GIB:g} GiB)"
    return Check("disk", status, f"{free:.1f} GiB free at the state dir {where}", fix)


def check_state_writable() -> Check:
    probe = state_dir() / ".doctor-probe"
    try:
        probe.write_text("ok")
        probe.unlink()
        return Check("state dir", "ok", f"{state_dir()} is writable")
    except OSError as e:
        return Check("state dir", "FAIL", f"{state_dir()}: {e.strerror or e}",
                     "set SRC_STATE_DIR to a writable folder")


def check_servers() -> list[Check]:
    from flows.preflight import ServiceUnavailable, check_services

    out = []
    for name, var in (("mlflow", "MLFLOW_TRACKING_URI"), ("prefect", "PREFECT_API_URL")):
        uri = os.environ.get(var, "")
        if not uri.startswith(("http://", "https://")):
            local = "local SQLite store in the state dir" if name == "mlflow" else "a temporary in-process server"
            out.append(Check(name, "ok", f"{var} not set to a server: {local}"))
            continue
        try:
            check_services(uri if name == "mlflow" else "", uri if name == "prefect" else "")
            out.append(Check(name, "ok", f"{uri} answers"))
        except ServiceUnavailable as e:
            out.append(Check(name, "FAIL", str(e).split(": start it")[0], "start it with `src up`, or unset " + var))
    return out


def check_builtin() -> Check:
    missing = [p for p in ("models/builtin/base", "models/builtin/judge") if not (PROJECT_DIR / p).is_dir()]
    if missing:
        return Check("built-in world", "warn", f"missing {missing}",
                     "`make bootstrap` / `make bootstrap-judge` rebuild them (or use your own model)")
    return Check("built-in world", "ok", "committed base model and R-Scorer present")


def run_checks() -> list[Check]:
    return [check_python(), *check_packages(), check_gpu(), check_disk(), check_state_writable(),
            *check_servers(), check_builtin()]


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks()
    for c in checks:
        print(c.line())
    failed = [c.name for c in checks if c.status == "FAIL"]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed"
          + (f"; fix: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Python, packages, GPU, disk, servers; say what to fix",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(fn=cmd_doctor)
