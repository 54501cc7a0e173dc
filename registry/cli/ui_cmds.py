"""``memo ui``: the registry's web page."""

from __future__ import annotations

import os

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import allow_host_option, warn_if_exposed

DEFAULT_PORT = 8200


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port (0: any free port).")
@allow_host_option
@pass_app
def ui(app: AppContext, host: str, port: int, allow_hosts: tuple[str, ...]) -> None:
    """Browse the registry in a web browser (read-only).

    Channels with their history and gate, each merge with its members,
    retention bars, lineage and publications, each corpus with its
    reflections and task vectors, and a corpus x merge retention heatmap.
    Every page has a JSON twin under /api (the records --json prints).

    \b
    Example:
      memo ui --port 8200     # then open http://127.0.0.1:8200/
    """
    from registry.ui import listen, serve  # the web stack: loaded when the page is served

    reg = app.registry()
    try:
        sock = listen(host, port)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise click.ClickException(f"cannot listen on {host}:{port} ({reason}); choose another --port") from None
    warn_if_exposed(host, "memo ui")
    click.echo(f"memo ui at http://{host}:{sock.getsockname()[1]}/  (read-only; Ctrl-C stops)")
    serve(reg, sock, allow_hosts=allow_hosts)
