"""SIGINT and SIGTERM in the driver: both end it the same way, at any point (docs/running.md, "Signals").

Outside the sections below a signal raises KeyboardInterrupt, which the driver turns into exit code 1.
- `deferred()`: the signal waits until the block is done (the records a resume needs are written whole).
- `tune()`: Tune is running. A SIGINT goes to Tune's own handler, which stops the experiment gracefully
  (it saves its state with the running trials still marked unfinished, then stops them); a SIGTERM is
  handed to that same handler. A further signal while Tune stops only says so.
Ray's `ray.init` replaces the SIGTERM handler with its own `sys.exit`, so `install()` is called again
after it.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    def __init__(self) -> None:
        self.signum: int | None = None   # the first signal received
        self._pending = False            # a signal arrived inside `deferred()`
        self._deferring = 0
        self._in_tune = False

    @property
    def received(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _say(self, text: str) -> None:
        # os.write: a handler may run while the main thread is inside print() on the same stream.
        os.write(2, f"sweep: {text}\n".encode())

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        name = signal.Signals(signum).name
        if self._in_tune:
            if signal.getsignal(signal.SIGINT) != self._handle:
                self._say(f"{name}: stopping the trials; Tune saves its state for `sweep resume`")
                signal.raise_signal(signal.SIGINT)  # Tune's handler, installed for the duration of fit()
            else:
                self._say(f"{name}: already stopping")
            return
        if self._deferring:
            self._pending = True
            self._say(f"{name}: stopping once the sweep's records are written")
            return
        raise KeyboardInterrupt(name)

    @contextmanager
    def deferred(self):
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring and self._pending:
            self._pending = False
            raise KeyboardInterrupt(signal.Signals(self.signum).name)

    @contextmanager
    def tune(self):
        self._in_tune = True
        try:
            yield
        finally:
            self._in_tune = False
            # Tune puts the handler it found back only once it has handled a SIGINT itself, and leaves its
            # own in place otherwise.
            if signal.getsignal(signal.SIGINT) == self._handle and self.signum is None:
                self.signum = signal.SIGINT
            self.install()
