"""Typed keys for the front's app and request state."""

from __future__ import annotations

from aiohttp import web

from bpool.front.broker_link import BrokerLink
from bpool.front.settings import FrontSettings

SETTINGS = web.AppKey("settings", FrontSettings)
LINK = web.AppKey("link", BrokerLink)
REQUEST_ID = web.RequestKey("request_id", str)
