"""What tests/test_dag.py checks about the DAG, read in a fresh interpreter with the
Airflow env: ``python dagbag_facts.py DAG_FOLDER`` prints one line of JSON."""
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.mappedoperator import MappedOperator
from pipeline.orchestration.failures import DataValidationError, ParamsError, RemoteUnavailable, StageFailed

def schedule(dag):
    clock = getattr(dag.timetable, "timetable", dag.timetable)   # AssetOrTimeSchedule's clock
    return getattr(clock, "expression", None) or str(dag.schedule)

def assets(dag):
    """The assets whose events start the DAG (besides its clock)."""
    condition = getattr(dag.timetable, "asset_condition", None)
    return sorted(a.name for a in getattr(condition, "objects", [condition]) if a is not None)

def first_run_in_future(dag):
    # unpausing must start no run for a period already past (no unrequested catch-up),
    # now and a minute after the clock's last boundary (where Airflow may pick the past run)
    from datetime import datetime, timedelta, timezone
    import airflow.timetables.trigger as trigger
    from airflow.timetables.base import TimeRestriction
    from airflow.serialization.serialized_objects import DagSerialization
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable  # the scheduler's
    clock = getattr(timetable, "timetable", timetable)
    def first(now):
        real, trigger.utcnow = trigger.utcnow, lambda: now
        try:
            info = timetable.next_dagrun_info(last_automated_data_interval=None,
                restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup))
        finally:
            trigger.utcnow = real
        return info is not None and info.run_after > now
    now = trigger.coerce_datetime(datetime.now(timezone.utc))
    return first(now) and first(clock._align_to_prev(now) + timedelta(minutes=1))

def facts(dag):
    tasks = {}
    for t in dag.tasks:
        policy = t.retry_policy
        tasks[t.task_id] = {
            "retries": t.retries, "retry_delay_s": t.retry_delay.total_seconds(),
            "backoff": t.retry_exponential_backoff,
            "max_retry_delay_s": t.max_retry_delay and t.max_retry_delay.total_seconds(),
            "timeout_s": t.execution_timeout and t.execution_timeout.total_seconds(),
            "pool": t.pool, "mapped": isinstance(t, MappedOperator),
            "upstream": sorted(t.upstream_task_ids), "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
            "outlets": [a.name for a in t.outlets], "inlets": [a.name for a in t.inlets],
            "policy": policy and {e.__name__: policy.evaluate(e("x"), 1, 3).action.value
                                  for e in (DataValidationError, ParamsError, RemoteUnavailable,
                                            StageFailed)}}
    return {"schedule": schedule(dag), "assets": assets(dag),
            "first_run_in_future": first_run_in_future(dag),
            "catchup": dag.catchup, "tags": sorted(dag.tags),
            "max_active_runs": dag.max_active_runs, "doc": dag.doc_md or "", "tasks": tasks}

bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": bag.import_errors, "dags": sorted(bag.dags)}
for dag_id in ("retrain", "retrain_watch"):
    if dag_id in bag.dags:
        out[dag_id] = facts(bag.dags[dag_id])
os.environ.update(RETRAIN_SCHEDULE="0 3 * * 1", RETRAIN_POOL="gpus", RETRAIN_WATCH_SCHEDULE="*/5 * * * *")
again = DagBag(dag_folder=sys.argv[1]).dags
out["overridden"] = {"schedule": schedule(again["retrain"]), "pool": again["retrain"].get_task("train").pool,
                     "watch": schedule(again["retrain_watch"])}
os.environ.update(RETRAIN_SCHEDULE="none")
no_clock = DagBag(dag_folder=sys.argv[1]).dags["retrain"]
out["no_clock"] = {"timetable": type(no_clock.timetable).__name__, "assets": assets(no_clock)}
print(json.dumps(out, default=str))
