"""`tdg token issue`: a development token signed with the configured HS256 secret."""

from __future__ import annotations

import typer
from tdg_core.auth import issue_token

from tdg_cli.settings import CliSettings

token_app = typer.Typer(help="Development tokens.", no_args_is_help=True)


@token_app.command("issue")
def issue(
    party: str = typer.Option(..., help="the party id (claim 'sub')"),
    org: str = typer.Option("", help="the party's organisation, a publisher id (claim 'org')"),
    role: list[str] = typer.Option([], help="a role; repeat for several"),
    ttl: int = typer.Option(3600, help="lifetime in seconds"),
) -> None:
    """Print a token; use it as TDG_TOKEN."""
    try:
        token = issue_token(CliSettings(), party=party, org=org, roles=role, ttl_s=ttl)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(token)
