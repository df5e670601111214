"""A registry bundle server for tests: serves a given `data.tdg.registry` as the consent service's
bundle server does (OPA's bundle service API: ETag, If-None-Match, long polling).

For tests of OPA's wiring and of decisions over a fixed registry; the consent service's own tests
run its real bundle server. Start it on `opa.bundle_port` and the session's OPA pulls from it.
Once OPA has pulled a bundle, `data.tdg.registry` belongs to that bundle: OPA refuses to write it
through the Data API (400, "owned by bundle"), so serve test data this way rather than with a PUT.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
import tarfile
import threading
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tdg_core.devstack import REGISTRY_RESOURCE, REGISTRY_ROOT

BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles"
# OPA 1.x sends `Prefer: modes=snapshot,delta;wait=10`: the wait is not the first preference.
_WAIT = re.compile(r"\bwait=(\d+)")


def registry_bundle(registry: Mapping[str, Any] | None, revision: str) -> bytes:
    """A gzipped bundle with root `tdg/registry` holding `registry` (None: no data, the root
    still claimed, so OPA drops what the previous bundle had there)."""
    files: dict[str, Any] = {".manifest": {"revision": revision, "roots": [REGISTRY_ROOT]}}
    if registry is not None:
        files[f"{REGISTRY_ROOT}/data.json"] = registry
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # OPA dropping a held long poll (it stopped, or the test ended) is not an error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RegistryBundleServer:
    """`GET /bundles/registry.tar.gz` on 127.0.0.1:`port`; `publish()` swaps the registry and
    answers the held long polls at once. Every ETag is unique, so a bundle served by an earlier
    server is never taken for this one's. `requests` records the request headers."""

    def __init__(
        self, port: int, registry: Mapping[str, Any] | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.port = port
        self.requests: list[dict[str, str]] = []
        self._changed = threading.Condition()
        self._etag = ""
        self._body = b""
        self._closing = False
        self.publish(registry)
        self._httpd = _QuietHTTPServer((host, port), self._handler())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"registry-bundle-{port}", daemon=True
        )

    @property
    def etag(self) -> str:
        return self._etag

    def publish(self, registry: Mapping[str, Any] | None) -> str:
        """Serve `registry` from now on; returns the new ETag (also the bundle's revision)."""
        with self._changed:
            revision = uuid.uuid4().hex
            self._etag = f'"{revision}"'
            self._body = registry_bundle(registry, revision)
            self._changed.notify_all()
            return self._etag

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RegistryBundleServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, seen: str | None, prefer: str) -> tuple[str, bytes]:
        wait = _WAIT.search(prefer)
        with self._changed:
            if wait and seen == self._etag:
                self._changed.wait_for(
                    lambda: self._etag != seen or self._closing, float(wait.group(1))
                )
            return self._etag, self._body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(dict(self.headers.items()))
                if self.path.split("?")[0].lstrip("/") != REGISTRY_RESOURCE:
                    self._send(200 if self.path == "/health" else 404, {}, b"")
                    return
                seen = self.headers.get("If-None-Match")
                etag, body = outer._answer(seen, self.headers.get("Prefer", ""))
                headers = {"ETag": etag, "Content-Type": BUNDLE_CONTENT_TYPE}
                if seen == etag:
                    self._send(304, headers, b"")
                else:
                    self._send(200, headers, body)

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

        return Handler
