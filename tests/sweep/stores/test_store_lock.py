"""Processes that open a fresh sqlite store at the same moment: one creates (MLflow: migrates) it, the
others wait for the lock and open it complete (sweep.stores.lock)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from paths import REPO

OPENERS = 4


def _open_together(tmp_path: Path, opening: str) -> list[subprocess.CompletedProcess]:
    """Run `opening` in OPENERS processes, released together once all have imported what they need."""
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from sweep.stores import study
        from sweep.stores import tracking
        Path(sys.argv[1]).touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.005)
        {opening}
    """)
    procs = []
    for i in range(OPENERS):
        ready = tmp_path / f"ready{i}"
        procs.append((ready, subprocess.Popen([sys.executable, "-c", script, str(ready)], cwd=tmp_path, text=True,
                                              env={**os.environ, "PYTHONPATH": str(REPO)},
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in procs):
        assert time.monotonic() < deadline and all(p.poll() is None for _, p in procs), "an opener died early"
        time.sleep(0.05)
    go.touch()
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), p.stdout.read()) for _, p in procs]


def test_a_fresh_mlflow_store_is_migrated_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = _open_together(tmp_path, f"tracking.ensure_experiment(tracking.client({uri!r}), {uri!r}, 'shared')")
    assert [d.returncode for d in done] == [0] * OPENERS, "\n".join(d.stdout[-3000:] for d in done)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        assert db.execute("select count(*) from experiments where name = 'shared'").fetchone() == (1,)
    assert "alembic_version" in tables and not [t for t in tables if t.startswith("_alembic_tmp")]


def test_a_fresh_optuna_storage_gets_its_tables_once(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    done = _open_together(tmp_path, f"study.create_study({url!r}, 'study-' + sys.argv[1][-1], 'min', 'val_loss')")
    assert [d.returncode for d in done] == [0] * OPENERS, "\n".join(d.stdout[-3000:] for d in done)
    import optuna
    assert sorted(optuna.get_all_study_names(url)) == [f"study-{i}" for i in range(OPENERS)]
