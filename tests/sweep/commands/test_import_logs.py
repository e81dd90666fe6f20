import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient
from paths import LOGS

from sweep.commands import import_logs as il
from sweep.errors import InputError
from sweep.stores import tracking

UPSTREAM = ["modded_nanogpt_2024.txt", "modded_nanogpt_2025.txt", "parameter_golf_int8.txt",
            "parameter_golf_int6_sliding.txt", "parameter_golf_2026.txt"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite tracking store for the module; each test imports into its own experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


def _runs(client, experiment_id):
    return client.search_runs([experiment_id], max_results=1000)


def _history(client, run_id, key) -> dict[int, float]:
    """step -> value: a flat mapping, which pytest.approx compares in every pytest version."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)}


def test_upstream_logs_are_imported_with_the_trial_metric_names(store, tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    for name in [*UPSTREAM, "not_a_log.txt"]:
        shutil.copy(LOGS / name, folder / name)
    report = il.import_logs([folder / name for name in UPSTREAM[:2]] + [folder], "upstream", store)
    client = MlflowClient(store)

    assert sorted(Path(r.path).name for r in report.imported) == sorted(UPSTREAM)
    assert [Path(s.path).name for s in report.skipped] == ["not_a_log.txt"]   # found in the folder: skipped
    assert "not a training log" in report.skipped[0].reason
    assert "not_a_log.txt" in report.summary()
    assert len(_runs(client, report.experiment_id)) == len(UPSTREAM)

    by_file = {Path(r.path).name: client.get_run(r.run_id) for r in report.imported}
    for name, run in by_file.items():
        tags = run.data.tags
        assert tags[tracking.TAG_IMPORT_FILE] == name
        assert tags[tracking.TAG_IMPORT_SHA256] == hashlib.sha256((LOGS / name).read_bytes()).hexdigest()
        assert tags[tracking.TAG_IMPORT_COMPLETE] == "true"
        assert run.info.status == "FINISHED"
        assert run.info.run_name == name
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [name]

    golf = by_file["parameter_golf_int8.txt"]
    assert golf.data.tags[tracking.TAG_IMPORT_SOURCE] == "parameter-golf"
    assert golf.data.tags["sweep.status"] == "wallclock_cap"
    m = golf.data.metrics
    assert m["final_val_loss"] == pytest.approx(2.0606)
    assert m["final_val_bpb"] == pytest.approx(1.2172)
    assert m["wallclock_s"] == pytest.approx(600.038)
    assert m["artifact_bytes"] == 15815847
    assert m["total_bytes"] == 15863489
    assert m["roundtrip_val_bpb"] == pytest.approx(1.22436570)
    assert m["roundtrip_val_loss"] == pytest.approx(2.07269931)
    gid = golf.info.run_id
    assert _history(client, gid, "val_loss") == pytest.approx({0: 6.9370, 200: 2.8397, 400: 2.5687, 13780: 2.0606})
    assert _history(client, gid, "val_bpb") == pytest.approx({0: 4.0978, 200: 1.6774, 400: 1.5174, 13780: 1.2172})
    assert _history(client, gid, "train_loss") == pytest.approx(
        {1: 6.9408, 2: 16.8763, 200: 2.8041, 400: 2.7684, 13750: 1.9910})
    assert _history(client, gid, "step_avg_ms")[13780] == pytest.approx(43.54)
    assert golf.data.params["seed"] == "1337"

    modded = by_file["modded_nanogpt_2024.txt"]
    assert modded.data.tags[tracking.TAG_IMPORT_SOURCE] == "modded-nanogpt"
    assert modded.data.metrics["final_val_loss"] == pytest.approx(6.3829)
    assert "final_val_bpb" not in modded.data.metrics and "artifact_bytes" not in modded.data.metrics
    assert _history(client, modded.info.run_id, "val_loss") == pytest.approx({0: 16.0098, 10: 7.1021, 20: 6.3829})
    # step_avg:nanms before timing starts is no value, not a NaN point.
    assert list(_history(client, modded.info.run_id, "step_avg_ms"))[0] == 13

    newest = by_file["parameter_golf_2026.txt"]
    # The record's score: its last evaluation (quantized_ttt), not the `diagnostic quantized` one before it.
    assert newest.data.metrics["roundtrip_val_bpb"] == pytest.approx(1.08235425)
    assert newest.data.metrics["artifact_bytes"] == 15931272


def test_importing_twice_does_not_duplicate_or_touch_existing_runs(store, tmp_path):
    files = [LOGS / "parameter_golf_int8.txt", LOGS / "modded_nanogpt_2025.txt"]
    first = il.import_logs(files, "twice", store)
    client = MlflowClient(store)
    before = {r.info.run_id: (r.info.status, r.info.end_time, dict(r.data.tags), dict(r.data.metrics))
              for r in _runs(client, first.experiment_id)}

    renamed = tmp_path / "same_content_other_name.log"
    shutil.copy(LOGS / "parameter_golf_int8.txt", renamed)
    second = il.import_logs(files + [renamed], "twice", store)

    assert second.imported == []
    assert [Path(d.path).name for d in second.duplicates] == [f.name for f in files] + [renamed.name]
    assert {d.run_id for d in second.duplicates} == {r.run_id for r in first.imported}
    after = {r.info.run_id: (r.info.status, r.info.end_time, dict(r.data.tags), dict(r.data.metrics))
             for r in _runs(client, first.experiment_id)}
    assert after == before


def test_the_same_content_twice_in_one_call_is_one_run(store, tmp_path):
    copy = tmp_path / "copy.txt"
    shutil.copy(LOGS / "modded_nanogpt_2025.txt", copy)
    report = il.import_logs([LOGS / "modded_nanogpt_2025.txt", copy], "one-call", store)
    assert len(report.imported) == 1 and len(report.duplicates) == 1
    assert report.duplicates[0].run_id == report.imported[0].run_id


def test_truncated_logs_are_imported_and_marked_incomplete(store):
    files = [LOGS / "modded_nanogpt_truncated.txt", LOGS / "parameter_golf_truncated.txt"]
    report = il.import_logs(files, "truncated", store)
    client = MlflowClient(store)
    assert [r.complete for r in report.imported] == [False, False]
    for r in report.imported:
        run = client.get_run(r.run_id)
        assert run.data.tags[tracking.TAG_IMPORT_COMPLETE] == "false"
        assert run.data.tags["sweep.status"] == "incomplete"
        assert run.info.status == "KILLED"
    modded = client.get_run(report.imported[0].run_id)
    assert _history(client, modded.info.run_id, "val_loss") == pytest.approx({0: 10.8258, 6: 4.0956})
    assert "final_val_loss" not in modded.data.metrics
    golf = client.get_run(report.imported[1].run_id)
    assert golf.data.metrics["final_val_loss"] == pytest.approx(2.0606)   # training finished,
    assert "roundtrip_val_bpb" not in golf.data.metrics                  # the export summary is cut off


def test_our_trainer_log_imports_like_its_events(store, small_trainer_run):
    report = il.import_logs([small_trainer_run / "train.log"], "ours", store)
    client = MlflowClient(store)
    (imported,) = report.imported
    assert imported.source == "gpt-sweep" and imported.complete
    events = [json.loads(line) for line in (small_trainer_run / "events.jsonl").read_text().splitlines()]
    vals = [e for e in events if e["event"] == "val"]
    final = next(e for e in events if e["event"] == "final")
    history = _history(client, imported.run_id, "val_loss")
    assert list(history) == [e["step"] for e in vals]
    assert list(history.values()) == pytest.approx([e["val_loss"] for e in vals], abs=5e-5)
    metrics = client.get_run(imported.run_id).data.metrics
    assert metrics["final_val_loss"] == pytest.approx(final["val_loss"], abs=5e-5)
    assert metrics["final_val_bpb"] == pytest.approx(final["val_bpb"], abs=5e-5)
    assert metrics["wallclock_s"] == pytest.approx(final["train_time_ms"] / 1000, abs=1e-3)


def test_hand_written_sample_of_our_format_with_export(store):
    report = il.import_logs([LOGS / "gpt_sweep_train.log"], "ours-sample", store)
    run = MlflowClient(store).get_run(report.imported[0].run_id)
    assert run.data.tags[tracking.TAG_IMPORT_SOURCE] == "gpt-sweep"
    assert run.data.metrics["artifact_bytes"] == 14873012
    assert run.data.metrics["roundtrip_val_bpb"] == pytest.approx(1.38061147)
    assert run.data.params["world_size"] == "8"


def test_bad_input_fails_before_mlflow_is_touched(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(InputError, match="missing.txt: no such file"):
        il.import_logs([LOGS / "parameter_golf_int8.txt", tmp_path / "missing.txt"], "x", uri)
    with pytest.raises(InputError, match="--experiment"):
        il.import_logs([LOGS / "parameter_golf_int8.txt"], " ", uri)
    with pytest.raises(InputError, match="--mlflow-uri"):
        il.import_logs([LOGS / "parameter_golf_int8.txt"], "x", f"sqlite:///{tmp_path / 'nope' / 'm.db'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty: folder has no"):
        il.import_logs([empty], "x", uri)
    assert not (tmp_path / "mlflow.db").exists()


def test_binary_file_in_a_folder_is_skipped(store, tmp_path):
    (tmp_path / "model.log").write_bytes(b"step:1/2 train_loss:1.0\0\x01\x02")
    shutil.copy(LOGS / "parameter_golf_int8.txt", tmp_path / "train.log")
    report = il.import_logs([tmp_path], "binary", store)
    assert len(report.imported) == 1 and "binary" in report.skipped[0].reason


def test_command_line_entry(store, tmp_path, capsys):
    folder = tmp_path / "records"
    folder.mkdir()
    shutil.copy(LOGS / "parameter_golf_2026.txt", folder / "train_seed42.log")
    shutil.copy(LOGS / "not_a_log.txt", folder / "notes.txt")
    p = argparse.ArgumentParser()
    il.add_arguments(p)
    args = p.parse_args([str(folder), "--experiment", "cli", "--mlflow-uri", store])
    assert il.main(args) == 0
    out = capsys.readouterr().out
    assert "1 imported, 0 already present, 1 skipped" in out
    assert "train_seed42.log" in out and "notes.txt" in out
