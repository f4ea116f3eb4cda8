"""The studio simulator: a local site that speaks the AI Studio page contract (AISTUDIO.md).

The real browser driver runs unchanged against it: same page selectors, same `GenerateContent`
wire format read by teeing the page's own `fetch`, same `ListModels` body, same sign-in redirect for
a bad session cookie. It is the embedded default for a first run and the target of end-to-end tests.

    python -m bpool.sim [serve] [--host H] [--port P]       # serve (URL written to <sim dir>/url)
    python -m bpool.sim make-profiles --out cookies/ --names alice,bob
    python -m bpool.sim expire alice@sim.test

Modules: `wire` (sans-IO answer and stream format), `state` (sans-IO knobs, quota, failures,
stats), `accounts` (account file and cookie profiles), `app` (aiohttp shell), `cli` (entry point).
"""

from __future__ import annotations

RPC_PREFIX = "/$rpc/google.internal.alkali.applications.makersuite.v1.MakerSuiteService/"
GENERATE_PATH = RPC_PREFIX + "GenerateContent"
LIST_MODELS_PATH = RPC_PREFIX + "ListModels"
NEW_CHAT_PATH = "/prompts/new_chat"
# The path carries the production sign-in host so URL checks for "accounts.google.com" match here too.
SIGNIN_PATH = "/accounts.google.com/ServiceLogin"
