from sweep.commands.list_sweeps import COUNTED, render, sweeps
from sweep.stores import child_run, tracking
from trainer.protocol import DIVERGED, OK, WALLCLOCK_CAP


def test_done_counts_every_trial_that_trained_to_its_end_whatever_its_final_status(stores):
    uri = stores["mlflow"]
    client = tracking.client(uri)
    experiment_id = tracking.ensure_experiment(client, uri, "list-counts")
    parent = tracking.open_parent(client, experiment_id, "counts", "sweep", "tiny", "", "sweep run", {})
    statuses = [OK, DIVERGED, WALLCLOCK_CAP, "pruned", "failed", "stopped"]
    for number, status in enumerate(statuses):
        run = client.create_run(experiment_id, tags={**child_run.identity_tags(parent, number, "counts"),
                                                     tracking.TAG_STATUS: status})
        client.set_terminated(run.info.run_id, "FINISHED")
    client.create_run(experiment_id, tags=child_run.identity_tags(parent, len(statuses), "counts"))  # running
    (row,) = [r for r in sweeps(uri) if r["sweep"] == "counts"]
    assert row["trials"] == 7
    assert {k: row[k] for k in COUNTED} == {"done": 3, "pruned": 1, "failed": 1, "running": 1}
    header = render([row]).splitlines()[0].split()
    assert header[4:8] == ["done", "pruned", "failed", "running"]
