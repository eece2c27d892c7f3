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


def check_services(tracking_uri: str | None = None, prefect_api: str | None = None,
                   timeout: float = 3.0) -> None:
    """Raise `ServiceUnavailable` naming the URI and how to start it, for the first server
    (MLflow, then Prefect) that is configured over HTTP and does not answer its health check."""
    servers = [
        ("MLflow tracking server", tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""),
         "`mlflow server --host 127.0.0.1 --port 5000`", "unset MLFLOW_TRACKING_URI to track in "
         "the local SQLite store"),
        ("Prefect API", prefect_api if prefect_api is not None else os.environ.get("PREFECT_API_URL", ""),
         "`prefect server start --host 127.0.0.1`", "unset PREFECT_API_URL to run with a "
         "temporary in-process server"),
    ]
    for name, uri, start, local in servers:
        if not uri.startswith(("http://", "https://")):
            continue
        why = _reachable(uri.rstrip("/") + "/health", timeout)
        if why is not None:
            raise ServiceUnavailable(f"{name} {uri} is not reachable ({why}): start it with "
                                     f"`src up` (or {start}), or {local}")


def lost_service(e: BaseException) -> str | None:
    """The one-line explanation when a run failed because a server stopped answering mid-run
    (after the clients' own retries), else None. What finished is in the store: a re-run of
    the same command reuses it and logs the whole run."""
    import requests

    from tasks.store import state_dir

    text = str(e)
    if isinstance(e, requests.exceptions.ConnectionError) or (
            type(e).__name__ == "MlflowException" and "API request to" in text):
        where = os.environ.get("MLFLOW_TRACKING_URI") or "the tracking server"
        return (f"lost the connection to {where} mid-run ({text.splitlines()[0][:160]}); the stages "
                f"that finished are kept in {state_dir()}: run the same command again once it is back")
    return None
