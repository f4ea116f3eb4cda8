"""Turning OpenAI chat messages into the one prompt the studio page takes (sans-IO).

The page has one text box per turn, so a conversation is folded into a single prompt the way the
reference projects do it: the system message as a `System Instructions:` block, then `User:` /
`Assistant:` turns, separated by `---`. A lone user message goes in verbatim.
"""

from __future__ import annotations

from typing import Iterable

from bpool.protocol import ChatMessage

SEPARATOR = "\n\n---\n\n"
ROLE_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool"}


def render_prompt(messages: Iterable[ChatMessage]) -> str:
    msgs = list(messages)
    if len(msgs) == 1 and msgs[0].role == "user":
        return msgs[0].content
    system = [m.content for m in msgs if m.role == "system" and m.content.strip()]
    blocks = []
    if system:
        blocks.append("System Instructions:\n" + "\n\n".join(system))
    for m in msgs:
        if m.role == "system":
            continue
        label = ROLE_LABELS.get(m.role, m.role.capitalize() or "User")
        blocks.append(f"{label}:\n{m.content}")
    return SEPARATOR.join(blocks)
