"""Waiting in tests: for a condition with a deadline, and for a process to stop. The only two
helpers of their kind; every layer uses these."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy, and return that; fail naming `what`
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def alive(process: subprocess.Popen[bytes], predicate: Callable[[], Any]) -> Callable[[], Any]:
    """`predicate` for `wait_for`, failing at once (rather than at the deadline) when `process`
    has died meanwhile."""

    def check() -> Any:
        assert process.poll() is None, f"the process died (exit {process.returncode})"
        return predicate()

    return check


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM `process` unless it has exited, wait for it, return its exit code. One that
    lingers past `timeout` seconds is killed and fails the test."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
        raise AssertionError(f"process {process.pid} did not stop within {timeout}s") from None
