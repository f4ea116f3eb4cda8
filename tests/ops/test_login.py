"""`bpool login NAME`: a scripted sign-in on the simulator's sign-in page in real Chromium (the
whole command: sign-in, validation, the 0600 file, sync), the simulator's sign-in steps over
HTTP, the backup of a replaced file, and the explanation on a server without a display."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import aiohttp
import pytest

from bpool.config import EX_CONFIG, REPO_ROOT
from bpool.ops import cli, login
from bpool.sim import NEW_CHAT_PATH, SIGNIN_PATH
from bpool.sim.accounts import AccountBook, accounts_path, ensure_accounts, set_expired
from bpool.sim.knobs import Knobs
from bpool.sim.server import ThreadedSim
from bpool.sim.settings import SimSettings
from bpool.sim.signin import PASSWORD

QUIET = {"tokens_per_s": 0, "first_token_s": 0, "welcome_dialog": False, "cookie_bar": False,
         "got_it": False}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    sim_dir = tmp_path_factory.mktemp("login-sim")
    ensure_accounts(accounts_path(sim_dir), ["dora", "eve"])
    with ThreadedSim(SimSettings(port=0, dir=sim_dir, knobs=Knobs().updated(QUIET))) as s:
        yield s, sim_dir


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch) -> Path:
    """A scratch checkout (the real supervisord.conf, an empty cookies/) and a clean shell."""
    here = tmp_path / "checkout"
    (here / "cookies").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "supervisord.conf", here / "supervisord.conf")
    for name in ("BROWSER_PROFILE_DIR", "ACTIVE_AUTH_JSON_PATH", "BPOOL_SUPERVISORD_CONF",
                 "BPOOL_STUDIO_URL", "BPOOL_SIMULATOR", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    return here


def cookie_values(path: Path) -> dict[str, str]:
    return {c["name"]: c["value"] for c in json.loads(path.read_text())["cookies"]}


def test_a_scripted_sign_in_saves_a_live_private_profile_and_syncs_it(sim, checkout) -> None:
    server, sim_dir = sim
    book = AccountBook(accounts_path(sim_dir))
    set_expired(book.path, "dora")  # her old session is gone: signing in must make a new one
    old_sid = book.find("dora").sid
    seen: list[str] = []

    async def operator(page) -> None:
        """What a person does in the window, with the selectors of the live sign-in page."""
        await page.locator("#identifierId").wait_for()
        seen.append(page.url)
        await page.locator("#identifierId").fill("dora@sim.test")
        await page.keyboard.press("Enter")
        password = page.locator('input[type="password"]')
        await password.wait_for()
        await password.fill(PASSWORD)
        await page.keyboard.press("Enter")

    args = cli.build_parser().parse_args([
        "--conf", str(checkout / "supervisord.conf"), "login", "dora", "--headless",
        "--studio-url", server.url, "--timeout", "60"])
    args.human = operator
    assert args.func(args) == 0
    assert SIGNIN_PATH in seen[0]  # the studio sent the fresh browser to sign in first
    saved = checkout / "cookies" / "dora.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    account = book.find("dora")
    assert not account.expired and account.sid != old_sid
    assert cookie_values(saved)["SID"] == account.sid  # the session the simulator knows
    assert book.by_session(cookie_values(saved)["SID"]) is not None
    assert (checkout / "run" / "supervisor" / "browser-dora.conf").exists()  # synced
    assert not list((checkout / "cookies").glob("dora.json.bak*"))  # nothing was replaced


async def test_the_simulated_sign_in_steps(sim) -> None:
    server, _ = sim
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP host
        url = server.url + SIGNIN_PATH

        async def step(**form: str) -> aiohttp.ClientResponse:
            return await http.post(url, data=form, allow_redirects=False)

        async with http.get(server.url + NEW_CHAT_PATH, allow_redirects=False) as resp:
            assert resp.status == 302 and SIGNIN_PATH in resp.headers["Location"]
        async with await step(step="identifier", identifier="nobody@sim.test") as resp:
            assert "find your Google Account" in await resp.text()
        async with await step(step="identifier", identifier="eve@sim.test") as resp:
            assert 'type="password"' in await resp.text()
        async with await step(step="password", identifier="eve@sim.test", Passwd="wrong") as resp:
            assert resp.status == 200 and "Wrong password" in await resp.text()
            assert "SID" not in resp.cookies
        async with await step(step="password", identifier="eve@sim.test", Passwd=PASSWORD,
                              **{"continue": "http://elsewhere.example/steal"}) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "/steal"  # never to another host
            assert resp.cookies["SID"]["httponly"]
        async with http.get(server.url + NEW_CHAT_PATH, allow_redirects=False) as resp:
            assert resp.status == 200  # the session cookie now opens the studio


def test_a_replaced_file_is_kept_as_a_private_backup(tmp_path: Path) -> None:
    path = tmp_path / "cookies" / "dora.json"
    first = {"cookies": [{"name": "SID", "value": "one", "domain": "h", "path": "/"}],
             "origins": []}
    second = {"cookies": [{"name": "SID", "value": "two", "domain": "h", "path": "/"}],
              "origins": []}
    assert login.save(first, path) is None
    backup = login.save(second, path)
    assert backup is not None and json.loads(backup.read_text()) == first
    assert json.loads(path.read_text()) == second
    assert {stat.S_IMODE(p.stat().st_mode) for p in (path, backup)} == {0o600}
    with pytest.raises(login.LoginError, match="no Google session cookie"):
        login.check_state({"cookies": [{"name": "NID", "value": "x"}], "origins": []})


def test_without_a_display_it_explains_how_and_exits_78(checkout, capsys) -> None:
    code = cli.main(["--conf", str(checkout / "supervisord.conf"), "login", "dora"])
    err = capsys.readouterr().err
    assert code == EX_CONFIG == 78
    assert "no display" in err and "bpool login dora" in err and "ssh -X" in err
    assert "scp cookies/dora.json" in err
    assert not (checkout / "cookies" / "dora.json").exists()
