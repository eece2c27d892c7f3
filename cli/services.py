"""`src up` / `src down`: the local stack for deployed runs, all bound to 127.0.0.1.

    src up [--prefect-port 4200] [--mlflow-port 5000]   # then open the two UIs it prints
    prefect deployment run src-iterate/local -p config_path=configs/smoke.yaml
    src down

`src up` starts, as background processes with pid files and logs in `<state>/services/`:
1. a Prefect server (`prefect server start`, SQLite in `<state>/prefect`, ~250 MB);
2. an MLflow tracking server with the light flags (no job runner, one worker, ~500 MB) on the
   same `<state>/mlflow.db` and `<state>/mlartifacts` that `src run` writes without a server,
   so the UI shows both;
3. the work pool `src-local` (type process) and the deployments of `prefect.yaml`;
4. a worker of that pool running one flow run at a time (2 cores: a second one would only
   thrash), with PREFECT_API_URL and MLFLOW_TRACKING_URI pointing at the two servers, so
   deployed runs show up in both UIs.
It waits for each to answer its health check. `<state>` is $SRC_STATE_DIR or `.src/`;
PREFECT_HOME stays inside it. `src down` stops the process groups named by the pid files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cli.procs import alive, group_rss_mb, http, http_ok, port_busy, stop_group, tail
from infra.environment import OFFLINE, QUIET, prefect_defaults
from infra.store import PROJECT_DIR, state_dir

POOL = "src-local"
WORKER = f"{POOL}-worker"
DEPLOYMENTS = ("src-iterate/local", "src-iterate/retrain")
ORDER = ("prefect", "mlflow", "worker")  # start order; stopped in reverse


class ServiceError(RuntimeError):
    """A service did not start or stop; the message names the URL/port and the fix."""


@dataclass(frozen=True)
class Stack:
    """Where the services of one state directory listen."""

    state: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000

    @property
    def dir(self) -> Path:
        return self.state / "services"

    @property
    def prefect_ui(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_ui}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """The environment of every service and of the flow runs the worker starts."""
        quiet = {**QUIET, **OFFLINE}  # infra/environment.py; the user's own values win
        return {**os.environ, **{k: os.environ.get(k, v) for k, v in quiet.items()},
                **prefect_defaults(self.state),  # this stack's state dir, whatever the shell has
                "PREFECT_API_URL": self.prefect_api,
                "MLFLOW_TRACKING_URI": self.mlflow_uri,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "SRC_STATE_DIR": str(self.state),
                "SRC_PROJECT_DIR": str(PROJECT_DIR)}  # the pull step's working directory

    def exports(self) -> str:
        return "\n".join(f"export {k}={self.env()[k]}" for k in
                         ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME", "SRC_STATE_DIR"))


def _exe(name: str) -> str:
    """The console script next to this interpreter (the project's venv), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"`{name}` not found next to {sys.executable} or on PATH: "
                           "run `make setup` (pip install -e .)")
    return found


