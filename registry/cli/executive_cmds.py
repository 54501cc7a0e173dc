"""`memo ask` and `memo serve`: question the memory model through an executive, or serve it."""

from __future__ import annotations

import click

from executive.protocol import ProtocolSettings
from executive.server import DEFAULT_BATCH, DEFAULT_MAX_BODY, DEFAULT_MAX_PENDING, MemoryServer
from registry.cli.app import AppContext, pass_app
from registry.cli.output import allow_host_option, console, err_console, json_option, print_json, warn_if_exposed
from training.llm import Endpoint


def executive_options(required: bool):
    """The executive endpoint and protocol bounds, shared by `ask` and `eval`."""

    def decorate(f):
        options = [
            click.option(
                "--executive-url",
                envvar="MEMO_EXECUTIVE_URL",
                required=required,
                metavar="URL",
                help="OpenAI-compatible endpoint of the EXECUTIVE [env MEMO_EXECUTIVE_URL].",
            ),
            click.option(
                "--executive-model",
                envvar="MEMO_EXECUTIVE_MODEL",
                required=required,
                metavar="NAME",
                help="The executive's model name [env MEMO_EXECUTIVE_MODEL].",
            ),
            click.option(
                "--memory-url",
                metavar="URL",
                help="Question a memory served elsewhere (e.g. by `memo serve`) instead of loading it.",
            ),
            click.option("--memory-model", metavar="NAME", help="The memory's model name at --memory-url."),
            click.option(
                "--max-questions",
                type=int,
                default=ProtocolSettings.max_questions,
                show_default=True,
                help="Memory questions per executive turn.",
            ),
            click.option(
                "--narrow-rounds",
                type=int,
                default=ProtocolSettings.narrow_rounds,
                show_default=True,
                help="Entity-identification turns at most.",
            ),
            click.option(
                "--gather-rounds",
                type=int,
                default=ProtocolSettings.gather_rounds,
                show_default=True,
                help="Answer-seeking turns at most.",
            ),
            click.option(
                "--json-mode/--no-json-mode",
                default=True,
                show_default=True,
                help="Ask the executive for response_format json_object.",
            ),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def protocol_settings(max_questions: int, narrow_rounds: int, gather_rounds: int, json_mode: bool):
    try:
        return ProtocolSettings(
            max_questions=max_questions, narrow_rounds=narrow_rounds, gather_rounds=gather_rounds, json_mode=json_mode
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e


def memory_endpoint(memory_url: str | None, memory_model: str | None) -> Endpoint | None:
    if bool(memory_url) != bool(memory_model):
        raise click.UsageError("give --memory-url and --memory-model together")
    return Endpoint(memory_url, memory_model) if memory_url and memory_model else None


@click.command()
@click.argument("question")
@click.option("--channel", default=None, help="Question this channel's model [default: production].")
@click.option("--merge", "merge_ref", default=None, metavar="MERGE", help="Question a merge instead (7, merge-7).")
@executive_options(required=True)
@click.option("--device", default="auto", show_default=True, help="Where the local memory runs.")
@json_option
@pass_app
def ask(
    app: AppContext,
    question: str,
    channel: str | None,
    merge_ref: str | None,
    executive_url: str,
    executive_model: str,
    memory_url: str | None,
    memory_model: str | None,
    max_questions: int,
    narrow_rounds: int,
    gather_rounds: int,
    json_mode: bool,
    device: str,
    as_json: bool,
) -> None:
    """Answer QUESTION with MeMo's Executive–Memory protocol.

    The executive decomposes the question into sub-questions the memory
    model answers, narrows down the entity it is about, gathers facts about
    it and writes the answer. Prints the transcript; --json gives the trace.

    \b
    Examples:
      memo ask "Who founded the guild that runs the Ethcas furnace?" \\
          --executive-url http://127.0.0.1:11434/v1 --executive-model qwen2.5:14b
      memo ask "..." --merge 3 --memory-url http://127.0.0.1:8100/v1 --memory-model production --json
    """
    if channel and merge_ref:
        raise click.UsageError("give --channel or --merge, not both")
    settings = protocol_settings(max_questions, narrow_rounds, gather_rounds, json_mode)
    endpoint = memory_endpoint(memory_url, memory_model)
    reg = app.registry()
    with err_console.status("loading the memory model", spinner="dots"):
        memory = reg.memory(merge_ref or channel or "production", endpoint=endpoint, device=device)
    with err_console.status("asking", spinner="dots"):
        trace = reg.ask(question, Endpoint(executive_url, executive_model), memory, settings)
    if as_json:
        print_json(trace.to_json())
    else:
        print_transcript(trace)


def print_transcript(trace) -> None:
    out = console()
    out.print(f"[bold]question[/bold] {trace.question}")
    for step in trace.steps:
        decision = {k: v for k, v in step.executive.items() if k not in ("questions", "clues") and v}
        label = f"{step.stage} {step.round}" if step.round else step.stage
        out.print(f"\n[cyan]{label}[/cyan] " + ", ".join(f"{k}: {v}" for k, v in decision.items()), highlight=False)
        for call in step.memory:
            out.print(
                f"  ? {call.question}\n    -> {call.answer or '(empty)'}",
                style="dim" if call.unknown else None,
                highlight=False,
                markup=False,
            )
    out.print(
        f"\n[bold]answer[/bold] {trace.answer}  [dim]({trace.executive_calls} executive calls, "
        f"{trace.memory_calls} memory calls; target {trace.target or '-'})[/dim]",
        highlight=False,
    )


@click.command()
@click.argument("channel")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 serves other machines too)."
)
@click.option("--port", type=int, default=8100, show_default=True, help="Port (0: any free port).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    help="Largest request body in bytes; larger ones get 413.",
)
@click.option(
    "--max-pending",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PENDING,
    show_default=True,
    help="Questions waiting at once; past it, requests get 429 with Retry-After.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Questions answered by one generate call.",
)
@allow_host_option
@pass_app
def serve(
    app: AppContext,
    channel: str,
    host: str,
    port: int,
    device: str,
    max_body: int,
    max_pending: int,
    batch: int,
    allow_hosts: tuple[str, ...],
) -> None:
    """Serve CHANNEL's memory model as an OpenAI-compatible endpoint.

    POST /v1/chat/completions answers the last user message with the model
    the channel points at now: a `memo promote` or `memo rollback` swaps it
    without a restart. Every reply names its merge in system_fingerprint.
    Concurrent questions are answered in batches; errors are OpenAI-style
    JSON.

    \b
    Example:
      memo serve production --port 8100
      curl http://127.0.0.1:8100/v1/chat/completions -H 'Content-Type: application/json' \\
          -d '{"model": "production", "messages": [{"role": "user", "content": "Who founded Port Velin?"}]}'
    """
    with err_console.status("loading the memory model", spinner="dots"):
        source = app.registry().channel_source(channel, device=device)
    try:
        server = MemoryServer(
            source, host, port, max_body=max_body, max_pending=max_pending, batch=batch, allow_hosts=allow_hosts
        )
    except OSError as e:
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port"
        ) from None
    label, _ = source.current()
    warn_if_exposed(host, "memo serve")
    click.echo(f"serving channel {channel} ({label}) at {server.url}  (Ctrl-C stops)", err=False)
    server.serve_forever()
