"""Scheduled retraining: the DVC pipeline as an Airflow DAG, then publish the champion;
and ``retrain_watch``, which starts it when the dataset's source changes.

Scheduling, retries and fan-out only; what each task does is in
pipeline/orchestration/orchestrate.py and pipeline/orchestration/publish.py, and the
failures the retry policy acts on in pipeline/orchestration/failures.py. The DAG's docs
are ``retrain()``'s docstring.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import (Asset, AssetOrTimeSchedule, CronTriggerTimetable, ExceptionRetryPolicy,
                         RetryAction, RetryRule, dag, get_current_context, task)

from pipeline.orchestration import failures, orchestrate  # standard library only at import

# The folder above dags/: the project checkout (local DAG folder) or this run's
# copy of the repository (git DAG bundle). Only path arithmetic here: parsing
# reads no file and imports nothing heavy (tests/test_dag.py checks). `pipeline`
# is the installed package (`make setup`); in a git bundle Airflow puts the
# bundle's root on the import path, so the run's own commit is imported.
PROJECT_DIR = Path(os.environ.get("PIPELINE_PROJECT_DIR") or Path(__file__).resolve().parent.parent)

SCHEDULE = os.environ.get("RETRAIN_SCHEDULE", "@weekly")
WATCH_SCHEDULE = os.environ.get("RETRAIN_WATCH_SCHEDULE", "@hourly")
POOL = os.environ.get("RETRAIN_POOL", "training")
TRAIN_TIMEOUT = timedelta(minutes=float(os.environ.get("RETRAIN_TRAIN_TIMEOUT_MIN", "360")))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("RETRAIN_RETRY_DELAY_S", "120")))

# Other DAGs can run on a new champion: @dag(schedule=Asset("retrain_champion")).
CHAMPION = Asset(name="retrain_champion", uri="x-retrain://champion", group="model")
# retrain_watch updates it when the dataset's source serves other files; retrain runs on it.
SOURCE = Asset(name="retrain_source", uri="x-retrain://source", group="data")


def _cron(expression: str) -> CronTriggerTimetable | None:
    """A cron or preset in UTC whose first run is the next one to come; none = no clock."""
    if expression.lower() in ("", "none"):
        return None
    # run_immediately=False does not mean "never the past run" in Airflow 3.1: within
    # max(a tenth of the period, 5 min) after a boundary it still picks the run just
    # past (a Sunday before 16:48 for @weekly). A zero buffer picks it only when now
    # is the boundary itself.
    return CronTriggerTimetable(expression, timezone="UTC", run_immediately=timedelta(0))

# Data that failed validation, broken params or a missing DVC remote stay broken
# until a person acts: fail at once. A dead mirror or an unreachable DVC or git
# remote usually clears: retry with back-off. Anything else (a worker killed
# mid-task, a timeout) gets the task's ordinary retries, on any worker.
RETRY_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception=failures.PermanentError, action=RetryAction.FAIL,
              reason="needs a person to fix the data, params.yaml or config; not retried"),
    RetryRule(exception=failures.TransientError, action=RetryAction.RETRY,
              reason="transient (mirror or remote unreachable); retrying with back-off"),
])


def _log_failure(context) -> None:
    """One line that says what failed and what it means for the run."""
    ti, exc = context["ti"], context.get("exception")
    index = getattr(ti, "rendered_map_index", None) or ti.map_index
    where = ti.task_id + (f"[{index}]" if ti.map_index >= 0 else "")
    first = str(exc).splitlines()[0] if exc else "see the log above"
    logging.getLogger("retrain").error(
        "retrain: %s failed for good: %s. Its downstream tasks, publish included, do not run; "
        "the published champion stays as it was.", where, first)


@dag(
    # New data (an event of SOURCE) or the clock. The first scheduled run is the next
    # one to come: unpausing starts no run for a week already past (no start date,
    # run_immediately=False). A missed week is not worth back-to-back retrainings
    # either (catchup=False).
    schedule=AssetOrTimeSchedule(timetable=_cron(SCHEDULE), assets=SOURCE)
    if _cron(SCHEDULE) else SOURCE,
    catchup=False,
    max_active_runs=1,          # runs publish to one record branch: one at a time
    tags=["ml", "dvc", "mnist"],
    default_args={
        "retries": 3,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0,   # 2, 4, 8 minutes ...
        "max_retry_delay": timedelta(hours=1),
        "execution_timeout": timedelta(minutes=30),
        "retry_policy": RETRY_POLICY,
        "on_failure_callback": _log_failure,
    },
)
def retrain():
    """
    ### retrain: the DVC pipeline on a schedule, then publish the champion

    Runs on `RETRAIN_SCHEDULE` and whenever `retrain_watch` sees the dataset's
    source change (asset `retrain_source`). One task per `dvc.yaml` stage, named
    after it: `fetch` → `validate` → `split`
    → `train` (mapped: one instance per model in `params.yaml`, shown as
    `train[<model>]`, i.e. DVC's `train@<model>`) → `evaluate` → `publish`.
    Every task runs on any worker in a private clone of the run's commit
    (`pipeline/orchestration/workspace.py`): it pulls its stage's inputs from the DVC remote,
    runs the stage through DVC (`dvc repro`, so an unchanged stage is skipped),
    pushes its outputs and hands its `dvc.lock` entry and metrics on through
    XCom. Workers share nothing but the git source and the DVC remote.

    `publish` replaces the champion (`publish.champion_dir`) only when this run's
    best model beats it by `publish.champion_margin` on validation accuracy,
    and records the run on git branch `publish.record_branch` of the git source;
    it updates the asset `retrain_champion`. If any training or the evaluation
    fails, `publish` does not run. `fetch` and `validate` run every time (a
    changed source, the champion's data); when DVC then finds every later stage
    up to date against the last recorded run, `split` says so in one line and
    `train`, `evaluate` and `publish` are skipped: nothing is trained.

    Settings (environment of the scheduler and workers): `RETRAIN_SCHEDULE`
    (cron or preset, default `@weekly`; `none` = only on new data),
    `RETRAIN_WATCH_SCHEDULE` (how often `retrain_watch` looks, default `@hourly`), `RETRAIN_POOL`
    (default `training`; its size is how many models train at once),
    `RETRAIN_TRAIN_TIMEOUT_MIN` (default 360), `RETRAIN_RETRY_DELAY_S` (first
    retry delay, default 120), `PIPELINE_WORK_DIR` (where tasks clone),
    `PIPELINE_DVC_REMOTE_URL` and other `PIPELINE_DVC_REMOTE_<OPTION>` (the DVC
    remote as workers reach it). See docs/airflow.md.
    """
    def where() -> dict:
        """Which run and code a task belongs to (the DAG bundle pins the commit)."""
        context = get_current_context()
        return {"run_id": context["run_id"], "project": PROJECT_DIR,
                "bundle": getattr(context["ti"], "bundle_instance", None)}

    @task
    def fetch() -> dict:
        return orchestrate.run_stage("fetch", None, **where())

    @task
    def validate(upstream: dict) -> dict:
        return orchestrate.run_stage("validate", upstream, **where())

    @task
    def split(upstream: dict) -> list[dict]:
        """Runs the stage; one `train` per model of the run's params.yaml gets its record,
        none when nothing changed since the last recorded run (then train is skipped)."""
        record = orchestrate.run_stage("split", upstream, look_ahead=True, **where())
        if record["unchanged_since"]:
            return []
        return [{"model": model, "upstream": record} for model in orchestrate.model_names(record)]

    @task(pool=POOL, execution_timeout=TRAIN_TIMEOUT, retries=2,
          map_index_template="{{ model }}")
    def train(model: str, upstream: dict) -> dict:
        get_current_context()["model"] = model  # type: ignore[typeddict-unknown-key]
        return orchestrate.run_stage(f"train@{model}", upstream, **where())

    @task(execution_timeout=timedelta(hours=1))
    def evaluate(trainings: list[dict]) -> dict:
        from pipeline.orchestration import workspace

        return orchestrate.run_stage("evaluate", workspace.merge(list(trainings)), **where())

    @task(outlets=[CHAMPION])
    def publish(record: dict) -> dict:
        from pipeline.orchestration import publish as publish_lib

        context = get_current_context()
        summary = publish_lib.run(record, **where())
        context["outlet_events"][CHAMPION].extra = {
            "decision": summary["decision"], **summary["champion"],
            "record_commit": summary["record_commit"], "run_id": summary["run_id"]}
        return summary

    trained = train.expand_kwargs(split(validate(fetch())))
    publish(evaluate(trained))


retrain()


@dag(schedule=_cron(WATCH_SCHEDULE), catchup=False, max_active_runs=1,
     tags=["ml", "dvc", "mnist"],
     default_args={"retries": 2, "retry_delay": RETRY_DELAY, "retry_exponential_backoff": 2.0,
                   "max_retry_delay": timedelta(hours=1),
                   "execution_timeout": timedelta(minutes=10)})
def retrain_watch():
    """
    ### retrain_watch: start `retrain` when the dataset's source changes

    Every `RETRAIN_WATCH_SCHEDULE` (default `@hourly`), `watch` fingerprints what
    the source of `params.yaml`'s dataset serves (each file's SHA-256 in a local
    mirror, else ETag, Last-Modified and size from the first mirror that answers;
    `pipeline/stages/fetch.py`) and compares it with the fingerprint of the last
    event of the asset `retrain_source`. Only a change emits an event, which
    starts `retrain`; an unchanged source skips the task and emits none. The
    first look emits one. Paused at creation like every DAG: unpause it to
    retrain on new data.
    """
    @task(inlets=[SOURCE], outlets=[SOURCE])
    def watch() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline import config
        from pipeline.stages import fetch as fetch_stage

        context = get_current_context()
        now = fetch_stage.fingerprint(config.load_project(PROJECT_DIR))
        last = list(context["inlet_events"][SOURCE].ascending(False).limit(1))
        before = (last[0].extra or {}).get("fingerprint") if last else None
        if before == now:
            raise AirflowSkipException(f"retrain_watch: {now['source']} unchanged since "
                                       f"{last[0].timestamp:%Y-%m-%d %H:%M} UTC: no event")
        seen = (before or {}).get("files", {})
        changed = [name for name, tag in now["files"].items() if seen.get(name) != tag]
        logging.getLogger("retrain").info("retrain_watch: %s changed (%s): event for retrain",
                                          now["source"], ", ".join(changed))
        context["outlet_events"][SOURCE].extra = {"fingerprint": now}
        return now

    watch()


retrain_watch()
