"""Content-addressed stage outputs: atomic writes, manifest last, digests verified on read.

A stage's output lives in `<state>/stages/<stage>/<key>/`. The key hashes the stage name, a
stage version, its config section without runtime knobs, its input digests and the seed (a
stage output is a pure function of those). The folder is written under a temporary name, the
manifest (file digests, counts) is written last, then the folder is renamed into place: a
folder with a manifest whose digests match is "done", anything else is "not done" and is
recomputed. The same key is the Prefect cache key, so the cache and the store never disagree.

The state directory is `$SRC_STATE_DIR`, else `.src/` in the project folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from data.config import digest
from data.schema import METRICS_FILE, REJECTED_FILE
from data.records import read_records, write_records

PROJECT_DIR = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
# Reports (timings, training curves) are verified like any file but left out of the content
# digest: two runs that produce the same data have the same digest, so downstream keys agree.
REPORTS = (METRICS_FILE, REJECTED_FILE)


def state_path() -> Path:
    """`$SRC_STATE_DIR` or `<project>/.src`, absolute; not created (see `state_dir`)."""
    return Path(os.environ.get("SRC_STATE_DIR") or PROJECT_DIR / ".src").resolve()


def state_dir() -> Path:
    """`$SRC_STATE_DIR` or `<project>/.src`, absolute, created on demand."""
    p = state_path()
    p.mkdir(parents=True, exist_ok=True)
    return p


def state_dir_problem() -> str | None:
    """None when the state directory exists (created here if needed) and takes files; else
    one line naming SRC_STATE_DIR and the path, for the CLI to print before Prefect, which
    keeps its home and results in that folder, starts."""
    p = state_path()
    raw = os.environ.get("SRC_STATE_DIR")
    name = f"SRC_STATE_DIR={raw}" if raw else f"the state dir {p} (SRC_STATE_DIR is not set)"
    if raw and Path(raw) != p:  # relative, or with `..` / a link in it: say where it lands
        name += f" ({p})"
    fix = "; set SRC_STATE_DIR to a folder you can write to"
    if p.exists() and not p.is_dir():
        return f"{name} is a file, not a folder{fix}"
    try:
        p.mkdir(parents=True, exist_ok=True)
    except NotADirectoryError:
        blocker = next((a for a in p.parents if a.exists() and not a.is_dir()), p.parent)
        return f"{name} cannot be created: {blocker} is a file{fix}"
    except OSError as e:
        return f"{name} cannot be created: {e.strerror or e}{fix}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{name} is not writable: {e.strerror or e}{fix}"
    return None


def stage_key(stage: str, version: int, config: Any, inputs: dict[str, str], seed: int) -> str:
    """The content address of a stage's output (a short sha256)."""
    blob = {"stage": stage, "version": version, "config": config, "inputs": inputs, "seed": seed}
    return digest(blob)[:20]


