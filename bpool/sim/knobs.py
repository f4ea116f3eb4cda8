"""Every behaviour switch of the simulator. Defaults = the real page as documented (README.md).

Knobs marked "page" are read when a page is served (a reload picks up a change); the others act
on the next request. Each has a `BPOOL_SIM_<NAME>` variable and a `--<name>` flag (cli.py), and
`POST /__sim/config` changes any of them at runtime.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
    # --- pace of the answer
    tokens_per_s: float = 50.0
    first_token_s: float = 0.2
    answer_s: float = 0.0
    split: str = "chars"
    # --- the RPC host
    quota: int = 0  # GenerateContent requests per account and model per window; 0 = unlimited
    quota_window_s: float = 60.0
    quota_kind: str = "burst"  # the quota message: "burst" (per minute) or "daily"
    require_token: bool = True  # GenerateContent must carry a token minted by a served page
    nesting: str = "nested"  # "flat": the older [chunk, ...] body
    metadata_chunk: bool = True  # the trailing [null,null,null,[id,n,n]] chunk
    errors: str = "frame"  # "frame" in a 200 body's chunk list, "bare" 200 body, "http" 4xx
    # --- the page (read when a page is served)
    region_blocked: bool = False  # serve the "Available regions" page instead of the studio
    transport: str = "xhr"  # "fetch": the older page that read the answer with fetch
    settings_panel: str = "collapsible"  # "always": the older always-visible run settings
    run_button: str = "current"  # "legacy": button[type=submit][aria-label=Run]
    prompt_box: str = "current"  # "legacy": the textarea inside ms-prompt-box
    temp_chat: str = "toggle"  # "legacy": button[data-test-incognito-toggle]; "menu": behind
    #                            "View more actions"
    welcome_dialog: bool = True  # ms-g1-welcome-dialog on a fresh profile
    cookie_bar: bool = True  # the cookie notification bar on a fresh profile
    got_it: bool = True  # a feature tip with a "Got it" button on a fresh profile
    per_user_quota: bool = True  # StreamGenerateContentPerUserQuota before each GenerateContent
    count_tokens: bool = True  # CountTokens while the prompt is edited
    autosave: bool = True  # CreatePrompt/UpdatePrompt after each answer unless temporary

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
