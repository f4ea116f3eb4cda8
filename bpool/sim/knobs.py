"""Every behaviour switch of the simulator. Defaults = the real page as documented (README.md).

Knobs marked "page" are read when a page is served (a reload picks up a change); the others act
on the next request. Each has a `BPOOL_SIM_<NAME>` variable and a `--<name>` flag (cli.py), and
`POST /__sim/config` changes any of them at runtime.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bpool import config
from bpool.sim.wire import NESTINGS, SPLIT_MODES, Pace

CHOICES: dict[str, tuple[str, ...]] = {
    "split": SPLIT_MODES,
    "nesting": NESTINGS,
    "errors": ("frame", "bare", "http"),
    "quota_kind": ("burst", "daily"),
    "transport": ("xhr", "fetch"),
    "settings_panel": ("collapsible", "always"),
    "run_button": ("current", "legacy"),
    "prompt_box": ("current", "legacy"),
    "temp_chat": ("toggle", "legacy", "menu"),
}
PAGE_KNOBS = ("transport", "settings_panel", "run_button", "prompt_box", "temp_chat",
              "welcome_dialog", "cookie_bar", "got_it", "per_user_quota", "count_tokens",
              "autosave", "region_blocked")


@dataclass(frozen=True)
class Knobs:
    """Defaults and meanings: the BPOOL_SIM_* entries of bpool.config.REGISTRY."""

    # --- pace of the answer
    tokens_per_s: float = config.default("BPOOL_SIM_TOKENS_PER_S")
    first_token_s: float = config.default("BPOOL_SIM_FIRST_TOKEN_S")
    answer_s: float = config.default("BPOOL_SIM_ANSWER_S")
    split: str = config.default("BPOOL_SIM_SPLIT")
    # --- the RPC host
    quota: int = config.default("BPOOL_SIM_QUOTA")
    quota_window_s: float = config.default("BPOOL_SIM_QUOTA_WINDOW_S")
    quota_kind: str = config.default("BPOOL_SIM_QUOTA_KIND")
    require_token: bool = config.default("BPOOL_SIM_REQUIRE_TOKEN")
    nesting: str = config.default("BPOOL_SIM_NESTING")
    metadata_chunk: bool = config.default("BPOOL_SIM_METADATA_CHUNK")
    errors: str = config.default("BPOOL_SIM_ERRORS")
    # --- the page (read when a page is served)
    region_blocked: bool = config.default("BPOOL_SIM_REGION_BLOCKED")
    transport: str = config.default("BPOOL_SIM_TRANSPORT")
    settings_panel: str = config.default("BPOOL_SIM_SETTINGS_PANEL")
    run_button: str = config.default("BPOOL_SIM_RUN_BUTTON")
    prompt_box: str = config.default("BPOOL_SIM_PROMPT_BOX")
    temp_chat: str = config.default("BPOOL_SIM_TEMP_CHAT")
    welcome_dialog: bool = config.default("BPOOL_SIM_WELCOME_DIALOG")
    cookie_bar: bool = config.default("BPOOL_SIM_COOKIE_BAR")
    got_it: bool = config.default("BPOOL_SIM_GOT_IT")
    per_user_quota: bool = config.default("BPOOL_SIM_PER_USER_QUOTA")
    count_tokens: bool = config.default("BPOOL_SIM_COUNT_TOKENS")
    autosave: bool = config.default("BPOOL_SIM_AUTOSAVE")

    @property
    def pace(self) -> Pace:
        return Pace(self.tokens_per_s, self.first_token_s, self.answer_s, self.split)

    def page(self) -> dict:
        """The knobs the page itself reads (sent in its boot data); the page parses the answer
        with the nesting it was served with."""
        return {k: getattr(self, k) for k in PAGE_KNOBS + ("nesting",)}

    def updated(self, changes: dict) -> Knobs:
        """A copy with `changes` applied; ValueError names the first bad field."""
        current = dataclasses.asdict(self)
        for key, value in changes.items():
            if key not in current:
                raise ValueError(f"unknown knob {key!r}")
            kind = type(current[key])
            if kind is bool:
                if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
                    value = value.lower() in ("1", "true", "yes")
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
            elif kind in (int, float):
                if isinstance(value, str):
                    try:
                        value = float(value)
                    except ValueError:
                        raise ValueError(f"{key} must be a number >= 0") from None
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"{key} must be a number >= 0")
                value = kind(value)
            elif value not in CHOICES[key]:
                raise ValueError(f"{key} must be one of {', '.join(CHOICES[key])}")
            current[key] = value
        return Knobs(**current)


def knob_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Knobs)]
