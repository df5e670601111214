"""Serves the registry bundle to every OPA over HTTP (OPA's bundle service API).

`GET /bundles/registry.tar.gz` answers the current bundle with its ETag; with `If-None-Match`
equal to the current ETag it answers 304, and when OPA asks for long polling (`Prefer: wait=N`)
it holds the request until the bundle changes or N seconds pass. A change committed by this
replica is rebuilt at once; changes by other replicas are seen by polling the registry revision
(one small query every `poll_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from dataclasses import dataclass

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine
from tdg_core.background import Background
from tdg_core.db import transaction

from tdg_consent import bundle, lifecycle, store
from tdg_consent.bundle import PolicySettings

log = structlog.get_logger("tdg.consent.bundle")

PATH = "/bundles/registry.tar.gz"
LONG_POLL_TYPE = "application/vnd.openpolicyagent.bundles"
_WAIT = re.compile(r"wait=(\d+)")
DEBOUNCE_S = 0.05


@dataclass(frozen=True, slots=True)
class Built:
    revision: int
    etag: str
    body: bytes


class BundleSource:
    """The current bundle, rebuilt when the registry revision moves."""

    def __init__(self, engine: AsyncEngine, settings: PolicySettings, poll_s: float) -> None:
        self._engine = engine
        self._document = bundle.RegistryDocument(settings)
        self._loaded = False
        self._poll_s = poll_s
        self._built: Built | None = None
        self._newer = asyncio.Event()  # set and replaced on each new bundle
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task = Background("bundle-source", self._run)
        self._stopped = False

    def mark_dirty(self) -> None:
        """A registry change was committed in this process: rebuild now."""
        self._dirty.set()

    async def current(self) -> Built:
        if self._built is None:
            await self.refresh()
        assert self._built is not None
        return self._built

    async def refresh(self) -> None:
        """Load what changed since the last build (everything the first time), then rebuild."""
        async with self._lock:
            since = self._document.revision if self._loaded else None
            async with transaction(self._engine, write=False, name="consent") as conn:
                revision = await store.current(conn, store.REGISTRY)
                if self._built is not None and revision == self._document.revision:
                    return
                parties = await store.parties_since(conn, since)
                agreements = await store.agreements_since(conn, since, sorted(lifecycle.IN_BUNDLE))
            for party in parties:
                self._document.put_party(party)
            for agreement in agreements:
                self._document.put_agreement(agreement)
            self._document.revision = revision
            self._loaded = True
            # Joining thousands of agreements and compressing them is CPU work: off the loop.
            data_json = self._document.json()
            body = await asyncio.to_thread(bundle.tarball, data_json, str(revision))
            # Content-addressed: a recreated database at the same revision, or another replica
            # with other settings, never answers 304 for different data.
            etag = f'"{revision}-{hashlib.sha256(body).hexdigest()[:16]}"'
            self._built = Built(revision, etag, body)
            newer, self._newer = self._newer, asyncio.Event()
            newer.set()
            log.info(
                "bundle built",
                revision=revision,
                bytes=len(body),
                parties_changed=len(parties),
                agreements_changed=len(agreements),
            )

    async def wait_newer(self, etag: str, timeout_s: float) -> Built:
        """The first bundle whose ETag differs from `etag`, or the current one after timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while (built := await self.current()).etag == etag and not self._stopped:
                    await self._newer.wait()
                return built
        return await self.current()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._poll_s)
                # A burst of changes makes one bundle, not one each: every bundle costs each OPA
                # an activation, during which its decisions wait.
                await asyncio.sleep(DEBOUNCE_S)
            self._dirty.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bundle refresh failed, will retry", error=str(exc))

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        self._stopped = True
        self._newer.set()  # release long polls


def _requested_wait(prefer: str | None) -> float:
    match = _WAIT.search(prefer or "")
    return float(match.group(1)) if match else 0.0


class BundleServer:
    """The HTTP endpoint; `port` is the bound one (0 in settings picks a free port)."""

    def __init__(self, source: BundleSource, host: str, port: int, max_wait_s: float) -> None:
        self._source = source
        self._host = host
        self._port = port
        self._max_wait_s = max_wait_s
        self._runner: web.AppRunner | None = None
        self.port = port

    async def _bundle(self, request: web.Request) -> web.StreamResponse:
        wait = min(_requested_wait(request.headers.get("Prefer")), self._max_wait_s)
        try:
            built = await self._source.current()
            seen = request.headers.get("If-None-Match")
            if seen == built.etag and wait:
                built = await self._source.wait_newer(seen, wait)
        except Exception as exc:  # the database is down: OPA keeps its last bundle and retries
            log.warning("bundle unavailable", error=str(exc))
            return web.Response(status=503, text="registry unavailable")
        # This content type tells OPA that the server long-polls: without it OPA never asks to
        # wait, and falls back to polling every few seconds.
        headers = {"ETag": built.etag, "Content-Type": LONG_POLL_TYPE}
        if seen == built.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=built.body, headers=headers)

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PATH, self._bundle)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
