"""The tracker: what the flows write (one parent run per pipeline run, a child run per
iteration; the layout is infra/layout.py) and read back (resume, the registry's champion).

The flows hold a `Tracker` (`make_tracker`, by `tracking.backend`) and nothing else of MLflow.
`MLflowTracker` makes every call through `MlflowClient` with explicit run ids (never the
thread-local "active run"), because Prefect may run a task in another thread. `NullTracker`
(`tracking.backend=none`) has the same methods, records nothing, and so has no run to resume
from and no registry.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Protocol

from data.config import ConfigError, TrackingConfig
from infra.store import file_lock, state_dir
import math
import shutil
import tempfile

# Without a kind, MLflow 3's UI opens an experiment on its GenAI overview (traces, all empty
# here); this kind opens it on the runs, where the iterations are.
EXPERIMENT_KIND, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else a SQLite store inside the state directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (state_dir() / "mlartifacts").as_uri()


# why resume (start_from) and retraining refuse tracking.backend=none
NO_RUNS = "tracking.backend=none records no runs: use tracking.backend=mlflow to resume or retrain"


class Tracker(Protocol):
    """What the flows write (runs, metrics, artifacts) and read back (resume: a run's
    iterations and artifacts; retraining: the champion in a model registry)."""

    uri: str  # where it records, for messages ("" = nowhere)
    records: bool  # False: nothing to read back (no resume, no registry)
    experiment_id: str | None
    def start_run(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str: ...
    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_params(self, run_id: str, params: dict[str, Any]) -> None: ...
    def set_tags(self, run_id: str, tags: dict[str, str]) -> None: ...
    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_table(self, run_id: str, rows: list[dict], artifact_file: str) -> None: ...
    def log_dict(self, run_id: str, obj: dict, artifact_file: str) -> None: ...
    def end_run(self, run_id: str, status: str = "FINISHED") -> None: ...
    # read back: LookupError for a run that is not there
    def run_tags(self, run_id: str) -> dict[str, str]: ...
    def child_runs(self, run_id: str, tags: dict[str, str]) -> dict[str, dict[str, str]]: ...
    def has_artifacts(self, run_id: str, path: str) -> bool: ...
    def download_artifacts(self, run_id: str, path: str, dest: Path) -> None: ...
    # the model registry: a version is {"version", "source", "run_id", "tags"}
    def version_by_alias(self, name: str, alias: str) -> dict | None: ...
    def register_version(self, name: str, alias: str, source: str, run_id: str, tags: dict[str, str],
                         description: str, model_description: str) -> str: ...


class NullTracker:
    """Same signatures as MLflowTracker; records nothing (`tracking.backend=none`), so it has
    no run to resume from and no registry: reading back raises LookupError saying so."""

    uri, experiment_id, records = "", None, False

    def start_run(self, name, tags, parent_id=None):
        return "null"

    def log_metrics(self, run_id, metrics, step=None):
        pass

    def log_params(self, run_id, params):
        pass

    def set_tags(self, run_id, tags):
        pass

    def log_artifact(self, run_id, path, artifact_path=None):
        pass

    def log_table(self, run_id, rows, artifact_file):
        pass

    def log_dict(self, run_id, obj, artifact_file):
        pass

    def end_run(self, run_id, status="FINISHED"):
        pass

    def run_tags(self, run_id):
        raise LookupError(f"no run {run_id!r}: {NO_RUNS}")

    def child_runs(self, run_id, tags):
        raise LookupError(f"no run {run_id!r}: {NO_RUNS}")

    def has_artifacts(self, run_id, path):
        return False

    def download_artifacts(self, run_id, path, dest):
        raise LookupError(f"no artifact {path!r} of run {run_id!r}: {NO_RUNS}")

    def version_by_alias(self, name, alias):
        return None

    def register_version(self, name, alias, source, run_id, tags, description, model_description):
        raise LookupError(f"cannot register {name!r}: {NO_RUNS}")


def make_tracker(tracking: TrackingConfig) -> Tracker:
    """The tracker of the config's `tracking` section: MLflow (default) or none (`backend`)."""
    if tracking.backend == "none":
        return NullTracker()
    return MLflowTracker(tracking.experiment, tracking.tracking_uri)


