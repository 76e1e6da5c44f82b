"""`safehold wal-stream`: stream WAL over a replication connection into the repository."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click

from safehold.cli.context import CliState, pass_state
from safehold.errors import ExitCode
from safehold.pitr.restore import pitr_source
from safehold.pitr.stream import WalStreamer
from safehold.plan.models import PostgresConfig
from safehold.sources.postgres import PostgresSource

DEFAULT_SPOOL_ROOT = "/var/lib/safehold/wal-stream"


def stream_spool(config: PostgresConfig, spool: str | None) -> Path:
    """The streamer's spool: --spool, else the plan's `wal_spool`, else a folder per source."""
    return Path(spool or config.wal_spool or f"{DEFAULT_SPOOL_ROOT}/{config.name}")


@click.command("wal-stream")
@click.option("--source", "source_name", help="The PostgreSQL source (default: the only one).")
@click.option("--spool", help="Where pg_receivewal writes (default: the plan's wal_spool, "
              f"else {DEFAULT_SPOOL_ROOT}/SOURCE).")  # fmt: skip
@click.option("--slot", help="The replication slot (default: the plan's wal_slot, `safehold`); "
              "created when missing.")  # fmt: skip
@click.option("--synchronous", is_flag=True,
              help="pg_receivewal fsyncs and confirms every write, not only each finished "
              "segment (needed for synchronous_standby_names).")  # fmt: skip
@click.option("--check", "check_only", is_flag=True,
              help="Only check the replication rights and the slot, then exit.")  # fmt: skip
@pass_state
def wal_stream(
    state: CliState,
    source_name: str | None,
    spool: str | None,
    slot: str | None,
    synchronous: bool,
    check_only: bool,
) -> int:
    """Stream WAL with pg_receivewal and a replication slot; push every finished segment.

    Runs in the foreground until SIGTERM or Ctrl-C (then pg_receivewal stops and the
    finished segments are pushed). A restart resumes where the slot says.
    """
    plan = state.require_plan("wal-stream")
    config = pitr_source(plan, source_name)
    source = PostgresSource(config.name, config.url, config.database_names() or None)
    folder = stream_spool(config, spool)

    def log(line: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        click.echo(f"{stamp} {line}", err=True)

    streamer = WalStreamer(
        source, folder, lambda: state.open(plan), slot=slot or config.wal_slot,
        synchronous=synchronous, log=log,
    )  # fmt: skip
    if check_only:
        created = streamer.prepare()
        state.say(f"{config.name}: replication rights ok; slot {streamer.slot} "
                  + ("created" if created else "exists"))  # fmt: skip
        return ExitCode.OK

    def stop(signum: int, frame: FrameType | None) -> None:
        streamer.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = streamer.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state.say(f"{config.name}: {len(stats.pushed)} WAL file(s) pushed while streaming")
    return ExitCode.OK


COMMANDS = [wal_stream]
