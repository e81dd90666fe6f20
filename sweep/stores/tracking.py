"""MLflow layout of a sweep (docs/records.md, "MLflow layout"): the names every part of the service reads and writes.

Experiment = the space name (or `--name`); one parent run per sweep, one child run per trial. A child
run is identified by its parent run and the Optuna trial number (tag `sweep.trial_number`), not by the
Ray trial id, so a trial restarted after a crash or a driver restart finds its own run again.
"""
from __future__ import annotations

import json
import numbers
import os
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlencode

from sweep.stores import credentials, lock, urls
from sweep.stores.store_failure import require_file
from trainer.protocol import ARTIFACT_FILES, CONFIG_FILE, EVENTS_FILE, LOG_FILE, STEP_FIELDS
from trainer.provenance import git_sha

PARENT_RUN_TAG = "mlflow.parentRunId"
TAG_ROLE = "sweep.role"                  # "sweep", "verify" or "confirm" on a parent, "trial" on a child
TRIAL_ROLE = "trial"
IMPORT_ROLE = "import"                   # a training log imported by `sweep import-logs`, with these tags:
TAG_IMPORT_SOURCE = "sweep.import.source"      # modded-nanogpt | parameter-golf | gpt-sweep
TAG_IMPORT_FILE = "sweep.import.file"          # the file's name
TAG_IMPORT_PATH = "sweep.import.path"          # the absolute path it was imported from
TAG_IMPORT_SHA256 = "sweep.import.sha256"      # content hash: the identity of an imported log
TAG_IMPORT_COMPLETE = "sweep.import.complete"  # "true" | "false"
TAG_SWEEP = "sweep.name"                 # on a sweep's runs, and on the logs imported for it
TAG_SPACE = "sweep.space"                # the space file's content
TAG_SPACE_FILE = "sweep.space_file"
TAG_METRIC = "sweep.metric"
TAG_MODE = "sweep.mode"
TAG_PRESET = "sweep.preset"
TAG_GIT_SHA = "sweep.git_sha"
TAG_RAY_ADDRESS = "sweep.ray_address"
TAG_COMMAND = "sweep.command"
TAG_TRIAL_NUMBER = "sweep.trial_number"
TAG_TRIAL_ID = "sweep.trial_id"
TAG_ATTEMPT = "sweep.attempt"
TAG_STATUS = "sweep.status"              # ok | diverged | wallclock_cap | pruned | failed | stopped
TAG_ERROR = "sweep.error"                # the tail of the log of a failed trial
TAG_EXIT_CODE = "sweep.exit_code"        # the trainer's exit code, on a failed trial
TAG_OBJECTIVE_FROM = "sweep.objective_from"  # where a finished trial's objective came from: an evaluation's
                                             # label, `final`, or `penalty: <why>` (sweep.inputs.objective)
TAG_EVAL_LABELS = "sweep.eval_labels"    # the evaluations a finished trial printed after training, in order
TAG_GPUS = "sweep.gpus_per_trial"
TAG_NPROC = "sweep.nproc_per_trial"
TAG_NODE = "sweep.node_id"               # the Ray node the trial ran on
TAG_VISIBLE_GPUS = "sweep.cuda_visible_devices"  # the GPU ids Ray gave the trial
TAG_STOPPED_LAUNCHING = "sweep.stopped_launching"  # on the parent: why no more trials started (--stop-at, budget)
NOTE_TAG = "mlflow.note.content"         # shown as the run's description in the MLflow UI

STEP_METRICS = STEP_FIELDS
FP8_PREFIX = "fp8."  # the trainer's `fp8` event fields (scales in effect, range figures) as metrics fp8.<field>
FINAL_METRICS = ("final_val_loss", "final_val_bpb", "wallclock_s", "artifact_bytes", "roundtrip_val_bpb",
                 "gpu_hours")
WALLCLOCK_METRIC = "wallclock_s"        # a trial's wall time, launch to result (sweep.stores.child_run)
OBJECTIVE_METRIC = "objective"           # the value handed to Optuna (penalties included)
BEST_METRIC = "best_objective"           # on the parent run
ARTIFACTS = (LOG_FILE, CONFIG_FILE, EVENTS_FILE)
EXPORT_ARTIFACTS = tuple(ARTIFACT_FILES.values())  # when the run exported one
LEADERBOARD_ARTIFACT = "leaderboard.txt"  # on the parent run

