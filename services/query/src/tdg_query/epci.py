"""The commune → EPCI reference of `commune_to_epci` generalisation, as a DuckDB table.

The built-in file covers the demonstration territory (the Métropole de Lyon, SIREN 200046977:
its communes and Lyon's arrondissements). A territory points TDG_QUERY_EPCI_FILE at INSEE's
"composition communale des EPCI" exported as CSV (commune,epci). A commune missing from the
reference is generalised to NULL, never shown in clear.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from tdg_query.sql import EPCI_TABLE


def load_reference(path: str | None) -> pa.Table:
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files("tdg_query").joinpath("epci.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    if rows and not {"commune", "epci"} <= set(rows[0]):
        raise ValueError(f"{path or 'epci.csv'}: columns commune,epci are required")
    return pa.table(
        {"commune": [r["commune"] for r in rows], "epci": [r["epci"] for r in rows]},
        schema=pa.schema([("commune", pa.string()), ("epci", pa.string())]),
    )


def install(connection: duckdb.DuckDBPyConnection, reference: pa.Table) -> None:
    """A table of the database, so that every cursor of it sees the reference."""
    connection.register("tdg_epci_source", reference)
    connection.execute(
        f"CREATE OR REPLACE TABLE {EPCI_TABLE} AS "
        "SELECT DISTINCT commune, epci FROM tdg_epci_source"
    )
    connection.unregister("tdg_epci_source")
