"""Where the DPO settings travel: every place a run's config passes through on its way from
`src run` to the DPO loss, measured on a real run (docs/architecture.md).

The run is `src run --config <config>` in this process, in a scratch state folder. From the
`src-iterate` flow's start until TRL first computes the DPO loss, every call of a function of this
repository whose arguments carry the DPO settings in any form (the run config, its `dpo`
section, a dump of either as a dict, TRL's `DPOConfig`, or an argument named `*beta*`) is
one visit to that function: a place. A call whose caller, the nearest frame of this
repository, sits in a lower layer (docs/architecture.md: flows, tasks, infra, report, models,
data) climbs back up a layer. The run stops at the first loss: what comes after it does not
change the walk.

    python -m tools.config_walk --config configs/smoke.yaml [--json walk.json]

No library does this (a profiler counts time, not where a value goes): a `sys.setprofile`
hook written here. The run is slower under it (about 2x on configs/smoke.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("flows", "tasks", "infra", "report", "models", "data")  # as tests/unit/test_imports.py
FLOW = ("flows/src_iterate.py", "src_iterate")  # where the walk starts
LOSS = ("trl/trainer/dpo_trainer.py", "compute_loss")  # where it ends


class Walk:
    def __init__(self, out: str | None) -> None:
        self.places: dict[str, int] = {}  # "file:function" -> visits
        self.climbs: set[tuple[str, str]] = set()  # (caller place, callee place)
        self.out = out
        self.started = False

    @staticmethod
    def _repo_file(code) -> str | None:
        f = code.co_filename
        if not f.startswith(str(ROOT)) or "/.venv/" in f or "/site-packages/" in f:
            return None
        return str(Path(f).relative_to(ROOT))

    @staticmethod
    def _carries(name: str, v) -> bool:
        if "beta" in name.lower() and isinstance(v, (int, float)):
            return True
        if isinstance(v, dict):
            return "dpo" in v or ("beta" in v and "max_steps" in v)
        mod = type(v).__module__ or ""
        if mod.startswith("data.config"):  # the run config or one of its sections
            return hasattr(v, "dpo") or (hasattr(v, "beta") and hasattr(v, "max_steps"))
        return type(v).__name__ == "DPOConfig" and mod.startswith("trl")

    @staticmethod
    def _layer(file: str) -> int | None:
        top = file.split("/", 1)[0]
        return LAYERS.index(top) if top in LAYERS else None

    def hook(self, frame, event, arg):  # noqa: ARG002 (sys.setprofile's signature)
        if event != "call":
            return
        code = frame.f_code
        if code.co_name == LOSS[1] and code.co_filename.endswith(LOSS[0]):
            self.report()
            sys.stdout.flush()
            os._exit(0)  # the loss is reached: the rest of the run cannot change the walk
        file = self._repo_file(code)
        if file is None:
            return
        if not self.started:
            self.started = file == FLOW[0] and code.co_name == FLOW[1]
            if not self.started:
                return
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        loc = frame.f_locals
        if not any(n in loc and self._carries(n, loc[n]) for n in names):
            return
        place = f"{file}:{code.co_qualname}"
        self.places[place] = self.places.get(place, 0) + 1
        caller = frame.f_back
        while caller is not None and self._repo_file(caller.f_code) is None:
            caller = caller.f_back
        if caller is not None:
            cf = self._repo_file(caller.f_code)
            lo, hi = self._layer(cf), self._layer(file)
            if lo is not None and hi is not None and hi < lo:
                self.climbs.add((f"{cf}:{caller.f_code.co_qualname}", place))


    def report(self) -> None:
        files = sorted({p.split(":")[0] for p in self.places})
        print(f"config walk from the src-iterate flow to the DPO loss: {len(self.places)} places in {len(files)} files, "
              f"{len(self.climbs)} climbs back up a layer, {sum(self.places.values())} visits")
        for p in sorted(self.places):
            print(f"  {self.places[p]:4d}  {p}")
        for a, b in sorted(self.climbs):
            print(f"  climb  {a} -> {b}")
        if self.out:
            Path(self.out).write_text(json.dumps({"places": self.places, "files": files,
                                                  "climbs": sorted(self.climbs)}, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/smoke.yaml")
    ap.add_argument("--json", help="also write the places and climbs here")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    os.environ.setdefault("SRC_STATE_DIR", tempfile.mkdtemp(prefix="config-walk-"))
    sys.path.insert(0, str(ROOT))
    from cli.main import main as src  # the command a user runs, imported after the state folder is set

    walk = Walk(args.json)
    threading.setprofile(walk.hook)
    sys.setprofile(walk.hook)
    try:
        src(["run", "--config", args.config, *args.overrides])
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    print("config-walk: the run ended without reaching TRL's DPO loss (is dpo.max_steps 0?)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