def commands(stack: Stack, worker_limit: int = 1) -> dict[str, list[str]]:
    """The command line of each long-running service."""
    s = stack.state
    return {
        "prefect": [_exe("prefect"), "server", "start", "--host", "127.0.0.1",
                    "--port", str(stack.prefect_port), "--analytics-off"],
        "mlflow": [_exe("mlflow"), "server", "--backend-store-uri", f"sqlite:///{s / 'mlflow.db'}",
                   "--artifacts-destination", str(s / "mlartifacts"), "--host", "127.0.0.1",
                   "--port", str(stack.mlflow_port), "--workers", "1"],
        "worker": [_exe("prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                   "--limit", str(worker_limit), "--name", WORKER],
    }


# ---------------------------------------------------------------- processes and pid files

def _pidfile(stack: Stack, name: str) -> Path:
    return stack.dir / f"{name}.pid.json"


def read_pid(stack: Stack, name: str) -> dict | None:
    try:
        return json.loads(_pidfile(stack, name).read_text())
    except (OSError, ValueError):
        return None


def _open_log(stack: Stack, name: str, cmd: list[str]):
    fh = open(stack.dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to a child process
    fh.write(f"\n=== {time.strftime('%F %T')} {' '.join(cmd)}\n".encode())
    fh.flush()
    return fh


def _spawn(stack: Stack, name: str, cmd: list[str], env: dict[str, str]) -> dict:
    log = stack.dir / f"{name}.log"
    with _open_log(stack, name, cmd) as fh:
        # a session of its own: `src down` stops the service and its children as one group
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=PROJECT_DIR, start_new_session=True)
    info = {"pid": proc.pid, "marker": " ".join(cmd[1:3]), "log": str(log), "cmd": cmd,
            "started": time.time()}
    _pidfile(stack, name).write_text(json.dumps(info, indent=1))
    return info


def _wait(name: str, url: str, ready: Callable[[], bool], info: dict, timeout: float) -> float:
    """Poll `ready` until true; fail fast if the process exits. Returns the seconds it took."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ready():
            return time.time() - t0
        if not alive(info):
            raise ServiceError(f"{name} exited while starting ({url}); log {info['log']}: "
                               f"{tail(info['log'])}")
        time.sleep(0.5)
    raise ServiceError(f"{name} not ready at {url} after {timeout:.0f}s; see {info['log']} "
                       "(a busy machine: retry with a larger --timeout)")


def _api(stack: Stack, method: str, path: str, body: dict | None = None):
    """Prefect REST API call; JSON answer (None when empty)."""
    raw = http(f"{stack.prefect_api}{path}", method, body)
    return json.loads(raw) if raw else None


# ---------------------------------------------------------------- up / down

def _ready_checks(stack: Stack, since: float = 0.0) -> dict[str, tuple[str, Callable[[], bool]]]:
    workers = f"/work_pools/{POOL}/workers/filter"

    def worker_ready() -> bool:
        # a heartbeat after `since`: the pool's READY status may be a stopped worker's, still
        # within its heartbeat timeout
        try:
            rows = _api(stack, "POST", workers, {})
        except (OSError, ValueError):
            return False
        return any(w["name"] == WORKER and w.get("last_heartbeat_time")
                   and datetime.fromisoformat(w["last_heartbeat_time"]).timestamp() >= since
                   for w in rows)

    health = f"{stack.prefect_api}/health", f"{stack.mlflow_uri}/health"
    return {"prefect": (health[0], lambda: http_ok(health[0])),
            "mlflow": (health[1], lambda: http_ok(health[1])),
            "worker": (f"{stack.prefect_api}{workers}", worker_ready)}


def active_schedules(stack: Stack) -> dict[str, list[str]]:
    """deployment -> slugs of its active schedules (deployments not yet created: none)."""
    out = {}
    for name in DEPLOYMENTS:
        try:
            dep = _api(stack, "GET", f"/deployments/name/{name}")
        except (OSError, ValueError):  # not deployed yet (404) or no server
            continue
        out[name] = [s["slug"] for s in dep.get("schedules", []) if s.get("active") and s.get("slug")]
    return out


def restore_schedules(stack: Stack, active: dict[str, list[str]]) -> None:
    """Turn back on the schedules a re-deploy switched off: prefect.yaml says `active: false`
    and `prefect deploy` applies it again, which would silently stop a resumed retraining."""
    for name, slugs in active.items():
        dep = _api(stack, "GET", f"/deployments/name/{name}")
        for s in dep.get("schedules", []):
            if s.get("slug") in slugs and not s.get("active"):
                _api(stack, "PATCH", f"/deployments/{dep['id']}/schedules/{s['id']}",
                     {"active": True})


def _run_once(stack: Stack, name: str, cmd: list[str], timeout: float) -> None:
    log = stack.dir / f"{name}.log"
    with _open_log(stack, name, cmd) as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=stack.env(), cwd=PROJECT_DIR, timeout=timeout,
                                check=False).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0:
        raise ServiceError(f"`{' '.join(cmd[1:4])}` against {stack.prefect_api} failed ({rc}); "
                           f"see {log}: {tail(log)}")


def status(stack: Stack | None = None) -> dict[str, dict | None]:
    """name -> pid info of each running service (None if not running)."""
    stack = stack or saved_stack()
    return {n: (info if alive(info := read_pid(stack, n)) else None) for n in ORDER}


def saved_stack(state: Path | None = None) -> Stack:
    """The ports of the last `src up` in this state directory (defaults if none)."""
    state = state or state_dir()
    try:
        saved = json.loads((state / "services" / "stack.json").read_text())
        return Stack(state, saved["prefect_port"], saved["mlflow_port"])
    except (OSError, ValueError, KeyError):
        return Stack(state)


def up(prefect_port: int = 4200, mlflow_port: int = 5000, timeout: float = 180,
       worker_limit: int = 1, log: Callable[[str], None] = print) -> Stack:
    """Start server, MLflow, pool, deployments and worker; wait until each is ready.

    Raises:
        ServiceError: a port is taken, the stack is partly up, or a service did not come up.
    """
    running = status(saved_stack())
    if all(running.values()):
        stack = saved_stack()
        pids = ", ".join(f"{n} {i['pid']}" for n, i in running.items())
        log(f"already up ({pids}); `src down` first to change ports")
        return stack
    if any(running.values()):
        names = ", ".join(n for n, i in running.items() if i)
        raise ServiceError(f"partly up ({names} running, state {state_dir()}): run `src down`, "
                           "then `src up`")
    stack = Stack(state_dir(), prefect_port, mlflow_port)
    for port, flag in ((prefect_port, "--prefect-port"), (mlflow_port, "--mlflow-port")):
        if port_busy(port):
            raise ServiceError(f"port {port} on 127.0.0.1 is in use by another process: "
                               f"pass {flag} with a free port, or stop that process")
    stack.dir.mkdir(parents=True, exist_ok=True)
    (stack.state / "prefect").mkdir(exist_ok=True)
    (stack.dir / "stack.json").write_text(json.dumps(
        {"prefect_port": prefect_port, "mlflow_port": mlflow_port}))
    cmds, checks = commands(stack, worker_limit), _ready_checks(stack)
    try:
        started = {n: _spawn(stack, n, cmds[n], stack.env()) for n in ("prefect", "mlflow")}
        for n in ("prefect", "mlflow"):
            url, ready = checks[n]
            log(f"{n}: ready in {_wait(n, url, ready, started[n], timeout):.0f}s ({url})")
        _run_once(stack, "deploy", [_exe("prefect"), "work-pool", "create", POOL,
                                    "--type", "process", "--overwrite"], timeout)
        active = active_schedules(stack)
        _run_once(stack, "deploy", [_exe("prefect"), "--no-prompt", "deploy", "--all",
                                    "--prefect-file", str(PROJECT_DIR / "prefect.yaml")], timeout)
        restore_schedules(stack, active)
        kept = [f"{n} ({', '.join(v)})" for n, v in active.items() if v]
        log(f"deployed: {', '.join(DEPLOYMENTS)} (work pool {POOL})"
            + (f"; schedules kept on: {', '.join(kept)}" if kept else ""))
        started["worker"] = _spawn(stack, "worker", cmds["worker"], stack.env())
        url, ready = _ready_checks(stack, since=started["worker"]["started"])["worker"]
        log(f"worker: polling in {_wait('worker', url, ready, started['worker'], timeout):.0f}s")
    except BaseException:
        down(stack, log=lambda _msg: None)
        raise
    return stack


def down(stack: Stack | None = None, grace: float = 15.0,
         log: Callable[[str], None] = print) -> list[str]:
    """Stop the services of this state directory (SIGTERM, then SIGKILL after `grace` s)."""
    stack = stack or saved_stack()
    stopped = []
    for name in reversed(ORDER):
        info = read_pid(stack, name)
        if alive(info):
            stop_group(info["pid"], grace)
            stopped.append(name)
            log(f"{name}: stopped (pid {info['pid']})")
        _pidfile(stack, name).unlink(missing_ok=True)
    if not stopped:
        log(f"nothing running (state {stack.state})")
    return stopped


# ---------------------------------------------------------------- command line

def summary(stack: Stack) -> str:
    """What to open and what to export, printed by `src up`."""
    mem = {n: group_rss_mb(i["pid"]) for n, i in status(stack).items() if i}
    on = [f"{n}:{slug}" for n, slugs in active_schedules(stack).items() for slug in slugs]
    sched = ", ".join(on) + " on" if on else (
        "retrain schedule off: prefect deployment schedule resume src-iterate/retrain <id> "
        "(ids: prefect deployment schedule ls src-iterate/retrain)")
    return "\n".join([
        f"Prefect UI   {stack.prefect_ui}",
        f"MLflow UI    {stack.mlflow_uri}",
        f"deployments  {', '.join(DEPLOYMENTS)} (pool {POOL}, one run at a time)",
        f"schedules    {sched}",
        "memory       " + ", ".join(f"{n} {mb:.0f} MB" for n, mb in mem.items()),
        f"logs, pids   {stack.dir}",
        "",
        "to use them from this shell:",
        stack.exports(),
        "",
        "prefect deployment run src-iterate/local -p config_path=configs/smoke.yaml",
        "src down",
    ])


def cmd_up(args: argparse.Namespace) -> int:
    try:
        stack = up(args.prefect_port, args.mlflow_port, timeout=args.timeout)
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(stack))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    down()
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `up` and `down` to the `src` command line."""
    p = subparsers.add_parser("up", help="start Prefect + MLflow servers, deployments and a "
                                         "worker on 127.0.0.1 (background)")
    p.add_argument("--prefect-port", type=int, default=4200, help="Prefect server/UI port")
    p.add_argument("--mlflow-port", type=int, default=5000, help="MLflow server/UI port")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for each service")
    p.set_defaults(fn=cmd_up)
    p = subparsers.add_parser("down", help="stop what `src up` started")
    p.set_defaults(fn=cmd_down)
