"""Finding an installed Camoufox browser by reading files only, never by a download.

camoufox's own path functions download the browser when it is missing (and may wipe an old
install), which must never happen behind an operator's back; so this reads its install
directory and the files of its multiversion layout instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def camoufox_install_dir() -> Path | None:
    """Where camoufox keeps its browsers (its INSTALL_DIR); None if the package is unusable."""
    try:
        from camoufox.pkgman import INSTALL_DIR
    except Exception:  # not installed, or an unsupported OS
        return None
    return Path(INSTALL_DIR)


def _launch_file() -> str:
    try:
        from camoufox.pkgman import LAUNCH_FILE, OS_NAME

        return LAUNCH_FILE[OS_NAME]
    except Exception:
        return "camoufox-bin"


def find_camoufox(install_dir: Path | None) -> Path | None:
    """The installed Camoufox executable, found by reading files only (never a download).

    Looks where camoufox's multiversion layout puts builds (the active one from config.json
    first, then `browsers/<repo>/<version>/`), then at the older flat layout in the root."""
    if install_dir is None or not install_dir.is_dir():
        return None
    candidates: list[Path] = []
    try:
        active = json.loads((install_dir / "config.json").read_text()).get("active_version")
        if isinstance(active, str) and active:
            candidates.append(install_dir / active)
    except (OSError, ValueError, AttributeError):
        pass
    browsers = install_dir / "browsers"
    if browsers.is_dir():
        for repo in sorted(browsers.iterdir(), reverse=True):
            if repo.is_dir():
                candidates += sorted((v for v in repo.iterdir() if v.is_dir()), reverse=True)
    candidates.append(install_dir)
    launch_file = _launch_file()
    for folder in candidates:
        exe = folder / launch_file
        if (folder / "version.json").is_file() and exe.is_file() and os.access(exe, os.X_OK):
            return exe
    return None