def digests(refs: dict[str, Any]) -> dict[str, Any]:
    """A stage's inputs as its key hashes them: a reference by its digest, a list of them by
    theirs, a plain value (an iteration number) as it is; None is left out."""
    def one(v: Any) -> Any:
        if isinstance(v, dict) and "digest" in v:
            return v["digest"]
        if isinstance(v, list):
            return [one(x) for x in v]
        return v

    return {k: one(v) for k, v in refs.items() if v is not None}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; read once per process while its size and mtime stay the same
    (a run checks the same model folders at every stage call)."""
    st = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 (the cache's key)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_path(stage: str, key: str) -> Path:
    return state_dir() / "stages" / stage / key


def read_manifest(path: Path) -> dict | None:
    """The manifest if every listed file is present with its digest, else None."""
    mf = Path(path) / MANIFEST
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError):
        return None
    for rel, want in manifest.get("files", {}).items():
        f = Path(path) / rel
        if not f.is_file() or file_digest(f) != want:
            return None
    return manifest


def ref_of(path: Path, manifest: dict) -> dict:
    """The small JSON reference a task returns: where the output is and what it holds."""
    return {"path": str(path), "digest": manifest["digest"], "stage": manifest["stage"],
            "key": manifest["key"], "meta": manifest.get("meta", {}),
            "created": manifest.get("created"), "build_seconds": manifest.get("build_seconds")}


def lookup(stage: str, key: str) -> dict | None:
    """The reference of a finished, verified output, or None."""
    path = stage_path(stage, key)
    manifest = read_manifest(path)
    return ref_of(path, manifest) if manifest else None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing), held for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock(stage: str, key: str) -> contextlib.AbstractContextManager[None]:
    """One writer per output: a second run with the same key waits, then reuses."""
    return file_lock(state_dir() / "locks" / f"{stage}-{key}.lock")


def produce(stage: str, key: str, build: Callable[[Path], dict | None]) -> dict:
    """Return the verified output for `key`, building it with `build(tmp_dir)` if needed.

    `build` writes its files into the temporary folder it is given and may return a small
    `meta` dict (counts, metrics) that goes into the manifest.
    """
    found = lookup(stage, key)
    if found:
        return found
    with _lock(stage, key):
        found = lookup(stage, key)  # another run finished it while we waited
        if found:
            return found
        final = stage_path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".tmp-{key}-*"):  # left by a killed writer (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            t0 = time.perf_counter()
            meta = build(tmp) or {}
            seconds = time.perf_counter() - t0
            files = {
                str(p.relative_to(tmp)): file_digest(p)
                for p in sorted(tmp.rglob("*")) if p.is_file()
            }
            content = {f: d for f, d in files.items() if Path(f).name not in REPORTS}
            manifest = {"stage": stage, "key": key, "files": files, "meta": meta,
                        "digest": digest(content), "created": time.time(),
                        "build_seconds": round(seconds, 3)}
            # manifest last: its presence with matching digests means "done"
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
            if final.exists():  # a half-written or corrupted earlier attempt
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return ref_of(final, manifest)


def sharded(stage: str, key: str, items: list, shard_size: int,
            run: Callable[[list, Callable[..., None] | None], list[dict]],
            progress: Callable[..., None] | None = None) -> list[dict]:
    """`run(items)` in shards of `shard_size`, each shard's records checkpointed to
    `<state>/partial/<stage>/<key>/` as it finishes: after a kill, finished shards are read back
    and only the rest is computed. Correct only for a `run` whose records for an item do not
    depend on the other items of its batch (per-item random streams); the caller removes the
    folder (`drop_partial`) once the stage output is in place.
    """
    folder = partial_dir(stage, key)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[dict] = []
    for lo in range(0, len(items), shard_size):
        hi = min(lo + shard_size, len(items))
        f = shard_file(stage, key, lo, hi)  # the size is in the name: it may change
        if f.is_file():
            out += read_records(f)
        else:
            def part(done: int, total: int, *extra: Any, _lo: int = lo) -> None:
                if progress:
                    progress(_lo + done, len(items), *extra)
            rows = run(items[lo:hi], part)
            write_records(rows, f)  # through a temporary name
            out += rows
        if progress:
            progress(hi, len(items))
    return out


def shard_file(stage: str, key: str, lo: int, hi: int) -> Path:
    """The checkpoint of items [lo, hi) of a sharded stage (`sharded`, or a Ray worker's shard)."""
    return partial_dir(stage, key) / f"shard-{lo:07d}-{hi:07d}.parquet"


def partial_dir(stage: str, key: str) -> Path:
    """Where a stage keeps its in-stage checkpoints (search shards, Trainer checkpoints) until
    its output is in place: outside the temporary output folder, so a kill does not lose them."""
    return state_dir() / "partial" / stage / key


def drop_partial(stage: str, key: str) -> None:
    shutil.rmtree(partial_dir(stage, key), ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary name (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)
