"""Entry point of the ``trader`` command."""

from __future__ import annotations

import re
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from trader import __version__
from trader.cli import config_cmd, data, db, model, ops, paper, research, serve
from trader.cli.output import error
from trader.config import MASK, SECRET_NAME, VAR_DIR, mask_urls_in_text
from trader.errors import TraderError

try:  # Typer >= 0.22 raises the exceptions of the click copy it vendors, not click's own
    from typer._click import exceptions as cli_errors
except ImportError:  # pragma: no cover - older Typer on top of click
    from click import exceptions as cli_errors  # type: ignore[no-redef]

app = typer.Typer(
    name="trader",
    help=(
        "qlib-alpaca-trader: Qlib research to Alpaca execution, one code path for replay, paper and live.\n\n"
        "Safe by default: DRY_RUN=true and the built-in paper broker. Configuration comes from the "
        "environment and .env (see .env.example)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(config_cmd.app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(serve.app, name="serve")
app.add_typer(research.app, name="research")
app.command("paper-run")(paper.paper_run)
app.command("replay")(paper.replay)
app.command("signal")(paper.signal)
app.add_typer(paper.report_app, name="report")
app.add_typer(model.app, name="model")
app.command("status")(ops.status)
app.add_typer(ops.circuit_app, name="circuit")
app.command("kill")(ops.kill)


def _print_version(value: bool) -> None:
    if value:
        print(f"trader {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """qlib-alpaca-trader command line."""


CRASH_LOG = VAR_DIR / "log" / "trader-errors.log"


#: An option name (``--api-key``); its value is a secret when the name says so (:data:`SECRET_NAME`).
_OPTION = re.compile(r"--?[\w-]+")


def mask_argv(args: list[str]) -> list[str]:
    """The command line with URL passwords and the values of secret-looking options masked."""
    masked: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            masked.append(MASK)
            hide_next = False
            continue
        name, equals, _ = arg.partition("=")
        if _OPTION.fullmatch(name) and SECRET_NAME.search(name):
            if equals:
                masked.append(f"{name}={MASK}")
                continue
            hide_next = True
        masked.append(mask_urls_in_text(arg))
    return masked


def _record_crash(args: list[str]) -> Path:
    CRASH_LOG.parent.mkdir(parents=True, exist_ok=True)
    with CRASH_LOG.open("a", encoding="utf-8") as handle:
        handle.write(f"--- {datetime.now(UTC).isoformat()} trader {' '.join(mask_argv(args))}\n")
        handle.write(mask_urls_in_text(traceback.format_exc()))
    return CRASH_LOG


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: 0 ok, 1 failed, 2 bad usage or configuration."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    try:
        result = command.main(args=args, prog_name="trader", standalone_mode=False)
    except cli_errors.NoArgsIsHelpError:
        return 2  # the help text has been printed already
    except cli_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "trader"
        error(f"{exc.format_message()} (see '{where} --help')")
        return 2
    except typer.Abort:
        error("aborted")
        return 1
    except cli_errors.ClickException as exc:
        error(exc.format_message())
        return exc.exit_code
    except TraderError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as exc:
        log = _record_crash(args)
        error(f"internal error ({type(exc).__name__}: {mask_urls_in_text(str(exc))}); details in {log}")
        return 1
    return result if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(run())
