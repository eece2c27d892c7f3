"""Before any compute: are the servers the run will talk to there? One line if not.

A run with `MLFLOW_TRACKING_URI` (or `tracking.tracking_uri`) or `PREFECT_API_URL` pointing at
a server that does not answer would otherwise hang in client retries and fail minutes later
with a long traceback. Local stores (SQLite, a folder) and the ephemeral Prefect server need
nothing running and are not probed.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request


class ServiceUnavailable(ValueError):
    """A configured server does not answer (a ValueError: the CLI prints one line, exit 2)."""


def _reachable(url: str, timeout: float) -> str | None:
    """None when `url` answers (any HTTP status), else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


SERVERS = {  # kind -> (name, environment variable, how to start it, how to do without it)
    "mlflow": ("MLflow tracking server", "MLFLOW_TRACKING_URI", "`mlflow server --host 127.0.0.1 --port 5000`",
               "unset MLFLOW_TRACKING_URI to track in the local SQLite store"),
    "prefect": ("Prefect API", "PREFECT_API_URL", "`prefect server start --host 127.0.0.1`",
                "unset PREFECT_API_URL to run with a temporary in-process server"),
}


def check_server(kind: str, uri: str, timeout: float = 3.0) -> None:
    """Raise `ServiceUnavailable` naming `uri` and how to start it when `uri` is an HTTP server
    (kind 'mlflow' or 'prefect') that does not answer its health check; local stores pass."""
    name, _, start, local = SERVERS[kind]
    if not uri.startswith(("http://", "https://")):
        return
    why = _reachable(uri.rstrip("/") + "/health", timeout)
    if why is not None:
        raise ServiceUnavailable(f"{name} {uri} is not reachable ({why}): start it with "
                                 f"`src up` (or {start}), or {local}")


def check_teacher(cfg, timeout: float = 5.0) -> None:
    """Raise `ServiceUnavailable` when the run asks the teacher and teacher.endpoint does not
    answer (`GET <endpoint>/models`, any HTTP status counts as an answer)."""
    uses = cfg.teacher_asks()
    if not uses or not cfg.teacher.endpoint:
        return
    url = cfg.teacher.endpoint.rstrip("/")
    why = _reachable(url + "/models", timeout)
    if why is not None:
        raise ServiceUnavailable(f"teacher.endpoint {url} is not reachable ({why}); this run asks it for "
                                 f"{', '.join(uses)}: start the server (e.g. `vllm serve {cfg.teacher.model}`; "
                                 "docs/own-data.md), or set teacher.endpoint")


def check_services(tracking_uri: str | None = None, prefect_api: str | None = None,
                   timeout: float = 3.0, mlflow: bool = True) -> None:
    """Raise `ServiceUnavailable` naming the URI and how to start it, for the first server
    (MLflow unless `mlflow` is off, then Prefect) that is configured over HTTP and does not
    answer its health check."""
    if mlflow:
        check_server("mlflow", tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""), timeout)
    check_server("prefect", prefect_api if prefect_api is not None else os.environ.get("PREFECT_API_URL", ""),
                 timeout)


class DeviceUnavailable(ValueError):
    """model.device names a device this machine does not have (the CLI prints one line, exit 2)."""


def check_device(device: str) -> None:
    """Raise `DeviceUnavailable` when `model.device` asks for a CUDA (or MPS) device that is not
    here: without this, the first model load fails deep in torch with "Torch not compiled with
    CUDA enabled", after Prefect and MLflow started. Configs themselves stay loadable anywhere
    (a 7B preset with model.device=cuda is still read and tested on a CPU machine)."""
    d = (device or "auto").strip()
    if d in ("auto", "cpu"):
        return
    import torch

    try:
        kind = torch.device(d)
    except (RuntimeError, ValueError):
        raise DeviceUnavailable(f"model.device={device!r} is not a torch device; use auto, cpu, "
                                "cuda or cuda:<index>") from None
    fix = "; use model.device=auto or cpu"
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            why = (f"torch {torch.__version__} is a CPU-only build" if not torch.version.cuda else
                   f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU or driver")
            raise DeviceUnavailable(f"model.device={device!r} but no CUDA device is available here "
                                    f"({why}){fix}")
        n = torch.cuda.device_count()
        if kind.index is not None and kind.index >= n:
            raise DeviceUnavailable(f"model.device={device!r} but this machine has {n} CUDA "
                                    f"device(s) (cuda:0..cuda:{n - 1}){fix}")
    elif kind.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"model.device={device!r} but no Apple MPS device is available here{fix}")


def lost_service(e: BaseException) -> str | None:
    """The one-line explanation when a run failed because a server stopped answering mid-run
    (after the clients' own retries), else None. What finished is in the store: a re-run of
    the same command reuses it and logs the whole run."""
    import requests

    from infra.store import state_dir

    text = str(e)
    if isinstance(e, requests.exceptions.ConnectionError) or (
            type(e).__name__ == "MlflowException" and "API request to" in text):
        where = os.environ.get("MLFLOW_TRACKING_URI") or "the tracking server"
        return (f"lost the connection to {where} mid-run ({text.splitlines()[0][:160]}); the stages "
                f"that finished are kept in {state_dir()}: run the same command again once it is back")
    return None
