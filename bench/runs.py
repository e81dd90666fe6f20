"""Shared by the trainer benchmarks: launch a trainer run, read its events, save a figure file."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent


def portable(text: str) -> str:
    """`text` with this interpreter's and this checkout's paths written `python` and `<repo>`: a saved result
    says what ran, not where."""
    return text.replace(sys.executable, "python").replace(str(REPO), "<repo>")


def launch_command(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "trainer"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "trainer"]


def run_trainer(run_dir: Path, args: list[str], nproc: int = 1, env: dict | None = None) -> tuple[float, list[dict]]:
    """Run to completion; return the launch time (unix seconds) and the events."""
    t_launch = time.time()
    subprocess.run([*launch_command(nproc), "--run-dir", str(run_dir), *args], check=True, capture_output=True,
                   timeout=3600, env=env)
    evs = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return t_launch, evs


def mean_ms(fn, repeats: int) -> float:
    """Mean milliseconds of `fn()` over `repeats` calls, after one untimed call (compilation, autotuning)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def first(evs: list[dict], name: str) -> dict:
    return next(e for e in evs if e["event"] == name)


def _cpu_model() -> str:
    # CPU figures differ by model (fp8 kernels most of all), so the model is part of every result.
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


def machine() -> dict:
    info = {"host": platform.node(), "cpu": _cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    return info


def save(name: str, result: dict, echo: bool = True) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if echo:
        print(json.dumps(result))
