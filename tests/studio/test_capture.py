"""What `bpool doctor --capture` writes: page traffic with every private value removed."""

import json

from bpool.studio import capture

TOKEN = "!CQqlCm7NAAaT-qqNs_pCHZdfLW0QNy07AEABEArZ1ApXIVjlJDXQytT2d2LLlId4UVmhxqJWcJRfVC7tHJVc"
COOKIE = "g.a000kQhBRsecretCookieValue0123456789"


def request_body(prompt: str) -> str:
    # The real request's layout: [model, contents, safety settings, generation config, token, ...]
    return json.dumps(["models/gemini-2.5-flash", [[[[None, prompt]], "user"]],
                       [[None, None, 7, 4]], [None, ["6"], None, 8192, 1.0, 0.95, 64],
                       TOKEN, None, None])


def test_request_token_emails_and_secrets_are_removed_but_the_shape_stays():
    body = request_body(f"mail me at someone@example.com, my cookie is {COOKIE}")
    out = capture.redact_request(body, secrets=[COOKIE])
    assert TOKEN not in out and COOKIE not in out and "someone@example.com" not in out
    data = json.loads(out)
    assert data[0] == "models/gemini-2.5-flash"
    assert data[4] == "<token>"
    assert data[1][0][0][0][1] == "mail me at <email>, my cookie is <secret>"
    assert data[3][3] == 8192  # numbers are not private


def test_response_keeps_the_xssi_prefix_and_answer_text():
    body = ")]}'\n" + json.dumps([[["models/gemini-2.5-pro", None, None, "Gemini 2.5 Pro",
                                    "for alice@sim.test"]]])
    out = capture.redact_response(body)
    assert out.startswith(")]}'\n")
    assert json.loads(out.split("\n", 1)[1])[0][0][4] == "for <email>"


def test_a_body_cut_short_is_still_redacted_as_text():
    body = ('[[[[[[[null,"hello bob@example.org, pw hunter2hunter2"]],"model"]]],null,[1,2,3]],'
            '["v1_' + "A" * 60)
    out = capture.redact_response(body, secrets=["hunter2hunter2"])
    assert "bob@example.org" not in out and "hunter2" not in out and "A" * 60 not in out
    assert "hello <email>, pw <secret>" in out


def test_prose_and_code_are_not_mistaken_for_tokens():
    text = "def f(x):\n    return x * 2  # a perfectly ordinary line of code, not a secret token"
    assert capture.redact_response(json.dumps([[[[[[[None, text]], "model"]]]]])) == json.dumps(
        [[[[[[[None, text]], "model"]]]]], ensure_ascii=False)
