"""Authentication of the embedded server: credentials, tokens and their claims, the token cookie."""

from __future__ import annotations

import base64

import jwt

from notebook_agent.server.auth import TOKEN_COOKIE


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def claims_of(token: str) -> dict:
    """What the SDK and the agent read: the claims, decoded without checking the signature."""
    return jwt.decode(token, options={"verify_signature": False})


class TestRejected:
    def test_no_authorization_is_401_20(self, raw):
        raw.http.cookies.clear()
        reply = raw.call("queues.get_default", authorization=None)
        assert (reply.status, reply.subcode) == (401, 20)

    def test_wrong_secret_is_401_22(self, raw, server):
        reply = raw.call("queues.get_default", authorization=basic(server.credentials.access_key, "wrong-secret"))
        assert (reply.status, reply.subcode) == (401, 22)

    def test_unknown_key_is_401_22(self, raw, server):
        reply = raw.call("queues.get_default", authorization=basic("NOSUCHKEY", server.credentials.secret_key))
        assert (reply.status, reply.subcode) == (401, 22)

    def test_unsupported_scheme_is_401_10(self, raw):
        reply = raw.call("queues.get_default", authorization="Digest x")
        assert (reply.status, reply.subcode) == (401, 10)

    def test_garbage_bearer_is_401_30(self, raw):
        reply = raw.call("queues.get_default", authorization="Bearer not.a.jwt")
        assert (reply.status, reply.subcode) == (401, 30)

    def test_token_signed_with_another_secret_is_401_30(self, raw, server):
        forged = jwt.encode({**claims_of(raw.token())}, "another-secret-that-is-long-enough-32b", algorithm="HS256")
        reply = raw.call("queues.get_default", authorization="Bearer " + forged)
        assert (reply.status, reply.subcode) == (401, 30)

    def test_expired_token_is_401_30(self, raw, clock):
        token = raw.ok("auth.login", {"expiration_sec": 60}, authorization=raw.basic)["token"]
        assert raw.call("queues.get_default", authorization="Bearer " + token).status == 200
        clock.advance(120)
        reply = raw.call("queues.get_default", authorization="Bearer " + token)
        assert (reply.status, reply.subcode) == (401, 30)
        # Basic credentials still work, and a fresh login gives a usable token
        fresh = raw.ok("auth.login", authorization=raw.basic)["token"]
        assert claims_of(fresh)["exp"] > claims_of(token)["exp"]


class TestAccepted:
    def test_basic_works_on_any_endpoint(self, raw):
        assert raw.ok("queues.get_default", authorization=raw.basic)["name"] == "default"

    def test_login_with_basic_returns_token(self, raw):
        data = raw.ok("auth.login", authorization=raw.basic)
        assert isinstance(data["token"], str)
        assert raw.ok("queues.get_default", authorization="Bearer " + data["token"])["name"] == "default"

    def test_login_with_bearer_refreshes(self, raw):
        token = raw.ok("auth.login", authorization="Bearer " + raw.token())["token"]
        assert raw.call("queues.get_default", authorization="Bearer " + token).status == 200

    def test_token_claims(self, raw, server):
        claims = claims_of(raw.token())
        assert claims["api_version"] == "2.34"
        assert claims["feature_set"] == "basic"
        assert claims["server_version"]
        assert claims["identity"]["company"] == server.backend.company
        assert claims["identity"]["user"] == server.backend.user
        assert isinstance(claims["exp"], int)
        assert claims["exp"] > claims["iat"]

    def test_default_expiration_is_30_days(self, raw):
        claims = claims_of(raw.ok("auth.login", authorization=raw.basic)["token"])
        assert claims["exp"] - claims["iat"] == 30 * 24 * 3600

    def test_expiration_is_capped_at_one_year(self, raw):
        token = raw.ok("auth.login", {"expiration_sec": 10 * 365 * 24 * 3600}, authorization=raw.basic)["token"]
        claims = claims_of(token)
        assert claims["exp"] - claims["iat"] == 365 * 24 * 3600


class TestOpenEndpoints:
    def test_debug_ping_needs_no_auth(self, raw):
        data = raw.ok("debug.ping", {"echo": "me"}, authorization=None)
        assert data["msg"] == "ClearML server"
        assert data["echo"] == "me"

    def test_server_info_needs_auth(self, raw):
        raw.http.cookies.clear()
        reply = raw.call("server.info", authorization=None)
        assert (reply.status, reply.subcode) == (401, 20)

    def test_server_info_returns_api_version(self, raw):
        data = raw.ok("server.info")
        assert data["api_version"] == "2.34"
        assert data["version"]
        assert "build" in data
        assert "commit" in data


class TestCookie:
    def test_login_sets_cookie_that_authenticates(self, raw):
        raw.http.cookies.clear()
        assert raw.call("queues.get_default", authorization=None).status == 401
        token = raw.ok("auth.login", authorization=raw.basic)["token"]
        assert raw.http.cookies.get(TOKEN_COOKIE) == token
        assert raw.ok("queues.get_default", authorization=None)["name"] == "default"

    def test_header_wins_over_cookie(self, raw):
        raw.token()  # sets a valid cookie on the session
        assert raw.http.cookies.get(TOKEN_COOKIE)
        reply = raw.call("queues.get_default", authorization="Bearer garbage")
        assert (reply.status, reply.subcode) == (401, 30)
