"""posthog-js's own scripts under ``/static/``: a page that loads the SDK from hogflare (PostHog's
HTML snippet) boots, and the extensions it loads later come from hogflare too."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hogflare.static_assets import installed_version
from tests.conftest import Hogflare
from tests.helpers.sdk import run_script
from tests.helpers.server import Server, wait_for_rows

TOKEN = "phc_hosted_scripts"


async def test_the_scripts_of_the_installed_release_are_served(hogflare: Hogflare) -> None:
    version = installed_version()
    assert version is not None, "`make build` installs posthog-js's scripts"
    bundle = await hogflare.client.get("/static/array.js")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("application/javascript")
    assert version.encode() in bundle.content
    # posthog-js asks /static/<name>.js?v=<its version>, answered whatever the version, as PostHog's
    # CDN answers with its newest; with strict versioning, /static/<version>/<name>.js.
    for path in ("/static/exception-autocapture.js?v=1.0.0", f"/static/{version}/exception-autocapture.js"):
        response = await hogflare.client.get(path)
        assert response.status_code == 200, path
        assert b"errorWrappingFunctions" in response.content
    other = await hogflare.client.get("/static/1.0.0/exception-autocapture.js")
    assert other.status_code == 404
    assert f"posthog-js {version}" in other.json()["error"]
    for path in ("/static/array.js.map", "/static/%2e%2e/package.json", "/static/nothing.js", "/static/a/b/c.js"):
        assert (await hogflare.client.get(path)).status_code == 404, path


@pytest.mark.browser
@pytest.mark.parametrize(
    ("scenario", "env"),
    [("snippet", {}), ("remote", {"HOGFLARE_AUTOCAPTURE_EXCEPTIONS": "true"})],
    ids=["turned-on-in-init", "turned-on-by-remote-config"],
)
def test_a_page_loading_posthog_js_from_hogflare_sends_events_and_exceptions(
    tmp_path: Path, scenario: str, env: dict[str, str]
) -> None:
    run_id = uuid.uuid4().hex
    with Server(tmp_path / "data", env=env) as server:
        page = run_script("hosted_script_browser.mjs", server.url, TOKEN, scenario, run_id)
        sql = f"select event, properties from events where distinct_id = '{page['distinct_id']}'"
        rows = wait_for_rows(server.data_dir, sql, 2)
    assert {row["event"] for row in rows} >= {"from a hosted script", "$exception"}, rows
    assert all(script["status"] == 200 for script in page["scripts"]), page["scripts"]
    paths = [script["path"] for script in page["scripts"]]
    assert paths[0] == "/static/array.js"
    assert any("exception-autocapture.js" in path for path in paths), paths