# The experiment holds model training runs. MLflow 3 UIs before its GenAI / Model training switch open such an
# experiment on its runs rather than a GenAI overview; from that switch on (3.17 included) the UI ignores
# the tag and follows the switch, which `ui_url` sets in the URL.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# A saved view of the experiment's runs table in MLflow's UI (its "Views" menu, opened by the URL's
# `viewStateShareKey`): the tag `mlflow.sharedViewState.<key>` holds {name, createdAt, updatedAt, state},
# state being the table's search, sort and columns as JSON.
SAVED_VIEW_PREFIX = "mlflow.sharedViewState."
UI_LOCAL = "http://127.0.0.1:5000"        # where `mlflow ui` serves by default
MAX_TAG_CHARS = 8000
_BATCH = 1000
_PARAM_BATCH = 100


def trial_label(number: int) -> str:
    """A trial's one name (`trial_NNNN`, its Optuna trial number): its child run, its run directory, its row in
    the live view and on the leaderboard."""
    return f"trial_{number:04d}"


def fp8_metrics(event: dict[str, Any]) -> dict[str, Any]:
    """An `fp8` event's numbers under their metric names: fp8.x_s, fp8.g_flushed, ..."""
    return {FP8_PREFIX + k: v for k, v in event.items() if k not in ("event", "time", "step")}


def client(uri: str):
    from mlflow import MlflowClient

    uri = credentials.mlflow_uri(uri)
    with lock.first_open(uri):
        # opens the store: creates or migrates a fresh database
        return MlflowClient(tracking_uri=credentials.address(uri))


def existing_client(uri: str):
    """A client of a store the sweep's driver created: a sqlite store whose file is gone is a
    sweep.stores.store_failure.StoreFailure, never a fresh database (the trials and the driver's callbacks)."""
    require_file(uri, "MLflow")
    return client(uri)


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a local sqlite store go beside the database file; a server keeps its own default."""
    db = urls.sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / "mlflow-artifacts" / experiment).as_uri()


def ensure_experiment(mlflow_client, uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow_client.create_experiment(name, artifact_location=default_artifact_location(uri, name),
                                                   tags=dict([EXPERIMENT_KIND]))
        except MlflowException as e:
            # Another sweep of the same space created it in the meantime.
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = mlflow_client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(experiment.experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        mlflow_client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return experiment.experiment_id


def open_parent(mlflow_client, experiment_id: str, name: str, role: str, preset: str, address: str, command: str,
                tags: dict[str, str], description: str = "") -> str:
    """Create the parent run of a sweep, verification or confirmation (role `sweep`, `verify` or `confirm`)
    with the tags every parent carries, plus `tags`; returns its id."""
    common = {TAG_ROLE: role, TAG_SWEEP: name, TAG_PRESET: preset, TAG_GIT_SHA: git_sha() or "unknown",
              TAG_RAY_ADDRESS: address or "local", TAG_COMMAND: clip(command)}
    if description:
        common[NOTE_TAG] = clip(description)
    return mlflow_client.create_run(experiment_id, run_name=name, tags={**common, **tags}).info.run_id


def clip(text: str, limit: int = MAX_TAG_CHARS) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def child_filter(parent_run_id: str, trial_number: int | None = None) -> str:
    # The role keeps out runs nested under the parent that are not its trials (a sweep's confirmation run).
    text = f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' and tags.`{TAG_ROLE}` = '{TRIAL_ROLE}'"
    if trial_number is not None:
        text += f" and tags.`{TAG_TRIAL_NUMBER}` = '{trial_number}'"
    return text


def search_all(mlflow_client, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list:
    """Every run matching the filter, over as many result pages as there are."""
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token,
                                         order_by=order_by)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_runs(mlflow_client, experiment_id: str, parent_run_id: str, trial_number: int | None = None) -> list:
    return search_all(mlflow_client, [experiment_id], child_filter(parent_run_id, trial_number))


def param_name(key: str) -> str:
    """The MLflow param that holds a key: the key itself, but for the `@` of a source-mode site address
    (`CastedLinear.x_s@1029`), a character MLflow refuses in a name, written `:`."""
    return key.replace("@", ":")


def log_params(mlflow_client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(param_name(k), v) for k, v in params.items()]
    for i in range(0, len(items), _PARAM_BATCH):
        mlflow_client.log_batch(run_id, params=items[i:i + _PARAM_BATCH])


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class MetricBatch:
    """Metrics gathered between two reports and sent in one `log_batch` request; every metric the sweep
    logs goes through one (values that are not numbers, such as a field a line did not print, are left out).

    A (key, step) pair is sent once: the trainer's `train` and `val` events at the same step both
    carry `train_time_ms`, and the history should hold one point per step. `logged` holds the pairs the
    run already has (from an earlier attempt of the trial).
    """

    def __init__(self, mlflow_client, run_id: str, logged: Iterable[tuple[str, int]] = ()):
        self.client = mlflow_client
        self.run_id = run_id
        self._pending: list = []
        self._seen: set[tuple[str, int]] = set(logged)

    def add(self, values: dict[str, Any], step: int, timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        for key, value in values.items():
            if not _is_number(value) or (key, step) in self._seen:
                continue
            self._seen.add((key, step))
            self._pending.append(Metric(key, float(value), stamp, step))

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Send what is pending; returns the number of requests made."""
        sent = 0
        while self._pending:
            chunk, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)
            sent += 1
        return sent


