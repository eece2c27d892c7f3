"""Multi-process training: rationale SFT and DPO under `accelerate launch` (DDP, FSDP, DeepSpeed).

    src run --config configs/llava-1.5-7b.yaml runtime.launcher=accelerate \
        runtime.accelerate_config=configs/accelerate/ddp.yaml runtime.num_processes=8

With `runtime.launcher=accelerate` the SFT and DPO tasks do not train in their own process:
`launch` writes the stage's inputs to a spec file and runs

    accelerate launch --config_file <runtime.accelerate_config> [--num_processes N] \
        -m flows.launched <spec.json>

Every process (flows/launched.py) runs the stage's own build function (tasks/sft.py, tasks/dpo.py) on its GPU
(`cuda:<LOCAL_RANK>`); the Trainer shards the batches, and `models.policy.per_device_batch`
keeps the global batch at the config's `batch_size`, so the GPU count does not change what is
trained. Process 0 writes the stage output into the store's temporary folder; the others write
into scratch folders that are removed. In-stage checkpoints are off in this mode (a killed
distributed training restarts the stage). Rank 0's log lines come back to the flow's log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from infra.store import PROJECT_DIR

RESULT = ".launch-result.json"


def launch(stage: str, cfg: dict, refs: dict, out: Path, say=print) -> dict:
    """Run `stage`'s build function under `accelerate launch`; returns its meta dict.

    Raises:
        RuntimeError: the launch failed; the message holds the last lines of its output.
    """
    rt = cfg["runtime"]
    exe = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    with tempfile.TemporaryDirectory(prefix=f"src-launch-{stage}-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"stage": stage, "cfg": cfg, "refs": refs, "out": str(out)}))
        cmd = [exe, "launch", "--config_file", rt["accelerate_config"]]
        if rt.get("num_processes"):
            cmd += ["--num_processes", str(rt["num_processes"])]
        cmd += ["-m", "flows.launched", str(spec)]
        say(f"[{stage}] {' '.join(cmd)}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_DIR), os.environ.get("PYTHONPATH", "")])}
        tail: list[str] = []
        with subprocess.Popen(cmd, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as proc:
            for line in proc.stdout:
                tail = (tail + [line.rstrip()])[-40:]
                if line.startswith("["):  # the stage's own log lines (rank 0 only)
                    say(line.rstrip())
        if proc.returncode != 0:
            raise RuntimeError(f"{stage}: accelerate launch exited {proc.returncode}:\n" + "\n".join(tail))
    result = out / RESULT
    meta = json.loads(result.read_text())
    result.unlink()
    return meta
