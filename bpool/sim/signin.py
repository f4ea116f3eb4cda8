"""The simulated Google sign-in (`/accounts.google.com/ServiceLogin`): e-mail, then password, then
the session cookies and a redirect back to the page that sent the browser here.

Modelled on what the public evidence shows of the live flow (docs/aistudio-page.md; iBUHub's
`scripts/auth/saveAuth.js`): the studio redirects a browser without a live session to
`accounts.google.com` ("Sign in - Google Accounts"); the e-mail box is `#identifierId`, Enter
(or `#identifierNext`) leads to a step with `input[type="password"]`, Enter (or `#passwordNext`)
signs in, and the browser ends up on AI Studio, logged in. Assumptions (README.md): the steps
are plain form posts to the same path (the live flow runs them in page scripts under
`/v3/signin/...`); there is no second factor or risk challenge; every account's password is
`PASSWORD`; signing in to a live account keeps its session, an expired one gets a new one.
"""

from __future__ import annotations

import html
import secrets
from urllib.parse import urlsplit

from aiohttp import web

from bpool.sim import NEW_CHAT_PATH, SIGNIN_PATH
from bpool.sim.accounts import COOKIE_NAMES, SESSION_COOKIE, ensure_accounts
from bpool.sim.context import shared

PASSWORD = "sim-password"
COOKIE_MAX_AGE_S = 180 * 86400  # the same lifetime make-profiles gives its cookie files
HEADERS = {"Cache-Control": "no-store"}

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - Google Accounts</title></head>
<body>
<h1>{heading}</h1>
<p>to continue to Google AI Studio (simulated)</p>
{error}
<form method="post" action="{action}">
<input type="hidden" name="continue" value="{cont}">
{fields}
</form>
<p><small>A local simulator: accounts come from <code>python -m bpool.sim make-profiles</code>;
every password is <code>{password}</code>.</small></p>
</body>
</html>
"""

_IDENTIFIER = """<input type="hidden" name="step" value="identifier">
<input type="email" id="identifierId" name="identifier" aria-label="Email or phone"
 autocomplete="username" autofocus value="{who}">
<div id="identifierNext"><button type="submit">Next</button></div>"""

_PASSWORD = """<input type="hidden" name="step" value="password">
<input type="hidden" name="identifier" value="{who}">
<p id="profileIdentifier">{who}</p>
<input type="password" name="Passwd" aria-label="Enter your password"
 autocomplete="current-password" autofocus>
<div id="passwordNext"><button type="submit">Next</button></div>"""


def safe_continue(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    parts = urlsplit(value or "")
    path = parts.path if parts.path.startswith("/") and not parts.path.startswith("//") else ""
    if not path:
        return NEW_CHAT_PATH
    return path + (f"?{parts.query}" if parts.query else "")


def _render(step: str, cont: str, who: str = "", error: str = "", status: int = 200
            ) -> web.Response:
    fields = (_IDENTIFIER if step == "identifier" else _PASSWORD).format(who=html.escape(who))
    body = _PAGE.format(
        heading="Sign in" if step == "identifier" else "Welcome",
        error=f'<p role="alert" class="error">{html.escape(error)}</p>' if error else "",
        action=SIGNIN_PATH, cont=html.escape(cont), fields=fields, password=PASSWORD)
    return web.Response(text=body, content_type="text/html", status=status, headers=HEADERS)


async def signin_page(request: web.Request) -> web.Response:
    return _render("identifier", safe_continue(request.query.get("continue")))


async def signin_step(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    cont = safe_continue(str(form.get("continue", "")))
    who = str(form.get("identifier", "")).strip()
    sh = shared(request)
    account = sh.book.find(who) if who else None
    if account is None:
        return _render("identifier", cont, who, "Couldn't find your Google Account", 200)
    if form.get("step") != "password":
        return _render("password", cont, account.email)
    if str(form.get("Passwd", "")) != PASSWORD:
        return _render("password", cont, account.email,
                       "Wrong password. Try again or click Forgot password to reset it.")
    (fresh,) = ensure_accounts(sh.book.path, [account.name])  # an expired one: a new session
    resp = web.HTTPFound(cont, headers=HEADERS)
    for name in COOKIE_NAMES:
        # Host-only cookies for the sim's host, like make-profiles writes them. "__Secure-"
        # ones need https, so a browser on plain http drops them; only SID decides who you are.
        resp.set_cookie(name, fresh.sid if name == SESSION_COOKIE else secrets.token_urlsafe(24),
                        max_age=COOKIE_MAX_AGE_S, path="/", samesite="Lax",
                        httponly=name not in ("APISID", "SAPISID"),
                        secure=name.startswith("__Secure-"))
    raise resp


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(SIGNIN_PATH, signin_page)
    r.add_post(SIGNIN_PATH, signin_step)
    r.add_get("/signin", signin_page)
