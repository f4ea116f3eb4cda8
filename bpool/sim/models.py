"""The simulated model catalogue: what ListModels returns and what each model's settings allow.

Thinking comes in two shapes on the real page (CJackHwang/AIstudioProxyAPI
browser_utils/page_controller_modules/thinking.py, config/selectors.py):
  * "budget" (Gemini 2.5): a "Toggle thinking mode" switch (2.5 Pro: always on), a manual-budget
    switch and a budget input with per-model limits;
  * "level" (Gemini 3): a "Thinking Level" select; 3 Pro offers Low/High, the Flash models
    Minimal/Low/Medium/High. 3.x Flash refuses MINIMAL on the wire ("Thinking level MINIMAL is
    not supported for this model", several public projects' live runs).
gemini-3.8-flash has no temperature/top-p controls (JaeWangL/AIstudioProxyAPI-EN, live 2026-09).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Thinking-level numbers in the request's thinking config: LOW/MEDIUM/HIGH from
# nexus-studio wire_types.py; MINIMAL's number is not in the evidence (assumption: 4).
LEVEL_CODES = {"minimal": 4, "low": 1, "medium": 2, "high": 3}
LEVEL_NAMES = {v: k for k, v in LEVEL_CODES.items()}


@dataclass(frozen=True)
class Model:
    id: str
    display_name: str
    description: str
    max_output_tokens: int
    thinking: str = "none"  # "none" | "budget" | "level"
    thinking_locked: bool = False  # budget models whose thinking cannot be turned off (2.5 Pro)
    thinking_default: bool = False  # the switch's default position
    budget_range: tuple[int, int] = (0, 0)
    levels: tuple[str, ...] = ()  # offered by the Thinking Level select
    refused_levels: tuple[str, ...] = ()  # offered, but the service answers INVALID_ARGUMENT
    default_level: str | None = None
    sampling: bool = True  # temperature and top-p controls exist
    search: bool = True  # "Grounding with Google Search" available (on by default)

    def public(self) -> dict:
        """What the page needs to draw the run settings (sent in the page's boot data)."""
        return {
            "name": f"models/{self.id}", "id": self.id, "display": self.display_name,
            "maxOut": self.max_output_tokens, "thinking": self.thinking,
            "thinkingLocked": self.thinking_locked, "thinkingDefault": self.thinking_default,
            "budgetMin": self.budget_range[0], "budgetMax": self.budget_range[1],
            "levels": list(self.levels), "defaultLevel": self.default_level,
            "sampling": self.sampling, "search": self.search,
        }


MODELS: tuple[Model, ...] = (
    Model("gemini-2.5-pro", "Gemini 2.5 Pro", "Our most powerful thinking model", 65536,
          thinking="budget", thinking_locked=True, thinking_default=True, budget_range=(128, 32768)),
    Model("gemini-2.5-flash", "Gemini 2.5 Flash", "Fast and intelligent model", 65536,
          thinking="budget", thinking_default=True, budget_range=(1, 24576)),
    Model("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", "Our smallest model", 65536,
          thinking="budget", thinking_default=False, budget_range=(512, 24576)),
    Model("gemini-2.0-flash", "Gemini 2.0 Flash", "The previous generation workhorse", 8192),
    Model("gemini-3-pro-preview", "Gemini 3 Pro Preview", "Reasoning first, preview", 65536,
          thinking="level", levels=("low", "high"), default_level="high"),
    Model("gemini-3.8-flash", "Gemini 3.8 Flash", "Fast frontier model", 65536,
          thinking="level", levels=("minimal", "low", "medium", "high"),
          refused_levels=("minimal",), default_level="high", sampling=False),
)


def find_model(name: str) -> Model | None:
    """`name` is "models/<id>" (what the page sends) or a bare id."""
    bare = name.removeprefix("models/")
    return next((m for m in MODELS if m.id == bare), None)


def list_models_body() -> bytes:
    """The ListModels answer: the anti-JSON-hijacking prefix, then [[entry, ...]] (docs/aistudio-page.md:
    [0] "models/<id>", [3] display name, [4] description, [6] max output tokens)."""
    entries = [
        [f"models/{m.id}", None, None, m.display_name, m.description, None,
         m.max_output_tokens, 1048576, None, 1, 0.95, 64, 2]
        for m in MODELS
    ]
    return b")]}'\n" + json.dumps([entries], ensure_ascii=False).encode()
