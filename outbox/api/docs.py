"""The interactive API page (`/docs`), served whole by this server: it works offline and under a
strict Content-Security-Policy.

FastAPI's own /docs loads Swagger UI from a CDN and starts it with an inline script, and /redoc
loads ReDoc from a CDN. Here Swagger UI's files come from the installed `swagger_ui_bundle`
package (under /docs/assets, only the few files the page uses), the start-up script is a file
(/docs/swagger-init.js) rather than inline, and the page is sent with a CSP that allows nothing
but this server. No installed package ships ReDoc, so /redoc is not served.

`swagger_ui_bundle` carries Swagger UI 4, which renders only documents that say `openapi: 3.0.n`.
The start-up script reads /openapi.json (3.1) and hands it to Swagger UI labelled 3.0.3: the paths,
parameters, bodies and responses show and "Try it out" works; JSON Schema 2020-12 keywords that
3.0 lacks (`const`, `type: "null"`) are shown as Swagger UI 4 understands them. Generators and
schemathesis read /openapi.json itself, unchanged.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # ships no type information

DOCS_PATH: Final = "/docs"
ASSETS_PATH: Final = "/docs/assets"
INIT_SCRIPT_PATH: Final = "/docs/swagger-init.js"
# The files the page loads; the package's other files (its demo index.html, which starts the
# Petstore example from the internet, and source maps) are not served.
ASSETS: Final = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})

# Everything from this server only; images also as data: URIs (Swagger UI's CSS icons).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_INIT_SCRIPT: Final = """\
"use strict";
// Starts Swagger UI on the document named by the page (outbox/api/docs.py says why it is
// relabelled 3.0.3: the bundled Swagger UI 4 renders only OpenAPI 3.0 documents).
(function () {
  var container = document.getElementById("swagger-ui");
  fetch(container.dataset.openapiUrl, { headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) { throw new Error("GET " + response.url + " answered " + response.status); }
      return response.json();
    })
    .then(function (spec) {
      spec.openapi = "3.0.3";
      window.ui = SwaggerUIBundle({
        spec: spec,
        dom_id: "#swagger-ui",
        deepLinking: true,
        persistAuthorization: false,
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout"
      });
    })
    .catch(function (error) {
      container.textContent = "The API document could not be loaded: " + error.message;
    });
})();
"""


def _page(title: str, root: str, openapi_url: str) -> str:
    escape = html.escape
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="{escape(root + ASSETS_PATH)}/swagger-ui.css">
<link rel="icon" type="image/png" href="{escape(root + ASSETS_PATH)}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{escape(root + openapi_url)}"></div>
<script src="{escape(root + ASSETS_PATH)}/swagger-ui-bundle.js"></script>
<script src="{escape(root + INIT_SCRIPT_PATH)}"></script>
</body>
</html>
"""


class _SwaggerAssets(StaticFiles):
    """The package's directory, limited to the files the page uses."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in ASSETS:
            raise HTTPException(404)
        return await super().get_response(path, scope)


def install_docs(app: FastAPI) -> None:
    """Replace FastAPI's CDN-backed /docs, its OAuth2 redirect page and /redoc with the offline page."""
    replaced = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url} - {None}
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) not in replaced]
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    title = f"{app.title} – API"

    async def docs_page(request: Request) -> Response:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return HTMLResponse(
            _page(title, root, openapi_url), headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY}
        )

    async def init_script(_request: Request) -> Response:
        return Response(_INIT_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    routes: list[BaseRoute] = [
        Route(DOCS_PATH, docs_page, methods=["GET"], include_in_schema=False),
        Route(INIT_SCRIPT_PATH, init_script, methods=["GET"], include_in_schema=False),
    ]
    app.router.routes.extend(routes)
    app.mount(ASSETS_PATH, _SwaggerAssets(directory=Path(str(swagger_ui_path))), name="swagger-ui-assets")
