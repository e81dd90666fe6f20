"""The driver's signal handling (sweep.orchestration.interrupt) on this process's own signals: SIGINT and SIGTERM the same
way, held back while the sweep's records are written, handed to Tune's own handler while Tune runs."""
from __future__ import annotations

import os
import signal

import pytest

from sweep.orchestration.interrupt import Interrupts


@pytest.fixture
def interrupts():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    handling = Interrupts()
    handling.install()
    yield handling
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_raises_keyboard_interrupt(interrupts, sig):
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(sig)
    assert interrupts.signum == sig


def test_a_signal_waits_until_the_records_are_written(interrupts):
    written = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            written.append("study")
            written.append("sweep.json")
    assert written == ["study", "sweep.json"]


def test_sigterm_goes_to_tunes_handler_while_tune_runs(interrupts):
    stops = []
    ours = signal.getsignal(signal.SIGINT)

    def tune_handler(signum, frame):  # what Tune installs for the duration of fit(): stop, then step aside
        stops.append(signum)
        signal.signal(signal.SIGINT, ours)

    with interrupts.tune():
        signal.signal(signal.SIGINT, tune_handler)
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # while Tune stops: only said, not raised
    assert stops == [signal.SIGINT]
    assert interrupts.received
    assert signal.getsignal(signal.SIGINT) == ours


def test_a_sigint_that_tune_handled_itself_counts_as_received(interrupts):
    ours = signal.getsignal(signal.SIGINT)
    with interrupts.tune():
        signal.signal(signal.SIGINT, lambda signum, frame: signal.signal(signal.SIGINT, ours))
        signal.raise_signal(signal.SIGINT)
    assert interrupts.signum == signal.SIGINT
