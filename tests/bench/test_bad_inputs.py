"""The bad-input campaign of bench/bad_inputs.py on a few of its cases: each runs in its own folder, the
counts it prints agree with the file it saves, and a control case (valid input) is run but not counted."""
import json
import subprocess
import sys

from paths import REPO

BENCH = REPO / "bench" / "bad_inputs.py"


def test_a_few_cases_are_counted_and_saved(tmp_path):
    out = tmp_path / "bad_inputs.json"
    done = subprocess.run([sys.executable, str(BENCH), "--only", "control: run --dry-run", "run --trials abc",
                           "resume: sweep.json binary", "import-logs: log text", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "bad inputs: exit 2 of 3 (tracebacks: 0, other: 0)" in done.stdout
    assert "wrote into their folder: 0; started Ray: 0; controls failed: 0" in done.stdout
    saved = json.loads(out.read_text())
    rows = {r["case"]: r for r in saved["cases"]}
    assert rows["control: run --dry-run"]["rc"] == 0 and rows["control: run --dry-run"]["control"]
    assert rows["resume: sweep.json binary"]["message"].startswith("sweep resume: error: ")
    assert "sweep.json: not a text file" in rows["resume: sweep.json binary"]["message"]
    assert all(r["rc"] == 2 and r["wrote"] == [] for name, r in rows.items() if not name.startswith("control"))
    assert saved["summary"]["cases"] == 3 and saved["summary"]["exit_2"] == 3
