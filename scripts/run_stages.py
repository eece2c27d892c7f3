"""`make stages`: the SRC recipe (flows/pipeline.py) with every stage a plain function call
through the store: no Prefect flow, no MLflow. The same steps, keys and outputs as `src run`;
the built-in world, or your own data (`data.world=files|hf`).

    python scripts/run_stages.py --config configs/builtin.yaml [--out DIR] [section.field=value ...]

Prints the base model's table and the per-iteration table (R-Scorer agreement with the exact
scorer, kept fraction, DPO loss, held-out metrics); stage outputs go to `--out` (a state folder:
`<out>/stages/<stage>/<key>/`), a temporary one by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.environment import apply_defaults  # noqa: E402

apply_defaults()  # this script's start: before transformers reads the offline settings

import torch  # noqa: E402

from data.config import load_config  # noqa: E402
from flows.pipeline import run_pipeline  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/builtin.yaml")
    ap.add_argument("--out", default="", help="the state folder of the run (default: a new temporary one)")
    ap.add_argument("overrides", nargs="*", help="section.field=value")
    args = ap.parse_args(argv)
    state = str(Path(args.out or tempfile.mkdtemp(prefix="src-stages-")).resolve())
    cfg = load_config(args.config, [*args.overrides, "tracking.backend=none"])
    if cfg.runtime.num_threads:
        torch.set_num_threads(cfg.runtime.num_threads)
    before = os.environ.get("SRC_STATE_DIR")
    os.environ["SRC_STATE_DIR"] = state  # the store's folder for this run only (main() is called by tests)
    try:
        result = run_pipeline(cfg, prefect=False)
    finally:
        if before is None:
            os.environ.pop("SRC_STATE_DIR", None)
        else:
            os.environ["SRC_STATE_DIR"] = before
    print("\nbase model (short answers):\n" + result["base_table"])
    print("\nper iteration (0 = rationale-tuned, before any DPO):\n" + result["table"])
    print(json.dumps({"stages": state, "timing": result["timing"]}, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
