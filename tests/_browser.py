"""A real headless Chromium driven over the DevTools protocol on a pipe (stdlib only, no driver package).

`load_page(path)` opens a local HTML file, waits for its load event and returns the console errors, page
exceptions and failed loads it saw, the images that did not load, and a PNG screenshot of the whole page.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

# every <img> that finished with pixels; a broken one is complete with naturalWidth 0
IMAGES_JS = ("JSON.stringify({total: document.images.length, broken: Array.from(document.images)"
             ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 80))})")


def find_chromium() -> str | None:
    """The first Chromium-like executable on PATH, or None."""
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed requests
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    screenshot: bytes = b""


class _Pipe:
    """CDP over --remote-debugging-pipe: the browser reads commands on fd 3, writes replies on fd 4."""

    def __init__(self, exe: str, profile: str) -> None:
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def wire() -> None:  # in the child: its fd 3 and 4 become our pipes' ends (via copies, in case
            a, b = os.dup(to_r), os.dup(from_w)  # a pipe end already sits on 3 or 4)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(args, pass_fds=(3, 4, to_r, from_w), preexec_fn=wire,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            chunk = os.read(self._from_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(f"no {method} within {timeout}s")
            self.events.append(self._read())

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # already gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_w)
        os.close(self._from_r)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            found.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            found.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"load failed: {p.get('errorText')}")
    return found


def load_page(path: Path, exe: str, width: int = 1200, timeout: float = 60.0) -> PageLoad:
    """Open `path` in headless Chromium and report what a reader's browser would (see the module doc)."""
    with tempfile.TemporaryDirectory() as profile:
        cdp = _Pipe(exe, profile)
        try:
            target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
            session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                cdp.call(f"{domain}.enable", session)
            cdp.call("Emulation.setDeviceMetricsOverride", session, width=width, height=900, deviceScaleFactor=1,
                     mobile=False)
            cdp.call("Page.navigate", session, url=path.resolve().as_uri())
            cdp.wait_for("Page.loadEventFired", timeout)
            res = cdp.call("Runtime.evaluate", session, expression=IMAGES_JS, returnByValue=True)
            images = json.loads(res["result"]["value"])
            shot = cdp.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
            return PageLoad(_errors(cdp.events), images["total"], images["broken"], base64.b64decode(shot["data"]))
        finally:
            cdp.close()
