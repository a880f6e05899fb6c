"""A real headless browser for tests: the system's Chromium driven over the DevTools protocol
(websockets), recording every request the page makes.

Requests to anything but loopback go to a proxy that does not exist, so a page that needs the
internet fails here exactly as it would offline, and the record shows what it tried to fetch.
Playwright and pyppeteer would download their own browser, which a machine without internet
access cannot do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
FLAGS = (
    *HEADLESS,
    # Everything but loopback (which Chromium never proxies) goes to a closed port.
    "--proxy-server=127.0.0.1:9",
    "--remote-debugging-port=0",
)


def chromium_or_skip() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    pytest.skip("chromium is not installed (.ci/run installs it: apt-get install -y chromium)")


def run_chromium(
    profile: Path, proxy: str, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Headless Chromium once from the command line (``--dump-dom``, ``--screenshot=...``) with
    its profile in ``profile``: every request, loopback included, goes to the HTTP proxy at
    ``proxy`` (host:port), and page timers get five seconds of virtual time."""
    return subprocess.run(
        [
            chromium_or_skip(),
            *HEADLESS,
            f"--user-data-dir={profile}",
            f"--proxy-server=http://{proxy}",
            "--proxy-bypass-list=<-loopback>",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@dataclass
class PageVisit:
    """What the page did: every URL it requested, the requests that failed, and the values of
    the JavaScript expressions asked for once the page was ready."""

    requested: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)


class _Cdp:
    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._next = 0
        self.events: list[dict[str, Any]] = []

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send(json.dumps(message))
        while True:
            reply = json.loads(await self._ws.recv())
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)


async def _visit(
    ws_url: str, url: str, ready: str, expressions: dict[str, str], timeout_s: float
) -> PageVisit:
    visit = PageVisit()
    async with websockets.connect(ws_url, max_size=None) as ws:
        cdp = _Cdp(ws)
        target = await cdp.call("Target.createTarget", {"url": "about:blank"})
        attached = await cdp.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        session = attached["sessionId"]
        await cdp.call("Network.enable", session=session)
        await cdp.call("Runtime.enable", session=session)
        await cdp.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + timeout_s
        while True:
            done = await cdp.call(
                "Runtime.evaluate", {"expression": f"Boolean({ready})"}, session=session
            )
            if done.get("result", {}).get("value") is True or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        for name, expression in expressions.items():
            result = await cdp.call(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True},
                session=session,
            )
            visit.values[name] = result.get("result", {}).get("value")
        for event in cdp.events:
            params = event.get("params", {})
            if event.get("method") == "Network.requestWillBeSent":
                visit.requested.append(params["request"]["url"])
            elif event.get("method") == "Network.loadingFailed":
                visit.failed.append(params.get("errorText", ""))
            elif event.get("method") == "Runtime.exceptionThrown":
                visit.console_errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
    return visit


def visit_page(
    url: str, ready: str, expressions: dict[str, str], timeout_s: float = 30.0
) -> PageVisit:
    """Open ``url`` in headless Chromium, wait until the JavaScript ``ready`` is true (or the
    timeout), then evaluate ``expressions``."""
    binary = chromium_or_skip()
    # The profile is removed by _remove_profile once every Chromium process has exited: the
    # browser's helpers (renderer, crash handler) outlive its main process by a moment and
    # still write there, which made TemporaryDirectory's cleanup fail with ENOTEMPTY in CI.
    profile = tempfile.mkdtemp(prefix="citewell-chromium-")
    try:
        with tempfile.TemporaryFile("w+") as stderr:  # a pipe nobody reads could block it
            proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
                start_new_session=True,  # its own process group, so all of it can be stopped
                env={**os.environ, "TMPDIR": profile},  # its singleton socket dir goes too
            )
            try:
                ws_url = _devtools_url(proc, Path(profile), timeout_s)
                return asyncio.run(_visit(ws_url, url, ready, expressions, timeout_s))
            finally:
                _stop_process_group(proc)
    finally:
        _remove_profile(Path(profile))


def _stop_process_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    # Whatever of the group is left (helpers ignore SIGTERM while busy) is killed outright.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _remove_profile(profile: Path, attempts: int = 20) -> None:
    for _ in range(attempts - 1):
        try:
            shutil.rmtree(profile)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.25)  # a helper killed a moment ago may still be closing its files
    shutil.rmtree(profile, ignore_errors=True)


def _devtools_url(proc: subprocess.Popen[str], profile: Path, timeout_s: float) -> str:
    # Chromium writes the port it chose to <profile>/DevToolsActivePort (and to stderr).
    deadline = time.monotonic() + timeout_s
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        if port_file.exists():
            lines = port_file.read_text().splitlines()
            if len(lines) >= 2 and re.fullmatch(r"\d+", lines[0]):
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    raise RuntimeError("chromium did not open its DevTools port")
