"""Who may do what in the catalog: tokens verified, OPA decides, drafts stay with the publisher."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg_core.testing import KafkaBroker

from tests.integration.fixtures.callers import Caller, CallerFactory
from tests.integration.fixtures.tokens import TokenMaker
from tests.integration.helpers import example

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"
GRENOBLE = "grenoble-alpes"


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details() or ""


async def test_officer_of_another_publisher_is_denied_with_the_policy_reason(
    caller: CallerFactory[Caller],
) -> None:
    other = caller("grenoble-data-office", GRENOBLE, "data-officer")
    request = example("bike-counters", publisher=LYON)
    code, details = await _code(other.stub.RegisterDataset(request, metadata=other.md, timeout=10))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "data-officer of publisher 'metropole-lyon'" in details


async def test_application_cannot_publish_but_platform_admin_can(
    caller: CallerFactory[Caller],
) -> None:
    officer = caller("lyon-data-office", LYON, "data-officer")
    app = caller("mobility-app", "velo-start", "application")
    admin = caller("ops", "tdg-platform", "platform-admin")
    request = example("ev-charging-sessions", publisher=LYON)
    await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)

    code, _ = await _code(
        app.stub.PublishDataset(
            pb.PublishDatasetRequest(id=request.id), metadata=app.md, timeout=10
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    published = await admin.stub.PublishDataset(
        pb.PublishDatasetRequest(id=request.id), metadata=admin.md, timeout=10
    )
    assert published.dataset.status == pb.DATASET_STATUS_PUBLISHED


async def test_drafts_are_visible_only_to_their_publisher(caller: CallerFactory[Caller]) -> None:
    officer = caller("lyon-data-office", LYON, "data-officer")
    colleague = caller("lyon-analyst", LYON, "application")
    outsider = caller("grenoble-data-office", GRENOBLE, "data-officer")
    request = example("waste-bin-fill-levels", publisher=LYON)
    await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)

    seen = await colleague.stub.GetDataset(
        pb.GetDatasetRequest(id=request.id), metadata=colleague.md, timeout=10
    )
    assert seen.dataset.status == pb.DATASET_STATUS_DRAFT
    code, _ = await _code(
        outsider.stub.GetDataset(
            pb.GetDatasetRequest(id=request.id), metadata=outsider.md, timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    listed = await outsider.stub.ListDatasets(
        pb.ListDatasetsRequest(publisher=LYON, page_size=500), metadata=outsider.md, timeout=10
    )
    assert request.id not in [d.id for d in listed.datasets]
    found = await outsider.stub.SearchDatasets(
        pb.SearchDatasetsRequest(query=request.metadata.title), metadata=outsider.md, timeout=10
    )
    assert request.id not in [h.dataset.id for h in found.hits]


@pytest.mark.parametrize(
    ("token_kind", "reason"),
    [
        ("missing", "missing authorization"),
        ("malformed", "malformed"),
        ("expired", "expired"),
        ("bad-signature", "signature"),
    ],
)
async def test_bad_tokens_are_unauthenticated_with_the_reason(
    channel: grpc.aio.Channel, make_token: TokenMaker, token_kind: str, reason: str
) -> None:
    from tdg.catalog.v1 import catalog_pb2_grpc

    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    tokens = {
        "missing": None,
        "malformed": "Bearer not-a-jwt",
        "expired": f"Bearer {make_token('p', LYON, ('data-officer',), ttl_s=-60)}",
        "bad-signature": f"Bearer {make_token('p', LYON, ('data-officer',), key='x' * 40)}",
    }
    value = tokens[token_kind]
    metadata = (("authorization", value),) if value else ()
    code, details = await _code(
        stub.ListDatasets(pb.ListDatasetsRequest(), metadata=metadata, timeout=10)
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert reason in details


async def test_opa_unreachable_means_unavailable_and_not_serving(
    tmp_path: Path, kafka: KafkaBroker, secret: str, make_token: TokenMaker
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tdg.catalog.v1 import catalog_pb2_grpc
    from tdg_catalog.server import build_service
    from tdg_core.devstack import free_port
    from tdg_core.testing import in_process

    from tests.integration.fixtures.services import catalog_settings

    settings = catalog_settings(
        tmp_path, kafka.bootstrap, f"http://127.0.0.1:{free_port()}", secret
    )
    async with in_process(build_service, settings) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            token = make_token("ops", "tdg-platform", ("platform-admin",))
            code, details = await _code(
                catalog_pb2_grpc.CatalogServiceStub(ch).ListDatasets(
                    pb.ListDatasetsRequest(),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10,
                )
            )
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "policy engine" in details
