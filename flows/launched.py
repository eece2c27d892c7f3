"""One process of a stage run under `accelerate launch -m flows.launched <spec.json>`
(infra/launch.py starts it): the stage's own build function on this process's GPU; rank 0
writes the output and the result file, the others write into scratch folders.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from infra.launch import RESULT
from tasks import dpo, sft


def main(spec_path: str) -> int:
    """One process of the launched stage."""
    spec = json.loads(Path(spec_path).read_text())
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cfg = spec["cfg"]
    cfg["runtime"] = {**cfg["runtime"], "launcher": "local"}
    if str(cfg["model"].get("device", "auto")).startswith(("cuda", "auto")):
        import torch

        if torch.cuda.is_available():
            cfg["model"]["device"] = f"cuda:{local}"
    out = Path(spec["out"])
    if rank:  # the same writes as rank 0, into a scratch folder (no races on the store)
        out = Path(tempfile.mkdtemp(prefix=f"src-rank{rank}-"))
        sys.stdout = open(os.devnull, "w")  # one process speaks
    os.environ.setdefault("SRC_PROGRESS", "log")

    refs = spec["refs"]
    if spec["stage"] == sft.STAGE:
        meta = sft.build_sft(cfg, refs["base"], refs["world"], out)
    elif spec["stage"] == dpo.STAGE:
        meta = dpo.build_dpo(cfg, refs["base"], refs["chain"], refs["pairs"], refs["world"], out)
    else:
        raise ValueError(f"infra.launch: stage {spec['stage']!r} is not launchable")
    if rank == 0:
        meta.setdefault("metrics", {})["processes"] = int(os.environ.get("WORLD_SIZE", "1"))
        (out / RESULT).write_text(json.dumps(meta, default=str))
    else:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
