"""The `src-iterate` flow: the SRC pipeline (flows/pipeline.py), or with `retrain=True`
retraining from the registered champion (flows/retrain.py).

    src run --config configs/builtin.yaml [section.field=value ...]
    prefect deployment run src-iterate/local -p config_path=configs/smoke.yaml
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from data.config import dump_config, load_config
from flows.pipeline import run_pipeline
from flows.retrain import retrain_pipeline


@flow(name="src-iterate", persist_result=False)
def src_iterate(config_path: str = "configs/builtin.yaml", overrides: list[str] | None = None,
                iterations: int | None = None, start_from: str | None = None,
                retrain: bool = False, registered_model: str | None = None,
                min_improvement: float = 0.0) -> dict:
    """Run SRC: config file + `section.field=value` overrides; `start_from=<run id>[:<t>]`.
    `retrain=True`: continue from the registered champion policy instead (flows/retrain.py)."""
    over = list(overrides or [])
    if iterations is not None:
        over.append(f"iterate.iterations={iterations}")
    cfg = load_config(config_path, over)
    get_run_logger().info("resolved config:\n" + dump_config(cfg))
    if cfg.runtime.num_threads:  # deployed runs do not go through `src run`, which sets it too
        import torch

        torch.set_num_threads(cfg.runtime.num_threads)
    if retrain:
        if start_from:
            raise ValueError("retrain=True starts from the registered champion: drop start_from")
        return retrain_pipeline(cfg, registered_model=registered_model, config_path=config_path,
                                min_improvement=min_improvement)
    return run_pipeline(cfg, start_from=start_from, config_path=config_path)


__all__ = ["src_iterate"]
