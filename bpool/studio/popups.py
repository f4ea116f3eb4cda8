"""First-run popups and the terms-of-service consent.

The welcome dialog and the file-copyright notice are prevented by preferences set before the
page's scripts run (`prefs_init_script`); whatever shows anyway (welcome dialog, cookie bar,
"Got it" / "Dismiss" / "Not now" / "Skip" buttons in overlays) is dismissed within a bounded
time, each dismissal logged. A terms-of-service consent is never clicked through: it is a
failure of its own kind, `needs_consent`, for the operator to settle by hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

from bpool.studio import page_js
from bpool.studio.outcomes import StepError
from bpool.studio.steps import Steps

log = logging.getLogger("bpool.driver")
NEEDS_CONSENT = "needs_consent"


def prefs_init_script(steps: Steps) -> str:
    parts = urlsplit(steps.s.base_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return page_js.prefs_script(steps.t.pref_key, dict(steps.t.pref_flags), origin)


def consent_error(step: str, profile: str) -> StepError:
    return StepError(step, f"profile {profile or '?'}: this account has not accepted the Google "
                           "APIs Terms of Service; open AI Studio with it once and accept them",
                     NEEDS_CONSENT)


class Popups:
    def __init__(self, steps: Steps):
        self.x = steps
        t = steps.t
        self.args = {
            "consent": list(t.consent_phrases), "overlays": list(t.overlay_scopes),
            "welcome": list(t.welcome_dialog), "welcomeClose": list(t.welcome_close),
            "cookie": list(t.cookie_accept), "labels": list(t.dismiss_labels),
            "backdrop": t.backdrop, "panes": t.dialog_panes,
        }

    async def clear(self, step: str) -> list[str]:
        """Dismiss what is showing, round after round (a dismissal can reveal the next popup),
        for at most popup_timeout_s. Returns what was dismissed; what stays is logged, not
        raised: the step it gets in the way of fails and names itself."""
        dismissed: list[str] = []
        deadline = time.monotonic() + self.x.s.popup_timeout_s
        while True:
            done = await self.x.js(step, page_js.DISMISS, self.args)
            for what in done:
                log.info("dismissed a popup: %s", what)
            dismissed += done
            if not done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # let the page close it and show the next one
        return dismissed
