"""`iscsi-audit simulator`: serve simulated ONTAP clusters on loopback for demos and trials."""

from __future__ import annotations

import time
from pathlib import Path

import click
import platformdirs
from click.core import ParameterSource

from collector.simulator.app import DEFAULT_PASSWORD, DEFAULT_USERNAME, create_app
from collector.simulator.server import SimulatorServer
from collector.simulator.tls import TlsFiles, make_tls_files
from collector.simulator.world import World

PASSWORD_ENV = "ISCSI_AUDIT_SIMULATOR_PASSWORD"


def tls_directory() -> Path:
    return Path(platformdirs.user_state_dir("iscsi-audit")) / "simulator-tls"


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the first cluster; cluster i listens on PORT+i (0: any free ports).",
)
@click.option(
    "--clusters",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Number of simulated ONTAP clusters.",
)
@click.option(
    "--sessions",
    default=500,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="iSCSI sessions logged in to each cluster at start.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the world; same seed, same world.",
)
@click.option(
    "--churn",
    "churn",
    default=6.0,
    show_default=True,
    type=click.FloatRange(0),
    metavar="LOGINS_PER_MIN",
    help="Logins (and as many logouts) per minute per cluster, following the wall clock.",
)
@click.option(
    "--username", default=DEFAULT_USERNAME, show_default=True, help="Basic-auth user name."
)
@click.option(
    "--password",
    default=DEFAULT_PASSWORD,
    envvar=PASSWORD_ENV,
    help=f"Basic-auth password [default: the demo password {DEFAULT_PASSWORD!r}].",
    show_envvar=True,
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve HTTPS with a certificate from a new CA; the CA's PEM file path is printed.",
)
@click.pass_context
def simulator_command(
    ctx: click.Context,
    host: str,
    port: int,
    clusters: int,
    sessions: int,
    seed: int,
    churn: float,
    username: str,
    password: str,
    tls: bool,
) -> None:
    """Serve simulated ONTAP clusters (REST API with live iSCSI sessions) for demos and trials."""
    if port and port + clusters - 1 > 65535:
        raise click.BadParameter(
            f"{clusters} clusters from port {port} pass 65535", param_hint="--port"
        )
    world = World.generate(clusters=clusters, sessions=sessions, seed=seed, churn_per_minute=churn)
    app = create_app(
        world, username=username, password=password, base_port=port, clock=time.monotonic
    )
    tls_files = make_tls_files(tls_directory(), [host]) if tls else None
    server = SimulatorServer(app, host=host, port=port, tls=tls_files)
    _announce(server, world, sessions, churn, username, _password_source(ctx), tls_files)
    server.run()


def _password_source(ctx: click.Context) -> str:
    source = ctx.get_parameter_source("password")
    if source is ParameterSource.ENVIRONMENT:
        return f"password from ${PASSWORD_ENV}"
    if source is ParameterSource.COMMANDLINE:
        return "password from --password"
    return (
        f"password {DEFAULT_PASSWORD!r} "
        f"(the built-in demo default; set --password or ${PASSWORD_ENV})"
    )


def _announce(
    server: SimulatorServer,
    world: World,
    sessions: int,
    churn: float,
    username: str,
    password_source: str,
    tls_files: TlsFiles | None,
) -> None:
    click.echo(
        f"ONTAP simulator: {len(world.clusters)} cluster(s), {sessions} sessions each, "
        f"seed {world.seed}, churn {churn:g} logins/min"
    )
    for i, cluster in enumerate(world.clusters):
        click.echo(f"  {cluster.name}  {cluster.uuid}  {server.base_url(i)}")
    click.echo(f"credentials: user {username!r}, {password_source}")
    if tls_files is not None:
        click.echo(f"CA certificate (verify against it): {tls_files.ca_path}")
    click.echo("Press Ctrl+C to stop.")
