"""Issue 15 point 3 against the real server on loopback: traversal, CSRF, the token, read-only
mode, headers, and no stack traces in responses."""

from __future__ import annotations

import os
import stat
import subprocess
import sys


from nordlys.web.security import TOKEN_FILE, load_or_make_token
from tests.waiting import DEADLINE
from tests.web.conftest import csrf_of

JSON = {"accept": "application/json"}


def test_traversal_encoded_slashes_and_symlinks_out_get_404_and_a_log_line(tree, web, tmp_path):
    tree.sort(green=1, grey=1)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(tree.files("review")[0].read_bytes())
    (tree.root / "review" / "link.jpg").symlink_to(secret)  # a symlink out of the output root
    (tree.root / "review" / "linkdir").symlink_to(tmp_path)
    server = web()
    with server.client() as client:
        good = tree.files("review")[0].relative_to(tree.root).as_posix()
        assert client.get(f"/photo/{good}").status_code == 200
        attempts = ["/photo/review/../../secret.jpg", "/thumb/review/%2e%2e/%2e%2e/secret.jpg",
                    "/photo/review%2F..%2F..%2Fsecret.jpg", "/thumb/review/..%2f..%2fsecret.jpg",
                    "/photo/review/link.jpg", "/thumb/review/link.jpg", "/photo/review/linkdir/secret.jpg",
                    "/photo/rejected/x.jpg", "/thumb/%2Fetc%2Fpasswd", "/photo/review/..%5c..%5csecret.jpg"]
        for url in attempts:
            # httpx would normalise "..": send the raw target as a browser or curl --path-as-is would
            response = client.send(client.build_request("GET", url))
            assert response.status_code == 404, url
            assert "secret" not in response.text and "Traceback" not in response.text
        moved = client.post("/act/move", data={"rel": "review/link.jpg", "to": "aurora",
                                               "csrf": csrf_of(client)}, headers=JSON)
        assert moved.status_code == 404
    assert secret.exists() and (tree.root / "review" / "link.jpg").is_symlink()
    assert server.log_has('"path refused"')
    assert sum('"path refused"' in line for line in server.lines) >= 4


def test_actions_need_the_csrf_token_of_the_page(tree, web):
    tree.sort(green=0, grey=1)
    server = web()
    photo = tree.files("review")[0]
    rel = photo.relative_to(tree.root).as_posix()
    with server.client() as client:
        token = csrf_of(client)
        for data, headers in (({"rel": rel, "to": "aurora"}, JSON),
                              ({"rel": rel, "to": "aurora", "csrf": "forged"}, JSON),
                              ({"rel": rel, "to": "aurora"}, {**JSON, "x-csrf-token": token + "x"})):
            response = client.post("/act/move", data=data, headers=headers)
            assert response.status_code == 403, response.text
        assert client.post("/act/undo", data={}, headers=JSON).status_code == 403
        assert client.post("/act/retrain", data={}, headers=JSON).status_code == 403
    with server.client() as stranger:  # another site's form: no cookie of ours, a guessed token
        assert stranger.post("/act/move", data={"rel": rel, "to": "aurora", "csrf": token}).status_code == 403
    assert photo.exists()
    assert server.log_has("CSRF token missing or wrong")
    with server.client() as client:
        ok = client.post("/act/move", data={"rel": rel, "to": "aurora", "csrf": csrf_of(client)}, headers=JSON)
        assert ok.status_code == 200, ok.text
    assert not photo.exists() and (tree.root / "aurora" / photo.name).exists()


def test_read_only_mode_moves_nothing_and_shows_no_buttons(tree, web):
    tree.sort(green=0, grey=1)
    server = web("--read-only")
    photo = tree.files("review")[0]
    rel = photo.relative_to(tree.root).as_posix()
    with server.client() as client:
        page = client.get(f"/photo/{rel}")
        assert page.status_code == 200 and "read-only" in page.text and "/act/move" not in page.text
        token = csrf_of(client)
        assert client.post("/act/move", data={"rel": rel, "to": "aurora", "csrf": token}, headers=JSON).status_code == 403
        assert client.post("/act/undo", data={"csrf": token}, headers=JSON).status_code == 403
    assert photo.exists()


