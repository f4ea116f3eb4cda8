"""One isolated Chromium per session: a fresh profile directory, its own process group, a CDP
port chosen by the kernel (--remote-debugging-port=0, read back from DevToolsActivePort), and
reaped on every exit path: `close()`, the host's death (PR_SET_PDEATHSIG on the browser, plus
`procs.kill_tagged` by the host's next start), a launch that fails half way.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bpool.worker import procs

_PR_SET_PDEATHSIG = 1


class LaunchError(Exception):
    """The browser did not start (the message says at which step)."""


def _die_with_parent() -> None:
    """In the child before exec: its own process group (a group kill takes its renderers too)
    and SIGKILL when the host that started it dies, even by kill -9."""
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def chromium_args(binary: str, profile_dir: Path, bind_host: str) -> list[str]:
    args = [binary, "--headless=new", f"--user-data-dir={profile_dir}",
            "--remote-debugging-port=0", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--mute-audio",
            "--password-store=basic", "--use-mock-keychain"]
    if bind_host not in ("127.0.0.1", "localhost"):
        args.append(f"--remote-debugging-address={bind_host}")
    if os.geteuid() == 0:  # Chromium refuses to run its sandbox as root
        args.append("--no-sandbox")
    return args + ["about:blank"]


@dataclass
class SessionBrowser:
    session_id: str
    proc: asyncio.subprocess.Process
    profile_dir: Path
    ws_url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def close(self, grace_s: float = 2.0) -> None:
        """SIGTERM the group, SIGKILL it after `grace_s`, wait for the browser, remove its
        profile. Safe to call twice and after the browser died by itself."""
        await asyncio.to_thread(_kill_group, self.proc.pid, grace_s)
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s + 5)
        except asyncio.TimeoutError:
            pass
        shutil.rmtree(self.profile_dir, ignore_errors=True)


def _kill_group(pid: int, grace_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


async def launch(session_id: str, *, binary: str, base_dir: Path, bind_host: str,
                 owner_tag: str, timeout_s: float) -> SessionBrowser:
    """Start the browser and wait for its CDP endpoint; LaunchError (nothing left behind) if it
    does not come up within `timeout_s`."""
    base_dir.mkdir(parents=True, exist_ok=True)
    profile_dir = Path(tempfile.mkdtemp(prefix=f"{session_id}-", dir=base_dir))
    env = {**os.environ, procs.OWNER_ENV: owner_tag}
    try:
        proc = await asyncio.create_subprocess_exec(
            *chromium_args(binary, profile_dir, bind_host), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent)
    except OSError as exc:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise LaunchError(f"cannot run {binary}: {exc.strerror}") from None
    browser = SessionBrowser(session_id, proc, profile_dir, "")
    try:
        port, path = await _devtools_port(profile_dir, proc, timeout_s)
    except BaseException:
        await browser.close(0.5)
        raise
    browser.ws_url = f"ws://{bind_host}:{port}{path}"
    return browser


async def _devtools_port(profile_dir: Path, proc: asyncio.subprocess.Process,
                         timeout_s: float) -> tuple[int, str]:
    """Chromium writes `<port>\\n/devtools/browser/<id>` once its CDP server listens."""
    marker = profile_dir / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise LaunchError(f"the browser exited at start (status {proc.returncode})")
        try:
            lines = marker.read_text().split("\n")
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/"):
                return int(lines[0]), lines[1].strip()
        except OSError:
            pass
        await asyncio.sleep(0.03)
    raise LaunchError(f"no CDP endpoint within {timeout_s:g} s")
