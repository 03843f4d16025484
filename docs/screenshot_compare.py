"""Regenerate docs/mlflow-compare.png: the MLflow compare view of the `quick` study, accuracy by factor level.

    python -m harness run studies/quick.yaml && python -m harness report studies/quick.yaml
    mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --port 5000 &
    python docs/screenshot_compare.py [--url http://127.0.0.1:5000] [--out docs/mlflow-compare.png]

Drives headless Chromium (`/usr/bin/chromium`) over the DevTools protocol: opens the compare view of the
study's training runs, closes the assistant panel, and picks Box Plot with x = factor.augmentation.enabled and
y = accuracy. Needs aiohttp (installed with MLflow). Not part of the package or the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import aiohttp


def rest(url: str, endpoint: str, body: dict | None = None) -> dict:
    if body is None:
        with urllib.request.urlopen(f"{url}{endpoint}", timeout=30) as resp:
            return json.load(resp)
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{url}{endpoint}", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


def by_text(text: str, selector: str = "*") -> str:
    """JS for the smallest visible element matching `selector` whose text is exactly `text`."""
    return (
        f"[...document.querySelectorAll({json.dumps(selector)})]"
        f".filter(e => e.innerText && e.innerText.trim() === {json.dumps(text)} && e.offsetParent !== null)"
        ".sort((a, b) => b.innerText.length - a.innerText.length).pop()"
    )


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws, self.next_id = ws, 0

    async def cmd(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        result = await self.cmd("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, js_element: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not await self.js(f"!!({js_element})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not found: {js_element}")
            await asyncio.sleep(0.3)

    async def click(self, js_element: str) -> None:
        """A real mouse press and release on the element (the UI's tabs and selects ignore element.click())."""
        await self.wait_for(js_element)
        x, y = await self.js(
            f"(() => {{ const e = {js_element}; e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.cmd("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        await asyncio.sleep(0.7)


async def capture(url: str, out: str, width: int, height: int) -> None:
    experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=quick")["experiment"]
    found = rest(
        url,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": "tags.`harness.role` = 'training'"},
    )
    ids = [r["info"]["run_id"] for r in sorted(found["runs"], key=lambda r: r["info"]["run_name"])]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([experiment["experiment_id"]])})

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="chromium-")
    command = [
        shutil.which("chromium") or "/usr/bin/chromium",
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1", "about:blank",
    ]  # fmt: skip
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                targets = rest(f"http://127.0.0.1:{port}", "/json/list")
                ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.2)
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            page = Page(ws)
            await page.cmd("Page.enable")
            await page.cmd(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
            await page.cmd("Page.navigate", url=f"{url}/#/compare-runs?{query}")
            await page.wait_for(by_text("Box Plot", "button"))
            close = "[...document.querySelectorAll('button')].find(e => e.getAttribute('aria-label') === 'Close')"
            if await page.js(f"!!({close})"):
                await page.click(close)  # the assistant panel
            await page.click(by_text("Box Plot", "button"))
            axes = (
                "[...document.querySelectorAll('[role=tabpanel]')].find(p => p.innerText.includes('X-axis'))"
                ".querySelectorAll('[role=combobox]')[{}]"
            )
            await page.click(axes.format(0))
            await page.click(by_text("factor.augmentation.enabled", "[role=option]"))
            await page.click(axes.format(1))
            await page.click(by_text("accuracy", "[role=option]"))
            await page.js("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; })")
            await asyncio.sleep(2)
            shot = await page.cmd("Page.captureScreenshot", format="png")
        with open(out, "wb") as fh:
            fh.write(base64.b64decode(shot["data"]))
        print(out)
    finally:
        browser.terminate()
        browser.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--out", default="docs/mlflow-compare.png")
    parser.add_argument("--size", default="1500x1000", help="viewport WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    asyncio.run(capture(args.url.rstrip("/"), args.out, width, height))


if __name__ == "__main__":
    main()
