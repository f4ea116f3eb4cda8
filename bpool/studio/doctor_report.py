"""What `bpool doctor` shows and saves: the table of steps (pure) and the capture files.

The table: one row per step (step, result, time in ms, a one-line detail), the snapshot of a
failed step under its row, then one line saying how it went. The capture (`--capture DIR`): one
file per tapped body, redacted by capture.py, `.json` when the body is JSON (a ListModels body's
`)]}'` prefix is kept aside in the index), `.txt` when it is not (a body cut short); every file
0600 in a 0700 directory, and index.json listing each with its step, URL path and HTTP status.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from bpool import config
from bpool.studio import capture
from bpool.studio.tap import TapStream

PROG = "bpool doctor"
DETAIL_WIDTH = 200
OK, FAIL, SKIPPED = "ok", "FAIL", "skipped"
# A text or thought part of an answer chunk, `[null, "text", ...]`: the JSON string literal.
PART = re.compile(r'\[null,\s*("(?:[^"\\]|\\.)*")')


@dataclass(frozen=True)
class StepResult:
    step: str
    result: str  # OK | FAIL | SKIPPED
    ms: int | None = None
    detail: str = ""
    snapshot: str = ""  # the snapshot's path without .png/.html, for a failed step


def one_line(text: str, width: int = DETAIL_WIDTH) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def format_table(results: list[StepResult]) -> str:
    """The report: one row per step (step, result, ms, detail), the snapshot of a failed step
    under its row, and a last line saying how it went."""
    rows = [("step", "result", "ms", "detail")]
    rows += [(r.step, r.result, "-" if r.ms is None else str(r.ms), one_line(r.detail))
             for r in results]
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = " " * (sum(w) + 6)
    lines = []
    for i, row in enumerate(rows):
        lines.append(f"{row[0]:<{w[0]}}  {row[1]:<{w[1]}}  {row[2]:>{w[2]}}  {row[3]}".rstrip())
        r = results[i - 1] if i else None
        if r is not None and r.snapshot:
            lines.append(f"{indent}snapshot: {r.snapshot}.png, {r.snapshot}.html")
    lines.append(summary(results))
    return "\n".join(lines)


def summary(results: list[StepResult]) -> str:
    failed = next((r for r in results if r.result == FAIL), None)
    if failed is not None:
        return f"{PROG}: FAILED at step {failed.step!r}"
    if results and all(r.result == OK for r in results):
        return f"{PROG}: all {len(results)} steps passed"
    return f"{PROG}: incomplete"


def exit_code(results: list[StepResult]) -> int:
    return 0 if results and all(r.result == OK for r in results) else 1


def same(a: Any, b: Any) -> bool:
    return isinstance(a, (int, float)) and abs(float(a) - float(b)) < 1e-6


def pick_parameters(state: dict) -> dict[str, float | int]:
    """Values to set that differ from what the panel shows and lie inside every model's range
    (so a read-back that differs is the setter failing, not the page clamping)."""
    want: dict[str, float | int] = {}
    if state.get("temperature") is not None:
        want["temperature"] = 0.7 if same(state["temperature"], 0.5) else 0.5
    if state.get("top_p") is not None:
        want["top_p"] = 0.8 if same(state["top_p"], 0.9) else 0.9
    if state.get("max_tokens") is not None:
        now = int(state["max_tokens"])
        want["max_tokens"] = 8192 if now > 8192 else max(1, now - 1)
    return want


# ---------------------------------------------------------------------------- capture files


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of the same name may have been wider
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _body_file(directory: Path, base: str, text: str) -> str:
    """Write one redacted body; `.json` when it is JSON, else `.txt` (e.g. a body cut short)."""
    try:
        json.loads(text)
        name = base + ".json"
    except ValueError:
        name = base + ".txt"
    _write_private(directory / name, text)
    return name


def redact_across_parts(body: str, secrets: Iterable[str] = ()) -> str:
    """An answer streams in pieces of a few characters, so an e-mail address or a secret can be
    split over several parts, where capture.py (one string at a time) cannot see it. Find them in
    the parts' joined text and cut them out of every part they touch. Works on a body cut short."""
    parts = []
    for m in PART.finditer(body):
        try:
            parts.append((m.start(1), m.end(1), json.loads(m.group(1))))
        except ValueError:
            continue
    joined = "".join(text for _, _, text in parts)
    spans = [(m.start(), m.end(), "<email>") for m in capture.EMAIL.finditer(joined)]
    for secret in {v for v in secrets if v and len(v) >= 4}:
        spans += [(m.start(), m.start() + len(secret), "<secret>")
                  for m in re.finditer(re.escape(secret), joined)]
    merged: list[list] = []
    for a, b, label in sorted(spans):
        if merged and a < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b, label])
    if not merged:
        return body
    edits, start = [], 0
    for begin, end, text in parts:
        stop, out, pos = start + len(text), [], start
        for a, b, label in merged:
            if b <= start or a >= stop:
                continue
            out.append(joined[pos:max(a, start)])
            if a >= start:
                out.append(label)
            pos = min(b, stop)
        if out:
            out.append(joined[pos:stop])
            edits.append((begin, end, json.dumps("".join(out), ensure_ascii=False)))
        start = stop
    for begin, end, literal in reversed(edits):
        body = body[:begin] + literal + body[end:]
    return body


def save_capture(directory: Path, captured: Iterable[tuple[str, TapStream]],
                 secrets: Iterable[str]) -> list[dict]:
    """The tapped bodies, redacted, and index.json; returns the index entries."""
    d = config.ensure_private_dir(directory)
    secrets = tuple(secrets)
    entries = []
    for i, (step, s) in enumerate(captured, 1):
        base = f"{i:02d}-{s.kind}"
        entry: dict[str, Any] = {"step": step, "method": s.kind, "path": urlsplit(s.url).path,
                                 "status": s.status, "ended": s.done}
        if s.request_body:
            entry["request"] = _body_file(d, base + "-request",
                                          capture.redact_request(s.request_body, secrets))
        body = capture.redact_response(redact_across_parts("".join(s.text), secrets), secrets)
        if body.startswith(")]}'"):  # the anti-XSSI prefix: kept aside, so the file is JSON
            entry["prefix"], _, body = body.partition("\n")
        entry["response"] = _body_file(d, base + "-response", body)
        entries.append(entry)
    _write_private(d / "index.json", json.dumps({"version": 1, "captures": entries}, indent=1))
    return entries
