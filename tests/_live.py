"""A command line run as a subprocess whose output is watched as it arrives: for tests that a
long command shows progress early, and that Ctrl-C (SIGINT) stops it promptly.

The output is read in raw chunks by one thread per stream, so tqdm's carriage-return updates
count as soon as they are written (no newline needed).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "LiveProcess"]


def _as_in_a_terminal() -> None:
    """In the child before it starts: SIGINT handled by default, as in a terminal. A test run
    started in the background by a non-interactive shell (``cmd &``, as a CI script may) ignores
    SIGINT, the child inherits that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LiveProcess:
    """``python -m <module> <args>`` with stdout and stderr collected as they arrive.

    ``env`` entries are added to the current environment (``PYTHONPATH`` points at the
    checkout). Use as a context manager: on exit a process still running is killed.
    """

    def __init__(self, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env, preexec_fn=_as_in_a_terminal)
        self._text = {"stdout": "", "stderr": ""}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._pump, args=(name, stream), daemon=True)
                         for name, stream in (("stdout", self.proc.stdout),
                                              ("stderr", self.proc.stderr))]
        for t in self._threads:
            t.start()

    def _pump(self, name: str, stream) -> None:
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # closed by __exit__
                return
            if not chunk:
                return
            with self._lock:
                self._text[name] += chunk.decode(errors="replace")

    def text(self, name: str) -> str:
        with self._lock:
            return self._text[name]

    @property
    def stdout(self) -> str:
        return self.text("stdout")

    @property
    def stderr(self) -> str:
        return self.text("stderr")

    def wait_for(self, pattern: str, *, stream: str = "stdout", timeout: float) -> float:
        """Seconds since the start when ``pattern`` (a regex) first appeared in ``stream``;
        AssertionError (with everything written so far) if not within ``timeout`` seconds
        of the start, or if the process ended without writing it."""
        deadline = self.started + timeout
        while True:
            if re.search(pattern, self.text(stream)):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                for t in self._threads:
                    t.join(timeout=5)
                if re.search(pattern, self.text(stream)):
                    return time.monotonic() - self.started
                raise AssertionError(f"exited ({self.proc.returncode}) without {pattern!r} on "
                                     f"{stream}:\nstdout: {self.stdout}\nstderr: {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on {stream} within {timeout} s:\n"
                                     f"stdout: {self.stdout}\nstderr: {self.stderr}")
            time.sleep(0.05)

    def interrupt(self) -> None:
        """Send SIGINT, as Ctrl-C in a terminal does."""
        self.proc.send_signal(signal.SIGINT)

    def finish(self, *, timeout: float) -> tuple[int, float]:
        """Wait for the exit: ``(exit code, seconds waited)``; AssertionError after
        ``timeout`` seconds (the process is killed)."""
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running {timeout} s later:\nstdout: {self.stdout}\n"
                                 f"stderr: {self.stderr}") from None
        waited = time.monotonic() - start
        for t in self._threads:
            t.join(timeout=5)
        return code, waited

    def __enter__(self) -> LiveProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
