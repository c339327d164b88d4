"""Secrets the daemon keeps for providers: set, list (names only), delete; 0600 on disk, never
returned or logged; session tokens cannot reach them."""

from __future__ import annotations

import json
import stat

from llmgine_daemon.api.keys import SETTINGS

from tests.conftest import assert_documented, assert_envelope, create_session

VALUE = "sk-secret-value-never-shown"


async def test_set_list_delete(app_client):
    resp = await app_client.put("/api/secrets/OPENAI_API_KEY", json={"value": VALUE})
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "OPENAI_API_KEY" and body["updated_at"] and VALUE not in json.dumps(body)
    listing = await (await app_client.get("/api/secrets")).json()
    assert [s["name"] for s in listing["secrets"]] == ["OPENAI_API_KEY"] and listing["total"] == 1
    assert VALUE not in json.dumps(listing)
    path = app_client.app[SETTINGS].paths.config_dir / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    resp = await app_client.delete("/api/secrets/OPENAI_API_KEY")
    assert resp.status == 204
    resp = await app_client.delete("/api/secrets/OPENAI_API_KEY")
    assert_envelope(await resp.json(), "NOT_FOUND")
    assert (await (await app_client.get("/api/secrets")).json())["total"] == 0


async def test_bad_names_and_values_are_refused_without_echoing_the_value(app_client):
    for name in ("lower", "9LEADING", "A" * 65, "WITH-DASH"):
        resp = await app_client.put(f"/api/secrets/{name}", json={"value": "x"})
        assert resp.status == 422, name
    resp = await app_client.put("/api/secrets/GOOD", json={"value": "line\nbreak" + VALUE})
    assert resp.status == 422
    assert VALUE not in await resp.text()
    resp = await app_client.put("/api/secrets/GOOD", json={"value": ""})
    assert resp.status == 422


async def test_a_session_token_cannot_reach_secrets(make_client):
    client = await make_client(API_KEY_SECRET="k" * 32)
    session = await create_session(client)
    token = {"X-Session-Token": session["session_token"]}
    client.session.headers.pop("Authorization", None)
    for method, path, body in (
        ("GET", "/api/secrets", None),
        ("PUT", "/api/secrets/OPENAI_API_KEY", {"value": "x"}),
        ("DELETE", "/api/secrets/OPENAI_API_KEY", None),
    ):
        resp = await client.request(method, path, json=body, headers=token)
        assert resp.status == 403, (method, path, await resp.text())


async def test_an_unreadable_secrets_file_is_never_written_over(app_client):
    # A secrets file cut short (a crash or power loss while it was written, a hand edit) was
    # read as "no secrets": the listing was empty, and the next set wrote the file over with
    # only the new secret, every other one gone for good. It is refused and left as it is.
    assert (await app_client.put("/api/secrets/OPENAI_API_KEY", json={"value": VALUE})).status == 200
    path = app_client.app[SETTINGS].paths.config_dir / "secrets.json"
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    for method, url, body in (
        ("PUT", "/api/secrets/ANTHROPIC_API_KEY", {"value": "another"}),
        ("GET", "/api/secrets", None),
        ("DELETE", "/api/secrets/OPENAI_API_KEY", None),
    ):
        resp = await app_client.request(method, url, json=body)
        assert resp.status == 409, (method, await resp.text())
        text = await resp.text()
        assert_envelope(json.loads(text), "CONFLICT")
        assert "secrets.json" in text and VALUE not in text
        # ... and the document says so (it listed no 409 for the listing and the delete).
        await assert_documented(
            app_client,
            method,
            url.replace("OPENAI_API_KEY", "{secret}").replace("ANTHROPIC_API_KEY", "{secret}"),
            409,
            "CONFLICT",
        )
    assert path.read_text() == whole[: len(whole) // 2]  # untouched: it can still be repaired
    path.write_text(whole)
    listing = await (await app_client.get("/api/secrets")).json()
    assert [s["name"] for s in listing["secrets"]] == ["OPENAI_API_KEY"]
