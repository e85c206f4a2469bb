"""Entry point: dispatches subcommands and turns user mistakes into one line and exit code 2."""

from __future__ import annotations

import os
import re
import sys
import warnings

import typer

try:  # typer >= 0.20 vendors its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover
    from click import ClickException  # type: ignore[assignment]
    from click.exceptions import NoArgsIsHelpError  # type: ignore[assignment]

from fleettune.errors import FleettuneError, RunInterrupted

app = typer.Typer(
    name="fleettune",
    help="Fine-tune language models across fleets of IoT devices without moving their data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Fine-tune language models across fleets of IoT devices without moving their data."""


def _register() -> None:
    if app.registered_commands:
        return
    from fleettune.cli.certs import certs
    from fleettune.cli.join import join
    from fleettune.cli.partition import partition
    from fleettune.cli.plan import plan
    from fleettune.cli.run import run
    from fleettune.cli.schedule import schedule
    from fleettune.cli.serve import serve

    app.command("run")(run)
    app.command(
        "compare", help="Run several schemes on identical settings; write their reports, comparison.json and plots."
    )(run)
    app.command("schedule")(schedule)
    app.command("plan")(plan)
    app.command("certs")(certs)
    app.command("serve")(serve)
    app.command("join")(join)
    app.command("partition")(partition)


def _fail(message: str, code: int, kind: str = "error") -> None:
    first = " ".join(message.strip().split()) or kind
    print(f"fleettune: {kind}: {first}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Library deprecation chatter is not the user's concern; our own warnings still show.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft)\.")
    _register()
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="fleettune", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError:  # the help above lists the commands
        _fail("expected a command (run, compare, schedule, plan, ...); see the list above", 2)
    except ClickException as exc:  # bad flags: click's own message, on one line
        _fail(exc.format_message(), 2)
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted", 130)
    except RunInterrupted as exc:  # asked to stop: not an error, but not a finished run either
        _fail(str(exc), exc.exit_code, "stopped")
    except FleettuneError as exc:
        _fail(str(exc), exc.exit_code)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        _fail(out_of_memory_message(exc), 1)


_ALLOCATION = re.compile(r"(?:can't allocate memory|out of memory)", re.IGNORECASE)
_TRIED = re.compile(r"tried to allocate (\d+) bytes")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation this machine refused (torch's CPU allocator, or Python's own)."""
    return isinstance(exc, MemoryError) or _ALLOCATION.search(str(exc)) is not None


def out_of_memory_message(exc: BaseException) -> str:
    """One line for an allocation that failed: how much was asked for, when torch says, and what to change."""
    tried = _TRIED.search(str(exc))
    asked = f" (an allocation of {int(tried.group(1)) / 2**30:,.2f} GiB)" if tried else ""
    return (
        f"this machine ran out of memory{asked}; expected a smaller batch_size or max_length, "
        "or a machine with more memory"
    )


if __name__ == "__main__":
    main()