def test_every_response_has_csp_and_nosniff_and_errors_carry_no_trace(tree, web):
    tree.sort(green=1, grey=1)
    server = web()
    with server.client() as client:
        for url in ("/", "/review", "/recent", "/metrics", "/static/app.js", "/nothing", "/photo/review/none.jpg"):
            response = client.get(url)
            assert "default-src 'none'" in response.headers["content-security-policy"], url
            assert response.headers["x-content-type-options"] == "nosniff", url
        assert client.get("/recent?min=abc").status_code == 400
        tree.journal.write_bytes(b"this is no sqlite journal" * 100)  # every page now fails inside
        broken = client.get("/")
        assert broken.status_code == 500
        assert "Traceback" not in broken.text and "sqlite" not in broken.text.lower() and "File " not in broken.text
        assert broken.headers["x-content-type-options"] == "nosniff"
    assert server.log_has('"request failed"')


def test_token_is_made_once_private_and_printed_only_when_made(tmp_path):
    token, made = load_or_make_token(tmp_path / "state")
    again, made_again = load_or_make_token(tmp_path / "state")
    assert made and not made_again and token == again and len(token) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "state" / TOKEN_FILE).st_mode) == 0o600


def test_a_bind_beyond_loopback_without_a_token_refuses_to_start(tree):
    """The state folder cannot hold a token (its parent is a file): the server says so and exits 2
    before it binds anything."""
    (tree.home / "xdg-state").write_text("a file where the state folder should be")
    proc = subprocess.run([sys.executable, "-m", "nordlys.daemon", "web", "--config", str(tree.config),
                           "--host", "192.0.2.1", "--port", "1"], env=tree.env, capture_output=True, text=True,
                          timeout=DEADLINE)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "token" in proc.stderr and "refusing to start" in proc.stderr and "Traceback" not in proc.stderr


def test_the_token_guards_every_page_when_one_is_required(tree):
    """The Guard as `nordlys web --host 0.0.0.0` builds it, served on loopback (tests never bind wider)."""
    import threading

    import uvicorn

    from nordlys.daemon.config import load_config
    from nordlys.web.app import build_app
    from nordlys.web.cli import build_site
    from tests.web.conftest import free_port
    import httpx

    tree.sort(green=1, grey=0)
    site = build_site(load_config(tree.config), config_file=tree.config, read_only=False, thumb_cache_mb=8)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(site, token="s3cret-token-value"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        from tests.waiting import wait_until
        wait_until(lambda: server.started, DEADLINE, "uvicorn started")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=DEADLINE) as client:
            for url in ("/", "/review", "/metrics", "/static/app.js"):
                assert client.get(url).status_code == 401, url
            assert client.get("/?token=wrong").status_code == 401
            assert client.get("/", headers={"authorization": "Bearer s3cret-token-value"}).status_code == 200
            first = client.get("/?token=s3cret-token-value")
            assert first.status_code == 200
            assert client.get("/review").status_code == 200  # the cookie set by the first visit
    finally:
        server.should_exit = True
        thread.join(DEADLINE)


def test_a_loopback_server_answers_only_to_loopback_host_names(tree, web):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 gets nothing."""
    tree.sort(green=1, grey=0)
    server = web()
    with server.client() as client:
        assert client.get("/", headers={"host": "evil.example"}).status_code == 421
        assert client.get("/metrics", headers={"host": f"evil.example:{server.port}"}).status_code == 421
        assert client.get("/", headers={"host": f"localhost:{server.port}"}).status_code == 200
    assert server.log_has("unexpected Host header")
