"""Headless Chromium for the UI tests: Debian's `chromium` (scripts/ensure-chromium installs
it) driven by Playwright's Python client, with the flags this closed network needs (no
background connections to Google). Also small helpers to run a real server on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_FLAGS = [
    "--no-sandbox",  # tests may run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(path).exists(), "Chromium missing: run scripts/ensure-chromium (see README)"
    return path


@contextmanager
def browser_page(headers: dict[str, str] | None = None, size: tuple[int, int] = (1400, 900)):
    """A fresh page of a headless Chromium; `headers` go with every request it makes;
    `size` is its viewport (width, height)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            width, height = size
            context = browser.new_context(
                viewport={"width": width, "height": height}, extra_http_headers=headers or {}
            )
            yield context.new_page()
        finally:
            browser.close()


def shoot(page, path: Path) -> str:
    """Screenshot the page and return its visible text; a blank page fails the test."""
    page.screenshot(path=str(path), full_page=True)
    text = page.inner_text("body").strip()
    assert len(text) > 40, f"page {page.url} is blank (screenshot {path})"
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(cmd: list[str], url: str, log: Path, timeout: float = 120) -> Iterator[str]:
    """Run `cmd` until `url` answers (any HTTP status), yield the url, then stop it."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while True:
                assert proc.poll() is None, f"server exited: {log.read_text()[-2000:]}"
                try:
                    urllib.request.urlopen(url, timeout=5).close()
                    break
                except OSError as err:
                    if getattr(err, "code", None):  # an HTTP error status: it is up
                        break
                    assert time.time() < deadline, (
                        f"{url} did not answer: {log.read_text()[-2000:]}"
                    )
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
