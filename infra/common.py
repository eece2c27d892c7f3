"""What every stage task shares: the Prefect task factory with the store's key as cache key,
model loading from references, progress on long stages (a bar on a terminal, log lines in
Prefect logs and CI).

A stage retries (its `retries`) only transient failures; a ValueError (bad rows, a bad config
value) fails at once, and Prefect logs a DataError / ConfigError without its traceback.

A task takes and returns small JSON values: the stage key, the config as a dict, and
references `{"path", "digest", ...}` to earlier outputs; never models or datasets.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable

from prefect import get_run_logger, task

from data.config import ConfigError, SRCConfig
from data.validate import DataError
from models.teacher import TeacherUnavailable
from models.policy import build_policy

# A user's mistake (bad rows, a bad config value): its message names the problem, the CLI
# prints it as `error: ...` lines, and a traceback from Prefect would only bury it.
USER_ERRORS: tuple[type[Exception], ...] = (DataError, ConfigError, TeacherUnavailable)


def _key_from_params(context: Any, parameters: dict[str, Any]) -> str:
    # The flow computes the store key (stage, version, config without runtime knobs, input
    # digests, seed) and passes it in: Prefect's cache and the store agree by construction.
    return parameters["key"]


def is_deterministic(exc: BaseException | None) -> bool:
    """A ValueError (DataError, ConfigError, any bad value) fails the same way on every try;
    anything else (OSError, RuntimeError: a full disk, CUDA out of memory) may not."""
    return isinstance(exc, ValueError)


def _failure_of(state: Any) -> BaseException | None:
    """The exception a Failed state carries (Prefect wraps a raised one as `data`)."""
    data = getattr(state, "data", None)
    if not isinstance(data, BaseException):
        data = getattr(data, "result", None)  # a persisted ResultRecord holds it as `.result`
    return data if isinstance(data, BaseException) else None


def _retry_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry only what may succeed the next time."""
    return not is_deterministic(_failure_of(state))


class _NoTracebackForUserErrors(logging.Filter):
    """Drop the traceback from Prefect's "Task run failed with exception" and "Encountered
    exception during execution" records when the exception is a USER_ERRORS one: the record
    itself (one line, the error's repr) stays, in the terminal and in the Prefect UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if isinstance(exc, USER_ERRORS):
            record.exc_info, record.exc_text = None, None
        return True


def _install_log_filter() -> None:
    """On the loggers of Prefect's task and flow engines (a filter on a logger survives
    Prefect's own logging setup, which replaces handlers only)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForUserErrors) for f in logger.filters):
            logger.addFilter(_NoTracebackForUserErrors())


_install_log_filter()


def stage_task(name: str, retries: int = 0) -> Callable:
    """A Prefect task cached across runs under the store key passed as `key`; `retries`
    applies to transient failures only (`is_deterministic`)."""
    return task(
        name=name,
        cache_key_fn=_key_from_params,
        persist_result=True,
        retries=retries,
        retry_delay_seconds=[5, 20, 60][:max(retries, 1)] if retries else 0,
        retry_condition_fn=_retry_transient,
    )


def log() -> Callable[[str], None]:
    """Prefect's run logger inside a run, print outside (stage functions stay Prefect-free)."""
    try:
        logger = get_run_logger()
        return logger.info
    except Exception:  # noqa: BLE001 - outside a flow/task run context
        return lambda msg: print(msg, flush=True)


def progress_mode(stream: IO[str] | None = None) -> str:
    """'bar' on a terminal, 'log' elsewhere (Prefect logs, CI, a pipe); `SRC_PROGRESS=bar|log`
    overrides. A bar in a log file is carriage-return spam, so anything not a TTY gets lines."""
    forced = os.environ.get("SRC_PROGRESS", "").strip().lower()
    if forced in ("bar", "log"):
        return forced
    if forced not in ("", "auto"):
        raise ValueError(f"SRC_PROGRESS={forced!r}: use bar, log or auto")
    stream = stream or sys.stderr
    return "bar" if not os.environ.get("CI") and getattr(stream, "isatty", lambda: False)() else "log"


def _numbers(extra: tuple) -> str:
    if extra and isinstance(extra[-1], dict) and extra[-1]:
        return " ".join(f"{k}={v:.4g}" for k, v in extra[-1].items() if isinstance(v, (int, float)))
    return ""


def progress_logger(stage: str, every_s: float | None = None, mode: str | None = None,
                    stream: IO[str] | None = None) -> Callable[..., None]:
    """A `progress(done, total, ...)` callback for a long stage, with rate and ETA.

    mode 'bar': a tqdm bar on `stream` (stderr), plus one log line when the stage ends;
    mode 'log': a log line (Prefect's run logger inside a run) at most every `every_s`
    seconds (`SRC_PROGRESS_EVERY`, default 10) and at the end. A trailing dict argument
    (training logs: loss, ...) is shown too.
    """
    say = log()
    mode = mode or progress_mode(stream)
    every = every_s if every_s is not None else float(os.environ.get("SRC_PROGRESS_EVERY", "10"))
    start = time.time()
    last = [0.0]
    bar: list[Any] = []

    def line(done: int, total: int, extra: tuple) -> str:
        elapsed = max(time.time() - start, 1e-9)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("nan")
        tail = _numbers(extra)
        return (f"[{stage}] {done}/{total} ({rate:.2f}/s, elapsed {elapsed:.0f}s, eta {eta:.0f}s)"
                + (f" {tail}" if tail else ""))

    def progress(done: int, total: int, *extra: Any) -> None:
        if mode == "bar":
            if not bar:
                from tqdm.auto import tqdm

                bar.append(tqdm(total=total, desc=stage, file=stream or sys.stderr,
                                dynamic_ncols=True, leave=False))
            b = bar[0]
            b.total = total
            b.update(max(done - b.n, 0))
            tail = _numbers(extra)
            if tail:
                b.set_postfix_str(tail, refresh=False)
            if done >= total:
                b.close()
                say(line(done, total, extra))
            return
        now = time.time()
        if now - last[0] < every and done < total:
            return
        last[0] = now
        say(line(done, total, extra))

    return progress


def adapter_paths(chain: list[dict]) -> list[str]:
    """Adapter folders of a policy chain (each ref's output holds `adapter/`)."""
    # a skipped DPO (no pairs kept) leaves no adapter: the policy did not change
    return [str(Path(r["path"]) / "adapter") for r in chain
            if (Path(r["path"]) / "adapter").is_dir()]


def load_policy(cfg: SRCConfig, base: dict, chain: list[dict]):
    """pi_t = base + merged chain of adapters, loaded fresh from files."""
    return build_policy(base["path"], adapter_paths(chain), dtype=cfg.model.dtype,
                        device=cfg.model.device, trust_remote_code=cfg.model.trust_remote_code)
