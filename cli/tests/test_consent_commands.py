"""The party, access, consent and erasure commands: registered, bad options refused with exit 2
naming the option before any call, and (against an in-process fake service) paging and the
subject-set stream. Nothing here needs the real consent service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
import typer
from tdg.consent.v1 import consent_pb2 as pb
from tdg.consent.v1 import consent_pb2_grpc
from tdg_cli.access import access_app
from tdg_cli.client import Service
from tdg_cli.consent import consent_app
from tdg_cli.erasure import erasure_app
from tdg_cli.party import party_app
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture
def no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call to a service fails the test: a bad option must be refused before calling."""

    def refuse(*_: Any) -> Any:
        raise AssertionError("the service was called")

    for method in ("rpc", "rpc_pages", "stream"):
        monkeypatch.setattr(Service, method, refuse)


def _flat(text: str) -> str:
    """The output without rich's box drawing and line breaks."""
    return " ".join(text.replace("│", " ").split())


def test_main_registers_the_command_groups() -> None:
    from tdg_cli.main import app

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("party", "access", "consent", "erasure", "catalog"):
        assert group in result.output


@pytest.mark.parametrize(
    ("app", "args", "option", "says"),
    [
        (access_app, ["approve", "agr-1", "--mask", "ts=truncate:fortnight"], "--mask", "UNIT"),
        (access_app, ["approve", "agr-1", "--mask", "ts"], "--mask", "COLUMN=METHOD"),
        (
            access_app,
            ["approve", "agr-1", "--mask", "a=hash", "--mask", "a=null"],
            "--mask",
            "twice",
        ),
        (access_app, ["approve", "agr-1", "--territory", "commune"], "--territory", "CODE"),
        (access_app, ["approve", "agr-1", "--valid-from", "soon"], "--valid-from", "ISO 8601"),
        (access_app, ["approve", "agr-1", "--completeness-pct", "120"], "--completeness-pct", ""),
        (
            access_app,
            ["request", "d.s", "--purpose", "research", "--legal-basis", "public-interest"],
            "--legal-basis",
            "legitimate-interest",
        ),
        (
            access_app,
            ["request", "d.s", "--purpose", "research", "--legal-basis", "consent", "--kind", "x"],
            "--kind",
            "read, write",
        ),
        (access_app, ["list", "--state", "pending"], "--state", "requested"),
        (party_app, ["register", "p", "--kind", "town", "--name", "P"], "--kind", "municipality"),
        (party_app, ["list", "--status", "gone"], "--status", "suspended"),
        (party_app, ["list", "--page-size", "501"], "--page-size", ""),
        (erasure_app, ["list", "--state", "done"], "--state", "in-progress"),
        (consent_app, ["subjects", "d.s", "--purpose", "research", "--since", "-1"], "--since", ""),
    ],
)
@pytest.mark.usefixtures("no_call")
def test_a_bad_option_exits_2_naming_it(
    app: typer.Typer, args: list[str], option: str, says: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    output = _flat(result.output)
    assert f"Invalid value for '{option}'" in output
    assert says in output


@pytest.mark.usefixtures("no_call")
def test_a_bad_conditions_file_exits_2_naming_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("masks: [{column: ts, method: blur}]\n", encoding="utf-8")
    result = runner.invoke(access_app, ["approve", "agr-1", "--conditions", str(path)])
    assert result.exit_code == 2
    output = _flat(result.output)
    assert "Invalid value for '--conditions'" in output
    assert "masks[0].method" in output


@pytest.mark.usefixtures("no_call")
def test_a_required_option_missing_exits_2() -> None:
    result = runner.invoke(access_app, ["request", "d.s", "--purpose", "research"])
    assert result.exit_code == 2
    assert "--legal-basis" in result.output


# --- against an in-process fake service --------------------------------------------------------


class FakeConsent(consent_pb2_grpc.ConsentServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.authorizations: list[str] = []

    def _seen(self, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.append(request)
        self.authorizations.append(dict(context.invocation_metadata()).get("authorization", ""))

    def ListParties(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        pages = {"": ("a", "p2"), "p2": ("b", "p3"), "p3": ("c", "")}
        party_id, token = pages[request.page_token]
        party = pb.Party(id=party_id, kind=pb.PARTY_KIND_PUBLIC_COMPANY, name=party_id.upper())
        return pb.ListPartiesResponse(parties=[party], next_page_token=token)

    def ApproveAccess(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        agreement = pb.Agreement(
            id=request.agreement_id,
            state=pb.AGREEMENT_STATE_ACTIVE,
            legal_basis=pb.LEGAL_BASIS_PUBLIC_TASK,
            conditions=request.conditions,
        )
        return pb.ApproveAccessResponse(agreement=agreement)

    def GiveConsent(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        return pb.GiveConsentResponse(
            consent=pb.Consent(receipt_id="rcpt-1", subject_id=request.subject_id, revision=7)
        )

    def StreamSubjectSet(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._seen(request, context)
        for subjects in (["s1", "s2"], ["s3"]):
            table = pa.table({"subject_id": pa.array(subjects, pa.string())})
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            yield pb.SubjectSetChunk(
                arrow_ipc=sink.getvalue().to_pybytes(), revision=42, snapshot=True
            )

    def GetErasure(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no erasure {request.id!r}")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConsent]:
    servicer = FakeConsent()  # type: ignore[abstract]  # the others answer UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    consent_pb2_grpc.add_ConsentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("TDG_CONSENT_ADDR", f"127.0.0.1:{port}")
    monkeypatch.setenv("TDG_TOKEN", "test-token")
    try:
        yield servicer
    finally:
        server.stop(None)


def test_list_all_follows_the_pages_into_one_response(fake: FakeConsent) -> None:
    result = runner.invoke(party_app, ["list", "--all", "--kind", "public-company", "--json"])
    assert result.exit_code == 0, result.output
    response = json.loads(result.output)
    assert [p["id"] for p in response["parties"]] == ["a", "b", "c"]
    assert "next_page_token" not in response
    assert [r.page_token for r in fake.requests] == ["", "p2", "p3"]
    assert {r.kind for r in fake.requests} == {pb.PARTY_KIND_PUBLIC_COMPANY}
    assert set(fake.authorizations) == {"Bearer test-token"}


def test_list_without_all_prints_the_next_page_token(fake: FakeConsent) -> None:
    result = runner.invoke(party_app, ["list"])
    assert result.exit_code == 0, result.output
    assert "public-company" in result.output
    assert "--page-token p2" in result.output
    assert len(fake.requests) == 1


def test_approve_sends_the_merged_conditions(fake: FakeConsent, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("masks: [ts=truncate:day]\naggregate_only: true\n", encoding="utf-8")
    args = ["approve", "agr-1", "--conditions", str(path), "--mask", "id=hash"]
    result = runner.invoke(access_app, [*args, "--territory", "commune=69123"])
    assert result.exit_code == 0, result.output
    (request,) = fake.requests
    assert [m.column for m in request.conditions.masks] == ["ts", "id"]
    assert request.conditions.aggregate_only
    assert list(request.conditions.territory_filter.codes) == ["69123"]
    output = _flat(result.output)
    assert "(active)" in output
    assert "public-task" in output
    assert "ts=truncate:day, id=hash" in output


def test_give_prints_the_receipt_id(fake: FakeConsent) -> None:
    result = runner.invoke(consent_app, ["give", "citizen-9", "--purpose", "research"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "rcpt-1"


def test_subjects_reads_the_stream(fake: FakeConsent, tmp_path: Path) -> None:
    result = runner.invoke(consent_app, ["subjects", "d.s", "--purpose", "research", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["count"], summary["revision"], summary["snapshot"]) == (3, 42, True)
    path = tmp_path / "subjects.arrow"
    result = runner.invoke(
        consent_app, ["subjects", "d.s", "--purpose", "research", "--output", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "3 subjects with active consent, revision 42" in _flat(result.output)
    with pa.ipc.open_file(path) as reader:
        assert reader.read_all().column("subject_id").to_pylist() == ["s1", "s2", "s3"]


def test_a_failed_call_exits_1_with_the_status(fake: FakeConsent) -> None:
    result = runner.invoke(erasure_app, ["status", "er-404"])
    assert result.exit_code == 1
    assert "NOT_FOUND" in result.output
    assert "no erasure 'er-404'" in result.output
