"""A sweep's name becomes folder names (`<results-dir>/<name>/`, the store's artifact folders): every command
that takes one refuses a name that is not a single folder name (`.`, `..`, a path, empty, a flag look-alike)
with exit 2, before anything is written."""
from __future__ import annotations

import pytest
from sweeping import PLAIN_FAKE, write_space

from sweep.cli import main as sweep_main

BAD_NAMES = ["..", ".", "a/b", "../x", "a\\b", "", ".hidden", "-x", "x" * 201]
MESSAGE = "a sweep name is one folder name"


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_sweep_run_refuses_a_name_that_is_not_one_folder_and_writes_nothing(tmp_path, monkeypatch, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    space = write_space(work, name="names", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    monkeypatch.chdir(work)
    before = _listing(tmp_path)
    assert sweep_main(["run", "--space", str(space), "--trainer-cmd", PLAIN_FAKE, "--trials", "2",
                       f"--name={name}", "--results-dir", "runs"]) == 2
    assert f"sweep run: error: --name: {MESSAGE}" in capsys.readouterr().err
    assert _listing(tmp_path) == before   # no stores, no results dir, nothing in the folders above


@pytest.mark.parametrize("command", ["resume", "compare", "verify"])
@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_commands_given_a_sweep_name_refuse_one_that_is_not_one_folder(tmp_path, monkeypatch, capsys, command, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert sweep_main([command, "--", name]) == 2
    assert f"sweep {command}: error: NAME: {MESSAGE}" in capsys.readouterr().err
    assert _listing(tmp_path) == ["runs"]
