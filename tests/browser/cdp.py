"""Drive Debian's headless Chromium over the Chrome DevTools Protocol with the `websockets` library.

Lighter than Playwright here: nothing to install or download beyond the `chromium` package, and
the handful of commands a page test needs (evaluate, wait, set a file input, screenshot).

    async with launch_chromium(video=Path("camera.y4m"), workdir=tmp) as page:
        await page.goto("http://127.0.0.1:8000/")
        await page.wait_for("window.vsod.stats.drawn > 3")
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 60  # generous: two small shared cores; not a speed assertion


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        if path := shutil.which(name):
            return path
    return None


def chromium_args(executable: str, user_data: Path, video: Path | None, window: tuple[int, int]) -> list[str]:
    args = [
        executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        # A fake camera that plays a file and is granted without a prompt.
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        # The machine's network is closed: no background calls, updates, sync or first-run pages.
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-quic", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={user_data}", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
        f"--window-size={window[0]},{window[1]}",
    ]
    if video is not None:
        args.append(f"--use-file-for-fake-video-capture={video}")
    return [*args, "about:blank"]


class PageError(RuntimeError):
    """A DevTools command failed or a script threw in the page."""


class Page:
    """One tab: commands by id, console messages and uncaught exceptions kept for failure reports."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.console: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("method") == "Runtime.consoleAPICalled":
                params = message["params"]
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
                self.console.append(f"console.{params['type']}: {text}")
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.console.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        message = await asyncio.wait_for(future, START_TIMEOUT_S)
        if "error" in message:
            raise PageError(f"{method}: {message['error'].get('message')}")
        return message["result"]

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (promises awaited), as JSON; PageError when it throws."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise PageError(f"{expression!r} threw: {details.get('exception', {}).get('description', details.get('text'))}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 120.0, poll_s: float = 0.2) -> Any:
        """Poll until the expression is truthy; its value. TimeoutError names it (plus the console)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                console = "\n".join(self.console[-20:])
                raise TimeoutError(f"{expression!r} still falsy after {timeout_s:g} s; console:\n{console}")
            await asyncio.sleep(poll_s)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(f"location.href.startsWith({json.dumps(url)}) && document.readyState === 'complete'", 60)

    async def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose files in an <input type=file>, as a user would in the file dialog."""
        found = await self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        object_id = found["result"].get("objectId")
        if object_id is None:
            raise PageError(f"no element matches {selector!r}")
        await self.send("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=object_id)

    async def screenshot(self) -> bytes:
        return base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"])

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.ws.close()


@asynccontextmanager
async def launch_chromium(workdir: Path, video: Path | None = None, executable: str | None = None,
                          window: tuple[int, int] = (1280, 900)) -> AsyncIterator[Page]:
    """Start headless Chromium (fake camera playing `video`), yield its first tab, stop it after."""
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install -y chromium)")
    user_data = workdir / "chromium-profile"
    user_data.mkdir(parents=True, exist_ok=True)
    (user_data / "DevToolsActivePort").unlink(missing_ok=True)  # a previous run's port is not ours
    log = (workdir / "chromium.log").open("wb")
    process = subprocess.Popen(chromium_args(executable, user_data, video, window), stdout=log, stderr=subprocess.STDOUT)
    page: Page | None = None
    try:
        port = await _devtools_port(user_data, process, workdir / "chromium.log")
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        target = next(t for t in targets if t.get("type") == "page")
        ws = await connect(target["webSocketDebuggerUrl"], max_size=None)
        page = Page(ws)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        yield page
    finally:
        if page is not None:
            await page.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _devtools_port(user_data: Path, process: subprocess.Popen[bytes], log: Path) -> int:
    """Chromium writes the port it picked (we asked for 0: no port races) to DevToolsActivePort."""
    marker = user_data / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if marker.exists():
            first = marker.read_text().split("\n", 1)[0].strip()
            if first.isdigit():
                return int(first)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"chromium gave no DevTools port in {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-3000:]}")