def require_records(tracker: Tracker, what: str) -> None:
    """Raise a ConfigError before any work when `what` (resume, retraining) must read runs back
    and `tracker` records none."""
    if not tracker.records:
        raise ConfigError(f"{what}: {NO_RUNS}")


@contextlib.contextmanager
def _sqlite_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock next to a SQLite tracking store, nothing for a server URI.

    MLflow creates (migrates) a new SQLite store on first use; two runs starting at once
    would both migrate it and one fails ("table already exists"), or both create the
    experiment. The first to take the lock does it, the other then finds it done.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    with file_lock(Path(uri.removeprefix("sqlite:///") + ".lock")):
        yield


class MLflowTracker:
    """MLflow with explicit run ids; creates the experiment with an explicit artifact root and
    the kind tag (`EXPERIMENT_KIND`) that makes MLflow 3's UI open it on its training runs."""

    records = True

    def __init__(self, experiment: str, tracking_uri: str | None = None):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri or default_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        self._mlflow = mlflow
        with _sqlite_lock(self.uri):  # concurrent runs: one creates the tables and the experiment
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                location = default_artifact_root() if self.uri.startswith("sqlite") else None
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location, tags={EXPERIMENT_KIND: TRAINING_KIND})
            else:
                self.experiment_id = exp.experiment_id
                if EXPERIMENT_KIND not in exp.tags:  # made before the tag: the UI opened on traces
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)

    def start_run(self, name, tags, parent_id=None):
        tags = dict(tags)
        if parent_id:
            tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def log_metrics(self, run_id, metrics, step=None):
        for k, v in metrics.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            self.client.log_metric(run_id, k, float(v), step=step or 0)

    def log_params(self, run_id, params):
        for k, v in params.items():
            self.client.log_param(run_id, k, str(v)[:6000])

    def set_tags(self, run_id, tags):
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def log_artifact(self, run_id, path, artifact_path=None):
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_table(self, run_id, rows, artifact_file):
        import pandas as pd

        self._mlflow.log_table(pd.DataFrame(rows), artifact_file, run_id=run_id)

    def log_dict(self, run_id, obj, artifact_file):
        self.client.log_dict(run_id, obj, artifact_file)

    def end_run(self, run_id, status="FINISHED"):
        self.client.set_terminated(run_id, status=status)

    def run_tags(self, run_id):
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.tags)
        except MlflowException as e:  # an unknown id
            raise LookupError(f"no MLflow run {run_id!r} at {self.uri}") from e

    def child_runs(self, run_id, tags):
        exp = self.client.get_run(run_id).info.experiment_id
        where = " and ".join([f"tags.mlflow.parentRunId = '{run_id}'"] +
                             [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
        return {r.info.run_id: dict(r.data.tags) for r in self.client.search_runs([exp], filter_string=where)}

    def has_artifacts(self, run_id, path):
        return bool(self.client.list_artifacts(run_id, path))

    def download_artifacts(self, run_id, path, dest):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(self.client.download_artifacts(run_id, path, tmp), dest)

    def version_by_alias(self, name, alias):
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        if alias not in (rm.aliases or {}):
            return None
        mv = self.client.get_model_version_by_alias(name, alias)
        # a SQLite store answers int versions, a tracking server strings
        return {"version": str(mv.version), "source": mv.source, "run_id": mv.run_id, "tags": dict(mv.tags)}

    def register_version(self, name, alias, source, run_id, tags, description, model_description):
        """A new version of `name` (the registered model is created on first use) with `alias`
        moved to it; returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(name, tags={"src.kind": "policy"},
                                                description=model_description)
        mv = self.client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                              description=description)
        self.client.set_registered_model_alias(name, alias, mv.version)
        return str(mv.version)
