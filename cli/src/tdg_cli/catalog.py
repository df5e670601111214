"""`tdg catalog …`: register, evolve, publish, deprecate, get, list, search, export-dcat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from tdg.catalog.v1 import catalog_pb2 as pb

from tdg_cli.client import CATALOG, JsonOpt, print_json
from tdg_cli.dataset_file import load_register_request, load_schema

catalog_app = typer.Typer(help="The register of datasets.", no_args_is_help=True)
out = Console()


def _short(status: int) -> str:
    return pb.DatasetStatus.Name(status).removeprefix("DATASET_STATUS_").lower()  # type: ignore[arg-type]


def _access(level: int) -> str:
    return pb.AccessLevel.Name(level).removeprefix("ACCESS_LEVEL_").lower()  # type: ignore[arg-type]


def _print_dataset(d: pb.Dataset) -> None:
    m = d.metadata
    out.print(
        f"[bold]{d.id}[/] — {m.title}  [dim]({_short(d.status)}, schema v{d.schema.version}"
        f" of {d.latest_schema_version})[/]"
    )
    out.print(
        f"publisher {d.publisher} · access {_access(m.access_level)} · licence {m.licence}"
        f" · themes {', '.join(m.themes)} · territory {', '.join(m.territory)}"
    )
    if d.deprecation_reason:
        out.print(f"[yellow]deprecated:[/] {d.deprecation_reason}")
    table = Table("column", "type", "null", "sensitivity", "unit", "description")
    for c in d.schema.columns:
        sensitivity = pb.Sensitivity.Name(c.sensitivity).removeprefix("SENSITIVITY_").lower()
        marks = []
        if c.name == d.schema.event_time_column:
            marks.append("event time")
        if c.name in d.schema.key_columns:
            marks.append("key")
        if c.name == d.schema.subject_column:
            marks.append("subject")
        name = c.name + (f" [dim]({', '.join(marks)})[/]" if marks else "")
        table.add_row(
            name, c.type, "yes" if c.nullable else "no", sensitivity, c.unit, c.description
        )
    out.print(table)


def _print_list(datasets: list[pb.Dataset], scores: list[float] | None = None) -> None:
    table = Table("id", "title", "status", "access", "schema", "themes")
    if scores is not None:
        table.add_column("score")
    for i, d in enumerate(datasets):
        row = [
            d.id,
            d.metadata.title,
            _short(d.status),
            _access(d.metadata.access_level),
            f"v{d.latest_schema_version}",
            ", ".join(d.metadata.themes),
        ]
        if scores is not None:
            row.append(f"{scores[i]:.2f}")
        table.add_row(*row)
    out.print(table)


def _show(response: Any, as_json: bool) -> None:
    if as_json:
        print_json(response)
    else:
        _print_dataset(response.dataset)


@catalog_app.command()
def register(
    file: Path = typer.Argument(..., exists=True, readable=True), as_json: bool = JsonOpt
) -> None:
    """Register the dataset described in a YAML file (status draft)."""
    try:
        request = load_register_request(file)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _show(CATALOG.rpc("RegisterDataset", request), as_json)


@catalog_app.command()
def evolve(
    dataset_id: str,
    file: Path = typer.Argument(..., exists=True, readable=True, help="YAML with a schema: key"),
    expected_version: int = typer.Option(0, help="fail unless this is the current version"),
    as_json: bool = JsonOpt,
) -> None:
    """Add a backward-compatible schema version."""
    try:
        schema = load_schema(file)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    request = pb.EvolveSchemaRequest(
        id=dataset_id, schema=schema, expected_version=expected_version
    )
    _show(CATALOG.rpc("EvolveSchema", request), as_json)


@catalog_app.command()
def publish(dataset_id: str, as_json: bool = JsonOpt) -> None:
    """Publish a draft dataset."""
    _show(CATALOG.rpc("PublishDataset", pb.PublishDatasetRequest(id=dataset_id)), as_json)


@catalog_app.command()
def deprecate(
    dataset_id: str, reason: str = typer.Option("", help="why"), as_json: bool = JsonOpt
) -> None:
    """Deprecate a dataset."""
    _show(
        CATALOG.rpc("DeprecateDataset", pb.DeprecateDatasetRequest(id=dataset_id, reason=reason)),
        as_json,
    )


@catalog_app.command()
def get(
    dataset_id: str,
    schema_version: int = typer.Option(0, "--schema-version", help="0 = latest"),
    as_json: bool = JsonOpt,
) -> None:
    """Show a dataset with its schema."""
    _show(
        CATALOG.rpc(
            "GetDataset", pb.GetDatasetRequest(id=dataset_id, schema_version=schema_version)
        ),
        as_json,
    )


_ACCESS = {
    "": 0,
    "open": pb.ACCESS_LEVEL_OPEN,
    "restricted": pb.ACCESS_LEVEL_RESTRICTED,
    "personal": pb.ACCESS_LEVEL_PERSONAL,
}
_STATUS = {
    "": 0,
    "draft": pb.DATASET_STATUS_DRAFT,
    "published": pb.DATASET_STATUS_PUBLISHED,
    "deprecated": pb.DATASET_STATUS_DEPRECATED,
}


@catalog_app.command("list")
def list_(
    publisher: str = typer.Option(""),
    theme: str = typer.Option("", help="EU data theme code, e.g. ENER"),
    access: str = typer.Option("", help="open, restricted or personal"),
    status: str = typer.Option("", help="draft, published or deprecated"),
    page_size: int = typer.Option(50),
    page_token: str = typer.Option(""),
    as_json: bool = JsonOpt,
) -> None:
    """List datasets (one page; the next page token is printed)."""
    if access not in _ACCESS or status not in _STATUS:
        typer.echo(
            "error: --access must be open|restricted|personal, --status draft|published|deprecated",
            err=True,
        )
        raise typer.Exit(2)
    request = pb.ListDatasetsRequest(
        publisher=publisher,
        theme=theme,
        access_level=_ACCESS[access],  # type: ignore[arg-type]
        status=_STATUS[status],  # type: ignore[arg-type]
        page_size=page_size,
        page_token=page_token,
    )
    response = CATALOG.rpc("ListDatasets", request)
    if as_json:
        print_json(response)
        return
    _print_list(list(response.datasets))
    if response.next_page_token:
        out.print(f"next page: --page-token {response.next_page_token}")


@catalog_app.command()
def search(query: str, limit: int = typer.Option(20), as_json: bool = JsonOpt) -> None:
    """Ranked full-text search (accents and case ignored)."""
    response = CATALOG.rpc("SearchDatasets", pb.SearchDatasetsRequest(query=query, limit=limit))
    if as_json:
        print_json(response)
        return
    _print_list([h.dataset for h in response.hits], [h.score for h in response.hits])


@catalog_app.command("export-dcat")
def export_dcat(
    output: Path | None = typer.Option(None, "--output", "-o", help="write to this file"),
    base_uri: str = typer.Option("", help="the catalogue's base IRI"),
) -> None:
    """DCAT-AP JSON-LD of the published datasets."""
    response = CATALOG.rpc("ExportDcat", pb.ExportDcatRequest(base_uri=base_uri))
    document = json.dumps(json.loads(response.json_ld), indent=2, ensure_ascii=False)
    if output:
        output.write_text(document + "\n", encoding="utf-8")
        Console(stderr=True).print(f"{response.dataset_count} datasets written to {output}")
    else:
        typer.echo(document)
