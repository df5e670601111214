"""OPA's bundle service API: ETag, 304, and long polling that answers as soon as a change lands."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from tdg_consent.bundle_server import LONG_POLL_TYPE, PATH, BundleServer
from tdg_consent.model import Party, PartyKind

from services.consent.tests.conftest import Service

pytestmark = pytest.mark.integration


async def test_long_poll_answers_when_the_registry_changes(service: Service) -> None:
    server = BundleServer(service.bundle, "127.0.0.1", 0, max_wait_s=10)
    await server.start()
    url = f"http://127.0.0.1:{server.port}{PATH}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as first:
                assert first.status == 200
                assert first.headers["Content-Type"] == LONG_POLL_TYPE  # so OPA long-polls
                etag = first.headers["ETag"]
                await first.read()
            async with http.get(url, headers={"If-None-Match": etag}) as same:
                assert same.status == 304
            # Nothing changes: a long poll is held, then answered 304.
            started = time.perf_counter()
            held = {"If-None-Match": etag, "Prefer": "wait=1"}
            async with http.get(url, headers=held) as idle:
                assert idle.status == 304
                assert idle.headers["Content-Type"] == LONG_POLL_TYPE
            assert time.perf_counter() - started >= 0.9
            # A change during a long poll answers it at once with the new bundle.
            waiting = {"If-None-Match": etag, "Prefer": "wait=10"}
            poll = asyncio.create_task(http.get(url, headers=waiting))
            await asyncio.sleep(0.2)
            changed_at = time.perf_counter()
            await service.parties.register(Party("lyon", PartyKind.MUNICIPALITY, "Lyon", ""))
            async with await poll as fresh:
                assert fresh.status == 200
                assert fresh.headers["ETag"] != etag
                assert len(await fresh.read()) > 0
            assert time.perf_counter() - changed_at < 1.0
    finally:
        await server.stop()
