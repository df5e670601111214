"""Bad input gets a clear status naming the problem, and changes nothing."""

from __future__ import annotations

import grpc
import pytest
from tdg.catalog.v1 import catalog_pb2 as pb

from tests.integration.fixtures.callers import Caller, CallerFactory
from tests.integration.helpers import example

pytestmark = pytest.mark.integration

LYON = "metropole-lyon"


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details() or ""


@pytest.fixture
def officer(caller: CallerFactory[Caller]) -> Caller:
    return caller("lyon-data-office", LYON, "data-officer")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: setattr(r, "id", f"{LYON}.Bike_Counters"), "id"),
        (lambda r: setattr(r.metadata, "licence", "WTFPL"), "metadata.licence"),
        (lambda r: r.metadata.territory.append("6912"), "metadata.territory"),
        (lambda r: setattr(r.metadata, "title", ""), "metadata.title"),
        (lambda r: setattr(r.schema.columns[0], "type", "varchar"), "schema.columns[0].type"),
        (
            lambda r: setattr(r.metadata, "access_level", pb.ACCESS_LEVEL_UNSPECIFIED),
            "metadata.access_level",
        ),
    ],
)
async def test_malformed_field_is_invalid_argument_naming_it(
    officer: Caller, mutate, field: str
) -> None:
    request = example("bike-counters")
    mutate(request)
    code, details = await _code(
        officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field), details


async def test_personal_column_without_subject_column_is_refused(officer: Caller) -> None:
    request = example("household-energy-meters")
    request.schema.subject_column = ""
    code, details = await _code(
        officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "subject_column" in details


async def test_duplicate_is_already_exists_and_unknown_is_not_found(officer: Caller) -> None:
    request = example("bike-counters")
    await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    code, _ = await _code(officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, _ = await _code(
        officer.stub.GetDataset(
            pb.GetDatasetRequest(id=f"{LYON}.no-such-dataset"), metadata=officer.md, timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await _code(
        officer.stub.GetDataset(
            pb.GetDatasetRequest(id=request.id, schema_version=7), metadata=officer.md, timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_incompatible_evolution_lists_every_problem_and_keeps_the_schema(
    officer: Caller,
) -> None:
    request = example("bike-counters")
    await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    schema = pb.Schema()
    schema.CopyFrom(request.schema)
    removed = schema.columns[-1].name
    del schema.columns[-1]
    schema.columns.append(pb.Column(name="lane_count", type="int32", nullable=False))
    code, details = await _code(
        officer.stub.EvolveSchema(
            pb.EvolveSchemaRequest(id=request.id, schema=schema), metadata=officer.md, timeout=10
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert removed in details and "lane_count" in details
    current = await officer.stub.GetDataset(
        pb.GetDatasetRequest(id=request.id), metadata=officer.md, timeout=10
    )
    assert current.dataset.latest_schema_version == 1


async def test_publishing_twice_is_failed_precondition(officer: Caller) -> None:
    request = example("waste-bin-fill-levels")
    await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
    await officer.stub.PublishDataset(
        pb.PublishDatasetRequest(id=request.id), metadata=officer.md, timeout=10
    )
    code, _ = await _code(
        officer.stub.PublishDataset(
            pb.PublishDatasetRequest(id=request.id), metadata=officer.md, timeout=10
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_oversized_request_is_refused(officer: Caller) -> None:
    request = example("bike-counters")
    request.metadata.description = "x" * (5 * 1024 * 1024)
    code, _ = await _code(officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_list_pages_through_everything_once(officer: Caller) -> None:
    ids = set()
    for _ in range(5):
        request = example("bike-counters")
        await officer.stub.RegisterDataset(request, metadata=officer.md, timeout=10)
        ids.add(request.id)
    seen: list[str] = []
    token = ""
    while True:
        page = await officer.stub.ListDatasets(
            pb.ListDatasetsRequest(publisher=LYON, page_size=2, page_token=token),
            metadata=officer.md,
            timeout=10,
        )
        assert len(page.datasets) <= 2
        seen += [d.id for d in page.datasets]
        token = page.next_page_token
        if not token:
            break
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
