"""``trader serve``: run a service. ``paper-broker`` is built; the others arrive with later issues."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trader.config import load_settings
from trader.errors import NotBuiltError, UsageError

app = typer.Typer(
    help="Run a service: paper-broker (built), gateway, signal, reconciler.",
    no_args_is_help=True,
)

_ACCEPT_ANYTHING = {"ignore_unknown_options": True, "allow_extra_args": True}


def check_port(port: int) -> int:
    """``port`` when it is a TCP port number (1-65535), else a :class:`UsageError`."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port: {port} is not a TCP port; use 1-65535")
    return port


def check_data_dir(path: Path) -> Path:
    """``path`` when it is a directory or does not exist yet (then the synthetic market is served)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--data-dir: {path} is not a directory")
    return path


@app.command("paper-broker")
def paper_broker(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on (1-65535).")] = 8765,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="DATA_DIR to serve market data from (default: DATA_DIR setting)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the synthetic market served when DATA_DIR holds no raw bars.")
    ] = 7,
) -> None:
    """Run the built-in Alpaca-compatible paper broker (market data: daily bars, corporate actions).

    Accepts the key pair of ALPACA_API_KEY_ID / ALPACA_API_SECRET_KEY (default: the local paper keys).
    """
    import uvicorn

    from trader.paperbroker import PaperBrokerSettings, create_app

    check_port(port)
    if seed < 0:
        raise UsageError(f"--seed: {seed} must be a non-negative integer")
    settings = load_settings()
    directory = check_data_dir(data_dir if data_dir is not None else settings.data_dir)
    broker = PaperBrokerSettings(
        data_dir=directory,
        api_key_id=settings.alpaca_api_key_id.get_secret_value(),
        api_secret_key=settings.alpaca_api_secret_key.get_secret_value(),
        synthetic_seed=seed,
    )
    print(f"paper broker on http://{host}:{port} serving {directory}")
    uvicorn.run(create_app(broker), host=host, port=port, log_level="warning")


def _not_built(name: str, issue: str) -> None:
    @app.command(name, help=f"Not built yet: arrives with {issue}.", context_settings=_ACCEPT_ANYTHING)
    def handler(ctx: typer.Context) -> None:
        if ctx.resilient_parsing:
            return
        raise NotBuiltError(f"'trader serve {name}' is not built yet; it arrives with {issue}")


_not_built("gateway", "the paper-trading issue (#6)")
_not_built("signal", "the paper-trading issue (#6)")
_not_built("reconciler", "the safety issue (#7)")