def log_metrics(mlflow_client, run_id: str, metrics: dict[str, float]) -> None:
    """Figures of a whole run (a sweep's hours and best objective, a verification's test), logged now."""
    not_numbers = {k: v for k, v in metrics.items() if not _is_number(v)}
    if not_numbers:
        raise TypeError(f"metrics must be numbers: {not_numbers!r}")
    batch = MetricBatch(mlflow_client, run_id)
    batch.add(metrics, step=0)
    batch.flush()


def logged_points(mlflow_client, run) -> set[tuple[str, int]]:
    """Every (metric, step) pair the run holds."""
    return {(key, m.step) for key in run.data.metrics for m in mlflow_client.get_metric_history(run.info.run_id, key)}


def log_artifacts(mlflow_client, run_id: str, run_dir: Path, names: Iterable[str]) -> None:
    for name in names:
        path = run_dir / name
        if path.is_file():
            mlflow_client.log_artifact(run_id, os.fspath(path))


def ui_command(uri: str) -> str:
    if credentials.is_server(uri):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


def ensure_trials_view(mlflow_client, experiment_id: str, name: str, keys: list[str], mode: str) -> None:
    """Save the view of the runs table that shows run `name`'s trials, unless the experiment has it (a resumed
    sweep keeps what the user may have changed in it): one row each, best first, with their objective,
    val_loss, swept values, status and wallclock (a filter also keeps the UI from folding the trials under
    their parent run)."""
    if SAVED_VIEW_PREFIX + name in mlflow_client.get_experiment(experiment_id).tags:
        return
    now = int(time.time() * 1000)
    state = {
        "searchFilter": f"tags.`{TAG_SWEEP}` = '{name}' and tags.`{TAG_ROLE}` = '{TRIAL_ROLE}'",
        "orderByKey": f"metrics.`{OBJECTIVE_METRIC}`", "orderByAsc": mode == "min",
        "selectedColumns": [*(f"metrics.`{m}`" for m in (OBJECTIVE_METRIC, "val_loss", WALLCLOCK_METRIC)),
                            *(f"params.`{k}`" for k in keys), f"tags.`{TAG_STATUS}`"]}
    view = {"name": f"sweep {name}", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    mlflow_client.set_experiment_tag(experiment_id, SAVED_VIEW_PREFIX + name, json.dumps(view))


def ui_url(base: str, experiment_id: str, view: str) -> str:
    """The page of MLflow's UI at `base` that shows saved view `view` of the experiment's runs, with the UI
    switched to model training (its default is GenAI, whose experiment page is a traces overview)."""
    query = urlencode({"viewStateShareKey": view, "workflowType": "machine_learning"})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def ui_lines(uri: str, experiment_id: str, view: str) -> list[str]:
    """How to open MLflow's UI on saved view `view`: the server's page, or `mlflow ui` on a local store
    and the page it serves."""
    if credentials.is_server(uri):
        return [f"MLflow UI: {ui_url(credentials.address(uri), experiment_id, view)}"]
    return [f"MLflow UI: {ui_command(uri)}", f"  then open {ui_url(UI_LOCAL, experiment_id, view)}"]
