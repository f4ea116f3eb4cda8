"""The studio simulator: a local stand-in for the AI Studio chat page and its RPC host (docs/aistudio-page.md).

Two origins, as on the real site: the page (`/prompts/new_chat`, sign-in, the admin API) and a
separate RPC host on a second port that the page calls cross-origin with XMLHttpRequest and
cookies. The real browser driver runs unchanged against it. README.md lists every behaviour, its
evidence, and the knob that turns it into an older page variant.

    python -m bpool.sim [serve] [--host H] [--port P] [--rpc-port R]   # <sim dir>/url, rpc_url
    python -m bpool.sim make-profiles --out cookies/ --names alice,bob
    python -m bpool.sim expire alice@sim.test

Modules: `models` (model catalogue, ListModels), `wire` (answer bodies and stream writes, sans-IO),
`request` (the positional request body), `knobs`, `state` (quota, failures, stats, sans-IO),
`accounts`, `rpc` (the RPC host), `app` (the page origin), `admin`, `server`, `cli`.
"""

from __future__ import annotations

SERVICE = "google.internal.alkali.applications.makersuite.v1.MakerSuiteService"
RPC_PREFIX = f"/$rpc/{SERVICE}/"
GENERATE = "GenerateContent"
PER_USER_QUOTA = "StreamGenerateContentPerUserQuota"
COUNT_TOKENS = "CountTokens"
LIST_MODELS = "ListModels"
CREATE_PROMPT = "CreatePrompt"
UPDATE_PROMPT = "UpdatePrompt"
ACCEPT_TERMS = "AcceptTermsOfService"
GENERATE_PATH = RPC_PREFIX + GENERATE
LIST_MODELS_PATH = RPC_PREFIX + LIST_MODELS
NEW_CHAT_PATH = "/prompts/new_chat"
# The path carries the production sign-in host so URL checks for "accounts.google.com" match here too.
SIGNIN_PATH = "/accounts.google.com/ServiceLogin"
