"""The `tdg` command."""

from __future__ import annotations

import typer

from tdg_cli.catalog import catalog_app
from tdg_cli.dev import dev_app
from tdg_cli.token import token_app

app = typer.Typer(help="tdg: territorial data governance.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(token_app, name="token")
app.add_typer(catalog_app, name="catalog")

if __name__ == "__main__":
    app()
