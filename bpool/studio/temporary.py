"""Temporary chat: without it every prompt is saved to the account's Drive.

The page resets it on New chat and on a model switch, so the driver turns it on again after
each. The toggle is a toolbar button, or a menu item behind "View more actions". Whether it is on
shows as a "Temporary chat" indicator, a checkmark on the menu item, or the toggle's pressed /
active state (table.temporary_*). A page that offers no toggle, or never shows it on, gets a
warning, not a failed job.
"""

from __future__ import annotations

import asyncio
import logging

from bpool.studio import page_js
from bpool.studio.steps import Steps

log = logging.getLogger("bpool.driver")


def temp_args(steps: Steps) -> dict:
    t = steps.t
    return {"tempIndicator": list(t.temporary_indicator), "tempText": t.temporary_indicator_text,
            "tempCheckmark": list(t.temporary_checkmark), "tempToggle": list(t.temporary_toggle),
            "tempActive": t.temporary_active_class, "moreActions": list(t.more_actions)}


class TemporaryChat:
    def __init__(self, steps: Steps):
        self.x = steps
        self.args = temp_args(steps)
        self._warned = False

    async def _state(self, step: str) -> dict:
        return await self.x.js(step, page_js.TEMP_STATE, self.args)

    async def _wait_on(self, step: str) -> bool | None:
        """Poll until the page shows it on; the last state seen (None: cannot tell)."""
        loop = asyncio.get_running_loop()
        # Once the page has failed to confirm it, do not make every reset wait the full time.
        deadline = loop.time() + (0.3 if self._warned else min(2.0, self.x.s.control_timeout_s))
        state: bool | None = None
        while loop.time() < deadline:
            state = (await self._state(step))["on"]
            if state:
                return True
            await asyncio.sleep(0.02)
        return state

    async def ensure_on(self, step: str, known: bool | None = None) -> bool:
        """Turn temporary chat on if it is not; True when the page confirms it is on.
        `known` is the state a probe has just read (saves a round trip)."""
        if known:
            return True
        state = await self.x.js(step, page_js.TEMP_TURN_ON, self.args)
        if state["on"]:
            return True
        menu_opened = False
        if state["clicked"]:  # a showing toggle, off: it was clicked
            on = await self._wait_on(step)
        elif state["menu"]:  # the toggle is an item of the "View more actions" menu
            await self.x.js(step, page_js.CLICK_FIRST, list(self.x.t.more_actions))
            menu_opened = True
            state = await self.x.until(step, "the temporary chat menu item did not appear",
                                       lambda: self._menu_item(step),
                                       self.x.s.control_timeout_s)
            if state["on"]:
                await self._close_menu(step)
                return True
            await self.x.js(step, page_js.CLICK_FIRST, list(self.x.t.temporary_toggle))
            on = await self._wait_on(step)
        else:
            return self._give_up("the page has no temporary chat toggle")
        if on is None and menu_opened:  # the menu closed with the click: look inside again
            await self.x.js(step, page_js.CLICK_FIRST, list(self.x.t.more_actions))
            on = (await self.x.until(step, "the temporary chat menu item did not appear",
                                     lambda: self._menu_item(step),
                                     self.x.s.control_timeout_s))["on"]
        if menu_opened:
            await self._close_menu(step)
        if on:
            log.debug("temporary chat on")
            return True
        return self._give_up("temporary chat did not show as on after clicking its toggle")

    async def _menu_item(self, step: str) -> dict | None:
        state = await self._state(step)
        return state if state["toggle"] else None

    async def _close_menu(self, step: str) -> None:
        if (await self._state(step))["toggle"]:
            async with self.x.step(step):
                await self.x.page.keyboard.press("Escape")

    def _give_up(self, why: str) -> bool:
        if not self._warned:
            log.warning("%s: prompts may be saved to the account (BPOOL_TEMPORARY_CHAT=0 turns "
                        "this check off)", why)
            self._warned = True
        return False
