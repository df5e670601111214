"""The `tdg` command."""

from __future__ import annotations

import typer

from tdg_cli.access import access_app
from tdg_cli.audit import audit_app
from tdg_cli.catalog import catalog_app
from tdg_cli.consent import consent_app
from tdg_cli.dev import dev_app
from tdg_cli.erasure import erasure_app
from tdg_cli.ingest import ingest_app
from tdg_cli.party import party_app
from tdg_cli.query import query
from tdg_cli.token import token_app

app = typer.Typer(help="tdg: territorial data governance.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(token_app, name="token")
app.add_typer(catalog_app, name="catalog")
app.add_typer(party_app, name="party")
app.add_typer(access_app, name="access")
app.add_typer(consent_app, name="consent")
app.add_typer(erasure_app, name="erasure")
app.add_typer(ingest_app, name="ingest")
app.command("query")(query)
app.add_typer(audit_app, name="audit")

if __name__ == "__main__":
    app()
