"""Entry point: global options, the command table, and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import signal
import sys
import warnings
from types import FrameType
from typing import TextIO

import click

from safehold.cli.argv import hoist_global_options
from safehold.cli.context import make_state
from safehold.cli.timeline import record_command
from safehold.errors import ExitCode, SafeholdError, SafeholdWarning
from safehold.redaction import redact
from safehold.runtime import tune_allocator
from safehold.version import __version__

# Every command module loads only when one of its commands is asked for (or for --help): a
# backup does not pay for psycopg, the alert senders or the migration linter's sqlglot (a
# command started ~0.2 CPU-s sooner). main() records every command's outcome in an open
# incident's timeline with cli/timeline.py, which is light (no plan models). Name of each
# command -> its module; tests/cli check the table against the modules.
_COMMAND_MODULES = {
    "repo_commands": ("init", "key", "unlock", "check", "forget", "prune", "stats", "repair"),
    "backup_commands": ("backup",),
    "restore_commands": ("restore", "dump"),
    "inspect_commands": ("snapshots", "ls", "diff"),
    "hold_commands": ("hold", "unhold", "holds"),
    "incident_commands": ("incident",),
    "lock_commands": ("lock",),
    "plan_commands": ("plan",),
    "copy_commands": ("copy",),
    "db_commands": ("db",),
    "drill_commands": ("drill", "drills", "runbook"),
    "status_commands": ("status",),
    "schedule_commands": ("schedule", "job", "run"),
    "alert_commands": ("alerts", "watch", "metrics"),
    "rescue_commands": ("rescue",),
    "pitr_commands": ("wal-push", "wal", "pitr"),
    "stream_commands": ("wal-stream",),
    "migration_commands": ("migrations",),
    "release_commands": ("release", "releases", "rollback"),
}
LAZY_COMMANDS = {
    name: f"safehold.cli.{module}" for module, names in _COMMAND_MODULES.items() for name in names
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = LAZY_COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            for command in importlib.import_module(module).COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-r", "--repo", envvar="SAFEHOLD_REPOSITORY", help="Repository location.")
@click.option("--password-file", help="Read the password from this file.")
@click.option("--password-command", help="Run this command to get the password.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (and --json output).")
@click.option("--plan", "plan", help="The plan file (default: ./safehold.toml or SAFEHOLD_PLAN).")
@click.option("--progress-interval", type=click.FloatRange(min=0, min_open=True), default=10,
              show_default=True, envvar="SAFEHOLD_PROGRESS_INTERVAL", metavar="SECONDS",
              help="Off a terminal (logs) and with --json: print progress this often.")  # fmt: skip
@click.version_option(__version__, prog_name="safehold")
@click.pass_context
def cli(
    ctx: click.Context,
    repo: str | None,
    password_file: str | None,
    password_command: str | None,
    quiet: bool,
    plan: str | None,
    progress_interval: float,
) -> None:
    """safehold: backups you have restored. Repository format: restic v2.

    The repository comes from -r/--repo or SAFEHOLD_REPOSITORY; the password from
    SAFEHOLD_PASSWORD, SAFEHOLD_PASSWORD_FILE or SAFEHOLD_PASSWORD_COMMAND.
    """
    ctx.obj = make_state(repo, password_file, password_command, quiet, plan, progress_interval)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_error(error: SafeholdError) -> None:
    click.echo(f"error: {redact(error.message)}", err=True)
    if error.hint:
        click.echo(f"hint: {redact(error.hint)}", err=True)


def _print_warnings_once() -> None:
    """Print each SafeholdWarning core code issues (a skipped damaged snapshot) once, on
    stderr, redacted, like `CliState.warn`; other warnings keep Python's handling. Call
    inside `warnings.catch_warnings()`."""
    shown: set[str] = set()
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
        if not issubclass(category, SafeholdWarning):
            original(message, category, filename, lineno, file, line)
            return
        text = str(message)
        if text not in shown:
            shown.add(text)
            click.echo(f"warning: {redact(text)}", err=True)

    warnings.showwarning = show
    warnings.simplefilter("always", SafeholdWarning)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) a documented exit code, never a traceback."""
    signal.signal(signal.SIGTERM, _terminate)
    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored;
    # an explicit kill -INT must still stop a backup cleanly (locks released, exit 130).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tune_allocator()
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        with warnings.catch_warnings():
            _print_warnings_once()
            result = cli.main(args=args, prog_name="safehold", standalone_mode=False)
        code = result if isinstance(result, int) else ExitCode.OK
    except SafeholdError as error:
        _print_error(error)
        code = error.exit_code
    except click.exceptions.Abort:  # click turns Ctrl-C at a prompt into Abort
        click.echo(
            "error: interrupted\nhint: the repository is intact; run the command again",
            err=True,
        )
        code = ExitCode.INTERRUPTED
    except click.ClickException as error:
        click.echo(f"error: {redact(error.format_message())}", err=True)
        click.echo("hint: see `safehold --help` or `safehold COMMAND --help`", err=True)
        code = ExitCode.ERROR
    except click.exceptions.Exit as exit_:
        code = exit_.exit_code
    except KeyboardInterrupt:
        click.echo(
            "error: interrupted\nhint: the repository is intact; run the command again",
            err=True,
        )
        code = ExitCode.INTERRUPTED
    except BrokenPipeError:
        code = ExitCode.OK
    record_command(args, int(code))
    sys.stdout.flush()
    return code


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
