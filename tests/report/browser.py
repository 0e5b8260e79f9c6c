"""Headless Chromium for the report tests: found, or installed with apt-get as root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")


def find_chromium() -> str:
    """The browser; installs Debian's ``chromium`` when missing and root. Without one the
    test skips, except in CI (``CI=true``), where it fails."""
    found = next((shutil.which(n) for n in NAMES if shutil.which(n)), None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env,
                       capture_output=True, timeout=600)
        found = shutil.which("chromium")
    if found is None:
        message = "no chromium: install it (apt-get install chromium) to test the report"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def chromium(browser: str, page: Path, workdir: Path, *args: str,
             timeout: float = 90) -> subprocess.CompletedProcess:
    """Run headless ``browser`` on ``page`` with a fresh profile, console logged to stderr."""
    profile = workdir / f"profile-{len(list(workdir.glob('profile-*')))}"
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def console_messages(stderr: str) -> list[str]:
    """The page's console lines in Chromium's log (``CONSOLE(line)] "message", source: ...``)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
