"""/docs is served whole by the server: no CDN, nothing inline, a strict Content-Security-Policy."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fastapi.testclient import TestClient

URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""", re.IGNORECASE)


class _References(HTMLParser):
    """Every URL the page makes a browser load, and whether it carries inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "data-openapi-url"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if "style" in values or tag == "style":
            self.inline_styles += 1
        if any(name.startswith("on") for name in values):
            self.inline_scripts += 1
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def references(client: TestClient) -> _References:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parsed = _References()
    parsed.feed(page.text)
    return parsed


def test_the_docs_page_names_no_url_outside_the_server(client: TestClient) -> None:
    page = client.get("/docs").text
    assert URL.findall(page) == []
    parsed = references(client)
    assert parsed.urls, page
    assert all(url.startswith("/") and not url.startswith("//") for url in parsed.urls), parsed.urls
    assert "cdn" not in page.lower()


def test_every_asset_of_the_page_loads_from_the_server(client: TestClient) -> None:
    expected_types = {".css": "text/css", ".js": "text/javascript", ".png": "image/png", ".json": "application/json"}
    loaded = []
    for url in references(client).urls:
        answer = client.get(url)
        assert answer.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert answer.headers["content-type"].startswith(expected_types[suffix]), (url, answer.headers["content-type"])
        loaded.append(url)
    assert any(u.endswith("swagger-ui-bundle.js") for u in loaded)
    assert any(u.endswith("swagger-ui.css") for u in loaded)
    assert "/openapi.json" in loaded


def test_the_start_up_script_is_a_file_that_reads_the_servers_document(client: TestClient) -> None:
    parsed = references(client)
    assert parsed.inline_scripts == 0
    assert parsed.inline_styles == 0
    init = next(url for url in parsed.urls if url.endswith("swagger-init.js"))
    script = client.get(init).text
    assert URL.findall(script) == []
    assert "SwaggerUIBundle(" in script
    assert "dataset.openapiUrl" in script


def test_the_stylesheet_loads_nothing_from_elsewhere(client: TestClient) -> None:
    stylesheet = client.get("/docs/assets/swagger-ui.css").text
    imported = re.findall(r"url\(\s*['\"]?([^'\")]+)", stylesheet)
    assert imported  # the icons are there, as data: URIs
    assert all(url.startswith("data:") for url in imported), [u[:40] for u in imported if not u.startswith("data:")]
    assert "@import" not in stylesheet


def test_the_page_is_sent_with_a_strict_content_security_policy(client: TestClient) -> None:
    policy = client.get("/docs").headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in (part.strip() for part in policy.split(";")) if d}
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no host
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert set(directives["img-src"]) == {"'self'", "data:"}


def test_only_the_files_the_page_uses_are_served_from_the_package(client: TestClient) -> None:
    # The package's demo page starts the Petstore example from the internet: not served.
    for name in ("index.html", "swagger-initializer.js", "swagger-ui-bundle.js.map", "../__init__.py"):
        answer = client.get(f"/docs/assets/{name}")
        assert answer.status_code == 404, name
        assert answer.headers["content-type"] == "application/problem+json"


def test_redoc_and_the_oauth2_redirect_page_are_not_served(client: TestClient) -> None:
    # ReDoc would load from a CDN: no installed package ships it.
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404


def test_the_pages_are_not_in_the_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
