"""Who may do what (issue 19): the API token, the start-up decision, read-only mode, same-origin
writes, trusted Host headers, body limits and the SAE import folders, each over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import SecretStr

from loupe.security import PURE_ANALYSES, RefuseToStart, resolve_auth
from tests.conftest import running_server

TOKEN = "test-token-0123456789abcdef"
PROMPT = "User: How do I bake bread at home?\nAssistant:"
GEN = {"prompt": PROMPT, "max_new_tokens": 3, "temperature": 0}


def app_with(container, **overrides):
    from loupe.app import create_app

    return create_app(container.settings.model_copy(update=overrides), container=container, background=False)


def client_of(container, **overrides) -> TestClient:
    return TestClient(app_with(container, **overrides), base_url="http://localhost:8000")


@pytest.fixture(scope="module")
def secured(micro_container):
    with client_of(micro_container, token=SecretStr(TOKEN)) as c:
        yield c


@pytest.fixture(scope="module")
def read_only(micro_container):
    with client_of(micro_container, read_only=True) as c:
        yield c


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the token ---------------------------------------------------------------------------------------------


def test_with_a_token_every_api_request_needs_it(secured):
    r = secured.get("/api/models")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in r.json()["detail"]
    r = secured.get("/api/models", headers=bearer("not-the-token-at-all-0000"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert secured.get("/api/models", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert secured.get("/api/models", headers=bearer()).status_code == 200
    assert secured.get("/api/models", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    # writes and analyses too, before anything else is looked at
    assert secured.delete("/api/vectors/demo-refusal").status_code == 401
    assert secured.post("/api/generate", json=GEN).status_code == 401
    assert secured.get("/api/no-such-endpoint").status_code == 401
    # the health probe and the web page itself stay open (the page asks for the token)
    assert secured.get("/api/health").status_code == 200
    assert secured.get("/").status_code != 401
    assert secured.get("/docs").status_code == 200


def test_the_streaming_endpoint_works_with_the_token(secured):
    assert secured.post("/api/generate/stream", json=GEN).status_code == 401
    with secured.stream("POST", "/api/generate/stream", json=GEN, headers=bearer()) as r:
        assert r.status_code == 200
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    plain = secured.post("/api/generate", json=GEN, headers=bearer()).json()
    assert events[-1]["default"]["completion"] == plain["default"]["completion"]


def test_tokens_are_compared_in_constant_time(secured, monkeypatch):
    import loupe.security as security

    seen = []

    def spy(a, b):
        seen.append((a, b))
        return a == b

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert secured.get("/api/models", headers=bearer("wrong-token-of-some-length")).status_code == 401
    assert seen == [(b"wrong-token-of-some-length", TOKEN.encode())]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_hosts_need_no_token(host, tmp_path):
    from loupe.settings import Settings

    auth = resolve_auth(Settings(workspace=tmp_path, host=host))
    assert auth.token is None and auth.source == "loopback"
    assert not (tmp_path / "api-token").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "loupe.lab.example"])
def test_a_non_loopback_host_gets_a_token_file_on_first_start(host, tmp_path, micro_container):
    from loupe.cli import announce
    from loupe.cli.console import console
    from loupe.settings import Settings

    settings = Settings(workspace=tmp_path, host=host)
    first = resolve_auth(settings)
    path = tmp_path / "api-token"
    assert first.source == "generated" and first.path == path and len(first.token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first.token
    with console.capture() as out:
        announce(settings, first)
    assert first.token in out.get()  # printed once...
    again = resolve_auth(settings)
    assert (again.source, again.token) == ("file", first.token)
    with console.capture() as out:
        announce(settings, again)
    assert first.token not in out.get() and str(path) in out.get()  # ...and never again
    # a server on that host asks for it (its Host headers: the allowed ones)
    with client_of(micro_container, host=host, workspace=tmp_path) as c:
        assert c.get("/api/models").status_code == 401
        assert c.get("/api/models", headers=bearer(first.token)).status_code == 200


def test_a_non_loopback_host_without_a_usable_token_refuses_to_start(tmp_path):
    from loupe.settings import Settings

    # the token file is readable by others: refused, not used
    (tmp_path / "api-token").write_text("x" * 40)
    os.chmod(tmp_path / "api-token", 0o644)
    with pytest.raises(RefuseToStart) as exc:
        resolve_auth(Settings(workspace=tmp_path, host="0.0.0.0"))
    msg = str(exc.value)
    assert "LOUPE_HOST=0.0.0.0 is not a loopback address" in msg and "chmod 600" in msg
    assert "LOUPE_TOKEN" in msg and "--insecure-no-auth" in msg
    # the token file is a symlink (to a file anyone may have written)
    (tmp_path / "api-token").unlink()
    (tmp_path / "elsewhere").write_text("y" * 40)
    (tmp_path / "api-token").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RefuseToStart):
        resolve_auth(Settings(workspace=tmp_path, host="0.0.0.0"))
    # a short LOUPE_TOKEN is refused on any host
    with pytest.raises(RefuseToStart, match="at least 16"):
        resolve_auth(Settings(workspace=tmp_path, token="short"))
    # unless the person says so in as many words
    auth = resolve_auth(Settings(workspace=tmp_path, host="0.0.0.0", insecure_no_auth=True))
    assert (auth.token, auth.source) == (None, "insecure")
    # LOUPE_TOKEN wins, and an empty one means unset (docker-compose passes ${LOUPE_TOKEN:-})
    assert resolve_auth(Settings(workspace=tmp_path, host="0.0.0.0", token=TOKEN)).token == TOKEN
    assert Settings(workspace=tmp_path, token="").token is None


def test_the_cli_refuses_with_the_reason_and_takes_insecure_no_auth(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import loupe.cli as cli

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    env = {"LOUPE_HOST": "0.0.0.0", "LOUPE_WORKSPACE": str(not_a_dir / "ws")}
    r = CliRunner().invoke(cli.app, ["serve"], env=env)
    assert r.exit_code == 2
    assert "Loupe will not start" in r.output and "--insecure-no-auth" in r.output
    served = []
    monkeypatch.setattr(cli, "_serve", lambda settings, auth: served.append(auth))
    r = CliRunner().invoke(cli.app, ["serve", "--insecure-no-auth"], env=env)
    assert r.exit_code == 0 and [a.source for a in served] == ["insecure"]


# -- read-only mode ------------------------------------------------------------------------------------------


def _concrete(path: str) -> str:
    for name, value in (("{sae_id}", "demo-mlp0"), ("{index}", "1"), ("{job_id}", "1")):
        path = path.replace(name, value)
    return path.replace("{vector_id}", "demo-refusal").replace("{dataset_id}", "demo-corpus")


def test_read_only_refuses_every_write_route_but_the_listed_analyses(read_only):
    routes = [
        (m, r.path_format)
        for r in iter_route_contexts(read_only.app.routes)
        if isinstance(r.original_route, APIRoute)
        for m in r.methods - {"GET", "HEAD"}
    ]
    assert len(routes) >= 15 and PURE_ANALYSES <= set(routes)  # the list names real routes
    for method, template in routes:
        r = read_only.request(method, _concrete(template), json={})
        if (method, template) in PURE_ANALYSES:
            assert r.status_code != 403, (method, template, r.text)
        else:
            assert r.status_code == 403, (method, template, r.text)
            assert "read-only" in r.json()["detail"]


def test_a_new_post_route_is_a_write_by_default(micro_container):
    app = app_with(micro_container, read_only=True)
    app.router.routes.insert(0, APIRoute("/api/something-new", lambda: {"ok": True}, methods=["POST"]))
    with TestClient(app) as c:
        assert c.post("/api/something-new", json={}).status_code == 403


def test_read_only_serves_reads_and_analyses_and_changes_nothing(read_only, client):
    label = client.get("/api/saes/demo-mlp0/features/3").json()["label"]
    assert read_only.get("/api/saes/demo-mlp0/features/3").status_code == 200
    assert read_only.get("/api/jobs").status_code == 200
    assert read_only.post("/api/generate", json=GEN).json() == client.post("/api/generate", json=GEN).json()
    with read_only.stream("POST", "/api/generate/stream", json=GEN) as r:
        assert r.status_code == 200 and b'"done"' in r.read()
    # steering without saving anything
    steered = {**GEN, "interventions": [{"kind": "ablate_direction", "vector_id": "demo-refusal"}]}
    assert read_only.post("/api/generate", json=steered).json()["steered"] is not None
    assert read_only.post("/api/steering/next-token", json={"prompt": PROMPT}).status_code == 200
    assert read_only.post("/api/saes/demo-mlp0/activations", json={"text": "hello there"}).status_code == 200
    assert read_only.post("/api/jacobian/layer", json={"prompt": PROMPT}).status_code == 200
    # writes and job starts are refused, and nothing changed
    r = read_only.put("/api/saes/demo-mlp0/features/3/label", json={"label": "vandalised"})
    assert r.status_code == 403 and "LOUPE_READ_ONLY" in r.json()["detail"]
    assert client.get("/api/saes/demo-mlp0/features/3").json()["label"] == label
    n_jobs = len(client.get("/api/jobs").json()["jobs"])
    assert read_only.post("/api/jacobian/runs", json={}).status_code == 403
    assert read_only.delete("/api/vectors/demo-refusal").status_code == 403
    assert len(client.get("/api/jobs").json()["jobs"]) == n_jobs
    assert client.get("/api/vectors/demo-refusal").status_code == 200


# -- same-origin writes, Host headers, CORS -------------------------------------------------------------------


def test_a_body_that_is_not_json_gets_415(client):
    before = client.get("/api/vectors/demo-refusal").json()
    # the attack: a cross-site "simple" request with text/plain, here without its Origin
    r = client.post(
        "/api/vectors/import?name=refusal&id=demo-refusal", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415 and "application/octet-stream" in r.json()["detail"]
    assert client.get("/api/vectors/demo-refusal").json() == before
    body = json.dumps(GEN).encode()
    assert client.post("/api/generate", content=body, headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/api/generate", content=body).status_code == 415  # a body with no type
    r = client.post("/api/generate", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200
    form = client.post("/api/generate", data={"prompt": PROMPT})  # a form post
    assert form.status_code == 415
    # a request without a body needs no type
    assert client.delete("/api/vectors/no-such-vector").status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost:9999"},  # another port is another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_cross_site_writes_get_403(client, headers):
    r = client.put("/api/saes/demo-mlp0/features/4/label", json={"label": "from elsewhere"}, headers=headers)
    assert r.status_code == 403 and "may not change this server" in r.json()["detail"]
    assert client.get("/api/saes/demo-mlp0/features/4").json()["label"] != "from elsewhere"
    # the multipart upload keeps its own type but not its origin
    files = {"file": ("d.jsonl", b'{"text": "a"}\n')}
    assert client.post("/api/datasets", files=files, data={"id": "xsite"}, headers=headers).status_code == 403
    # reads are not writes (and without CORS headers the page cannot read the answer)
    r = client.get("/api/models", headers=headers)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_same_origin_writes_pass(client):
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    r = client.post("/api/saes/demo-mlp0/activations", json={"text": "hello"}, headers=same)
    assert r.status_code == 200
    files = {"file": ("d.jsonl", b'{"text": "a"}\n{"text": "b"}\n')}
    r = client.post("/api/datasets", files=files, data={"id": "same-origin-upload"}, headers=same)
    assert r.status_code == 201, r.text
    assert client.delete("/api/datasets/same-origin-upload").status_code == 204


def test_cors_stays_closed(client):
    r = client.options(
        "/api/generate", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers


def test_a_foreign_host_header_gets_400(micro_container):
    with client_of(micro_container, allowed_hosts=None) as c:  # the defaults: bind host and loopback names
        for host in ("localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST", "127.0.0.1"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "testserver", "localhost.evil.example", "a@localhost"):
            r = c.get("/api/health", headers={"Host": host})
            assert r.status_code == 400, host
            assert "LOUPE_ALLOWED_HOSTS" in r.json()["detail"]
        assert c.get("/", headers={"Host": "evil.example"}).status_code == 400  # the page too: DNS rebinding
    with client_of(micro_container, allowed_hosts=["*.lab.example", "loupe"]) as c:
        assert c.get("/api/health", headers={"Host": "gpu1.lab.example:8000"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "loupe"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "localhost"}).status_code == 400


# -- body limits -----------------------------------------------------------------------------------------


def test_a_body_over_the_limit_gets_413_by_its_content_length(micro_container):
    with client_of(micro_container, max_body_bytes=1_000) as c:
        r = c.post("/api/generate", json={**GEN, "prompt": "x" * 2_000})
        assert r.status_code == 413 and "1,000 bytes" in r.json()["detail"]
        assert c.post("/api/generate", json=GEN).status_code == 200
        # the dataset upload keeps its own, larger limit (LOUPE_MAX_UPLOAD_BYTES)
        files = {"file": ("d.jsonl", b'{"text": "%s"}\n' % (b"y" * 1_500) * 2)}
        r = c.post("/api/datasets", files=files, data={"id": "bigger-than-1000"})
        assert r.status_code == 201, r.text
        assert c.delete("/api/datasets/bigger-than-1000").status_code == 204


def test_a_chunked_body_is_cut_off_while_it_streams(micro_container):
    """No Content-Length: the server counts bytes as they come and answers 413 before the body ends
    (the request never ends here, so a server that read it all would never answer)."""
    app = app_with(micro_container, max_body_bytes=1_000)
    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(
                b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(3):  # 1,500 bytes, and no final chunk
                s.sendall(b"1f4\r\n" + b" " * 500 + b"\r\n")
            reply = b""
            while b"}" not in reply and (part := s.recv(65536)):
                reply += part
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "1,000 bytes" in reply


# -- SAE import folders ----------------------------------------------------------------------------------------


def test_saes_register_only_from_the_import_folders_without_symlinks(client, micro_workspace, tmp_path):
    roots = micro_workspace.settings.resolved_sae_roots()
    imports = roots[0]
    imports.mkdir(parents=True, exist_ok=True)
    sae = micro_workspace.saes.get("demo-resid1").path
    outside = tmp_path / "outside-sae"
    shutil.copytree(sae, outside)
    (imports / "linked-dir").symlink_to(outside, target_is_directory=True)
    (imports / "sub").mkdir(exist_ok=True)
    (imports / "sub" / "link-up").symlink_to(tmp_path, target_is_directory=True)
    cases = [
        str(outside),  # exists, outside the roots
        str(tmp_path / "absent"),  # missing, outside
        "/etc",  # a directory that exists everywhere
        str(imports / "absent"),  # missing, inside
        str(imports / "linked-dir"),  # a symlink inside pointing out
        str(imports / "sub" / "link-up" / "outside-sae"),  # a symlinked component on the way
        str(imports / ".." / "artifacts" / "saes" / "demo-resid1"),  # climbing out
        "../artifacts/saes/demo-resid1",  # relative, climbing out
        str(imports),  # the root itself
    ]
    details = set()
    for i, path in enumerate(cases):
        r = client.post("/api/saes", json={"id": f"refused-{i}", "path": path})
        assert r.status_code == 422, (path, r.text)
        details.add(r.json()["detail"])
        assert client.get(f"/api/saes/refused-{i}").status_code == 404
    assert len(details) == 1, details  # one message: answers do not tell which paths exist
    assert "LOUPE_SAE_ROOTS" in details.pop()
    # a directory inside the roots holding a symlinked file: refused, nothing copied
    holder = imports / "with-link"
    holder.mkdir(exist_ok=True)
    shutil.copy2(outside / "cfg.json", holder / "cfg.json")
    (holder / "sae_weights.safetensors").symlink_to(outside / "sae_weights.safetensors")
    r = client.post("/api/saes", json={"id": "with-link", "path": str(holder)})
    assert r.status_code == 422 and "symbolic links (sae_weights.safetensors)" in r.json()["detail"]
    assert not micro_workspace.artifact("saes", "with-link").exists()


def test_sae_paths_resolve_under_the_roots(tmp_path):
    from loupe.errors import Unprocessable
    from loupe.services.saes.registry import sae_source_dir

    real = tmp_path / "real"
    (real / "a" / "my-sae").mkdir(parents=True)
    (tmp_path / "via").symlink_to(real, target_is_directory=True)  # a root may itself sit behind a symlink
    second = tmp_path / "second"
    (second / "other").mkdir(parents=True)
    roots = [tmp_path / "via", second]
    assert sae_source_dir("a/my-sae", roots) == real / "a" / "my-sae"  # relative: inside the first root
    assert sae_source_dir(str(tmp_path / "via" / "a" / "my-sae"), roots) == real / "a" / "my-sae"
    assert sae_source_dir(str(real / "a" / "my-sae"), roots) == real / "a" / "my-sae"
    assert sae_source_dir(str(second / "other"), roots) == second / "other"
    with pytest.raises(Unprocessable):
        sae_source_dir(str(tmp_path), roots)
