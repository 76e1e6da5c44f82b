"""The recovery runbook, generated from the plan and the last drill record.

The document is built once as blocks (headings, paragraphs, lists, code, tables) and rendered
to Markdown (RUNBOOK.md) and to a printable HTML page. The restore commands come from the
drill record: each is the command whose code path the last drill executed (the drill calls
the same restore function as `safehold restore`), so nothing in the runbook is untried.
A marker comment records the plan's hash and the drill it was built from, so `safehold status`
can tell when the runbook is out of date. Secrets never appear: the plan's redactor runs over
every line."""

from __future__ import annotations

import hashlib
import html
import re
import shlex
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from safehold.app.incident import IncidentRecord
from safehold.drills.blocks import Block
from safehold.drills.incident_page import incident_page, typed_target
from safehold.drills.record import DrillRecord
from safehold.drills.runner import format_duration_s
from safehold.plan.logins import describe_login, uses_environment
from safehold.plan.models import (
    AnySource,
    CommandConfig,
    LocalDestination,
    MySQLConfig,
    Plan,
    PostgresConfig,
    SecretsConfig,
    SQLiteConfig,
)
from safehold.policy.duration import format_duration

MARKER = re.compile(r"<!-- safehold-runbook plan=([0-9a-f]+) drill=([0-9a-f]*) -->")


def plan_fingerprint(plan: Plan) -> str:
    """A short hash of the plan file's bytes: changes when the plan changes."""
    if plan.file is None or not plan.file.exists():
        return "0" * 12
    return hashlib.sha256(plan.file.read_bytes()).hexdigest()[:12]


def runbook_state(path: Path) -> tuple[str, str] | None:
    """(plan fingerprint, drill record id) a runbook was generated from; None if unreadable."""
    try:
        head = path.read_text(errors="replace")[:4000]
    except OSError:
        return None
    match = MARKER.search(head)
    return (match.group(1), match.group(2)) if match else None


# ----- content -----------------------------------------------------------------------------


def _placeholder(source: AnySource) -> str:
    if isinstance(source, PostgresConfig):
        return "postgresql://USER:PASSWORD@NEW-HOST:5432/NEW_DATABASE"
    if isinstance(source, MySQLConfig):
        return "mysql://USER:PASSWORD@NEW-HOST:3306/NEW_DATABASE"
    if isinstance(source, SQLiteConfig):
        return f"/srv/restore/{source.path.name}"
    return f"/srv/restore/{source.name}"


def _destination_lines(plan: Plan, destination: LocalDestination) -> list[str]:
    lines = [
        f"**{destination.name}** ({destination.type}): `{destination.location()}`",
        f"password from {destination.password_source()}",
    ]
    if destination.type != "local" and not uses_environment(destination):
        lines.append(f"storage login: {describe_login(plan, destination, {})}")
    elif destination.type == "s3":
        lines.append(
            "storage credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
        if destination.object_lock_days:
            lines.append(
                f"Object Lock: {destination.object_lock_mode}, "
                f"{destination.object_lock_days:g} days: backups cannot be deleted before that"
            )
    if destination.type == "sftp":
        lines.append("storage credentials: an SSH key (SAFEHOLD_SFTP_IDENTITY, else ~/.ssh/id_*)")
    if destination.copy_after_backup:
        lines.append("receives a copy after every backup")
    return lines


def _people(plan: Plan) -> list[Block]:
    blocks = [Block("h2", "1. Who decides, who to call")]
    approvers = plan.owners.restore_approvers
    if approvers:
        blocks.append(
            Block(
                "p",
                "A restore of production is decided by: "
                + ", ".join(approvers)
                + ". Get their go-ahead before step 5.",
            )
        )
    else:
        blocks.append(
            Block(
                "p",
                "No restore approver is named in the plan: add "
                "`[owners] restore_approvers = [...]`, so nobody has to guess.",
            )
        )
    contacts = [f"{name}: {how}" for name, how in plan.owners.contacts.items()]
    for source in plan.sources:
        if source.owner:
            contacts.append(f"{source.name}: owner {source.owner}")
    if contacts:
        blocks.append(Block("ul", items=contacts))
    return blocks


def _needs(plan: Plan) -> list[Block]:
    items = [
        "a machine with safehold installed (`pip install safehold`) and this runbook",
        "the plan file "
        + (f"`{plan.file.name}`" if plan.file else "`safehold.toml`")
        + " (it holds no secrets; keep a copy with this runbook)",
    ]
    for destination in plan.destinations:
        items.append(
            f"the password of destination {destination.name}: from {destination.password_source()}"
        )
    for source in plan.sources:
        if source.credentials_at:
            items.append(f"credentials of {source.name}: {source.credentials_at}")
    return [Block("h2", "2. What you need"), Block("ul", items=items)]


def _copies(plan: Plan) -> list[Block]:
    blocks = [Block("h2", "3. Where the backups are")]
    lines = [" — ".join(_destination_lines(plan, d)) for d in plan.destinations]
    blocks.append(Block("ul", items=lines))
    blocks.append(
        Block(
            "p",
            "List what each holds (newest last), then pick one: the newest "
            "complete snapshot unless the newest is already damaged:",
        )
    )
    first = plan.destinations[0].name
    commands = ["safehold snapshots", "safehold snapshots --reason predeploy"]
    for destination in plan.destinations[1:]:
        commands.append(f"safehold drill --from {destination.name}   # if {first} is gone")
    blocks.append(Block("code", "\n".join(commands)))
    return blocks


def _restore_steps(plan: Plan, drill: DrillRecord | None) -> list[Block]:
    blocks = [Block("h2", "4. Restore each source into a NEW place")]
    blocks.append(
        Block(
            "p",
            "Never restore straight over production: restore into a new "
            "place, check it, then switch. Replace SNAPSHOT with the id from step 3 "
            "(or write `latest`).",
        )
    )
    executed = {s.name: s for s in drill.sources} if drill else {}
    for source in plan.sources:
        blocks.append(Block("h3", f"{source.name} ({source.type}: {source.location()})"))
        name, target = shlex.quote(source.name), shlex.quote(_placeholder(source))
        blocks.append(Block("code", f"safehold restore SNAPSHOT --source {name} --into {target}"))
        tried = executed.get(source.name)
        if tried is not None and tried.command:
            result = "passed" if tried.ok else "FAILED"
            blocks.append(
                Block(
                    "p",
                    f"The last drill ran exactly this ({result}, "
                    f"{format_duration_s(tried.seconds)}) into a scratch place: "
                    f"`{tried.command}`",
                )
            )
        else:
            blocks.append(Block("p", "**Not drilled yet**: run `safehold drill` to prove it."))
        if isinstance(source, PostgresConfig) and source.globals:
            blocks.append(
                Block(
                    "p",
                    "Roles and grants are in `globals.sql` of the snapshot "
                    "(`safehold dump SNAPSHOT /" + source.name + "/globals.sql`): the "
                    "restore creates the roles a new server lacks and keeps owners "
                    "(`--no-roles`, `--no-owner` to skip).",
                )
            )
        if isinstance(source, SecretsConfig):
            how = (
                f"`{source.identity_command}` prints it" if source.identity_command
                else "add `--identity key.txt`, the file from the password manager"
            )  # fmt: skip
            blocks.append(
                Block(
                    "p",
                    "These are age-encrypted: the restore needs the age identity, which is "
                    f"kept apart from the backups ({how}). The files come back at their paths "
                    "and the variables as `env`, mode 0600.",
                )
            )
        if isinstance(source, CommandConfig):
            blocks.append(
                Block(
                    "p",
                    f"This is the output of `{source.command}`: re-import it "
                    "with the vendor's tool.",
                )
            )
        if source.notes:
            blocks.append(Block("p", f"Notes: {source.notes}"))
    return blocks


def _verify(plan: Plan) -> list[Block]:
    items = [
        "every restore prints its tables and row counts and says `matches backup`; "
        "files are compared with the snapshot"
    ]
    for check in plan.drill.checks:
        items.append(check.label())
    return [
        Block("h2", "5. Verify, then switch production"),
        Block(
            "p",
            "The drill checks the same things; the restores above already verify row "
            "counts. Check:",
        ),
        Block("ul", items=items),
        Block(
            "p",
            "When it is right and approved, point the app at the restored copy (new "
            "DATABASE_URL, new uploads folder) — or restore onto production, which first "
            "takes an evidence snapshot of what is there now:",
        ),
        Block(
            "code",
            "\n".join(
                f"safehold restore SNAPSHOT --source {shlex.quote(s.name)} "
                f"--into {typed_target(plan, s)} --to-production --yes"
                for s in plan.sources
                if typed_target(plan, s)
            ),
        ),
        Block(
            "p",
            "The drill never runs this last step (it never touches production); it "
            "uses the same restore code with the overwrite switch.",
        ),
    ]


def _last_drill(plan: Plan, drill: DrillRecord | None) -> list[Block]:
    blocks = [Block("h2", "6. The last drill")]
    if drill is None:
        blocks.append(
            Block(
                "p",
                "**No drill yet.** Nothing in this runbook is proven: run "
                "`safehold drill` and then `safehold runbook` again.",
            )
        )
        return blocks
    verdict = "PASSED" if drill.passed else "FAILED"
    when = drill.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rto_target = format_duration(plan.targets.rto)
    rpo_target = format_duration(plan.targets.rpo)
    rto = f"{rto_target} ({'within' if drill.rto_ok else 'OVER'})"
    rpo = f"{rpo_target} ({'within' if drill.rpo_ok else 'OVER'})"
    snapshot = drill.snapshot_name or drill.snapshot_id[:8]
    blocks.append(
        Block(
            "p",
            f"**{verdict}** on {when} on {drill.host}, snapshot "
            f"{snapshot} from {drill.destination}.",
        )
    )
    blocks.append(
        Block(
            "table",
            rows=[
                ["measure", "result", "target"],
                ["time to restore (RTO)", format_duration_s(drill.rto_measured_s), rto],
                ["data lost if restored then (RPO)", format_duration_s(drill.data_age_s), rpo],
                *[
                    [
                        f"point-in-time RPO reached ({entry.get('source')}, base backup "
                        f"{entry.get('base_backup')})",
                        "not measured"
                        if entry.get("rpo_measured_s") is None
                        else format_duration_s(float(entry["rpo_measured_s"])),
                        rpo_target,
                    ]
                    for entry in drill.pitr
                ],
            ],
        )
    )
    rows = [["phase", "time", "result"]]
    rows += [
        [p.name, format_duration_s(p.seconds), "ok" if p.ok else "FAILED"] for p in drill.phases
    ]
    blocks.append(Block("table", rows=rows))
    if drill.reasons:
        blocks.append(Block("p", "Why it failed:"))
        blocks.append(Block("ul", items=list(drill.reasons)))
    return blocks


def _bad_code(plan: Plan) -> list[Block]:
    """ "A rollback is for bad code. A restore is for bad data.": the path for bad code."""
    blocks = [
        Block("h2", "8. Bad code: roll back (bad data: restore, above)"),
        Block(
            "p",
            "When a deploy broke the app but not its data, roll the code back. First ask "
            "whether that alone is safe: it is when the migrations since the previous release "
            "were additive. When one dropped or changed a column, the old code needs that data "
            "back: the dry run prints the data path (restore beside production, roll back, "
            "copy the values back).",
        ),
    ]
    release = plan.release
    if release is None or not release.rollback_command:
        blocks.append(
            Block(
                "p",
                "**No rollback command in the plan.** Add `[release] rollback_command = "
                '"git checkout {git_sha} && ./deploy"` and run `safehold release start --id '
                "REL` in the deploy script, so each release has a held pre-deploy snapshot.",
            )
        )
        return blocks
    owners = ", ".join(plan.owners.rollback) or "anyone with the repository password"
    blocks.append(
        Block(
            "code",
            "safehold releases            # the ledger: snapshot, migrations, reversible?\n"
            "safehold rollback --dry-run  # safe or not, and the data path when not\n"
            "safehold rollback --yes      # runs: " + release.rollback_command,
        )
    )
    blocks.append(Block("p", f"Who may run it: {owners}."))
    return blocks


def _just_before(plan: Plan) -> list[Block]:
    """The "restore to just before it happened" path, for sources with point-in-time recovery."""
    sources = [s for s in plan.sources if isinstance(s, PostgresConfig) and s.pitr]
    if not sources:
        return []
    blocks = [
        Block("h2", "9. Bad data a moment ago: restore to just before it happened"),
        Block(
            "p",
            "A table dropped, a migration that destroyed rows: get the database as it was one "
            "second before, into a NEW database, then copy back what is needed. Find the moment "
            "in the app's or PostgreSQL's log; a dry run shows the base backup, the WAL and the "
            "time it will take.",
        ),
    ]
    for source in sources:
        provider = source.provider_pitr_window
        if provider is not None:
            blocks.append(Block(
                "p",
                f"**{source.name}**: point-in-time recovery is the provider's (window "
                f"{format_duration(provider)}), not safehold's. In the provider's console: "
                "choose the database, \"Restore to point in time\" (RDS: Actions, Restore to "
                "point in time; Neon: Branches, create a branch from a time; Supabase: "
                "Database, Backups, Point in time), pick the moment, restore into a NEW "
                "instance, then point a copy job at it.",
            ))  # fmt: skip
            continue
        blocks.append(Block(
            "code",
            "safehold wal status                      # the recoverable window\n"
            f'safehold restore latest --source {source.name} --at "YYYY-MM-DD HH:MM:SS+00" \\\n'
            f"    --into {_placeholder(source)} --dry-run\n"
            f'safehold restore latest --source {source.name} --at "YYYY-MM-DD HH:MM:SS+00" \\\n'
            f"    --into {_placeholder(source)}",
        ))  # fmt: skip
    return blocks


def build_runbook(
    plan: Plan,
    drill: DrillRecord | None,
    now: datetime,
    incidents: Sequence[IncidentRecord] = (),
) -> list[Block]:
    title = f"Recovery runbook: {plan.app} ({plan.env})"
    intro = (
        f"Generated by `safehold runbook` on {now.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')}. "
        f"Targets: lose at most {format_duration(plan.targets.rpo)} of data (RPO), be back "
        f"within {format_duration(plan.targets.rto)} (RTO). Follow the steps in order; every "
        "command is typed as shown, in the folder of the plan file."
    )
    blocks = [Block("h1", title), Block("p", intro)]
    for part in (
        _people(plan),
        _needs(plan),
        _copies(plan),
        _restore_steps(plan, drill),
        _verify(plan),
        _last_drill(plan, drill),
        incident_page(plan, incidents),
        _bad_code(plan),
        _just_before(plan),
    ):
        blocks.extend(part)
    redact = plan.redactor()
    for block in blocks:
        block.text = redact(block.text)
        block.items = [redact(item) for item in block.items]
        block.rows = [[redact(cell) for cell in row] for row in block.rows]
    return blocks


# ----- rendering -----------------------------------------------------------------------------


def _marker(plan: Plan, drill: DrillRecord | None) -> str:
    drill_id = drill.record_id if drill else ""
    return f"<!-- safehold-runbook plan={plan_fingerprint(plan)} drill={drill_id} -->"


def to_markdown(blocks: list[Block], plan: Plan, drill: DrillRecord | None) -> str:
    out = [_marker(plan, drill), ""]
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            out += ["#" * int(block.kind[1]) + " " + block.text, ""]
        elif block.kind == "p":
            out += [block.text, ""]
        elif block.kind in ("ul", "ol"):
            out += [("1. " if block.kind == "ol" else "- ") + item for item in block.items] + [""]
        elif block.kind == "code":
            out += ["```sh", block.text, "```", ""]
        elif block.kind == "table":
            header, *body = block.rows
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(row) + " |" for row in body]
            out.append("")
    return "\n".join(out)


_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _INLINE_CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


_STYLE = """body{font:15px/1.5 system-ui,sans-serif;max-width:52em;margin:2em auto;color:#111}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;border:1px solid #ddd}
code{font-family:ui-monospace,monospace;font-size:.92em}
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .6em;text-align:left}
@media print{body{margin:0;max-width:none}pre{break-inside:avoid}}"""


def to_html(blocks: list[Block], plan: Plan, drill: DrillRecord | None) -> str:
    title = html.escape(blocks[0].text if blocks else "Runbook")
    out = [
        _marker(plan, drill),
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
    ]
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            out.append(f"<{block.kind}>{_inline(block.text)}</{block.kind}>")
        elif block.kind == "p":
            out.append(f"<p>{_inline(block.text)}</p>")
        elif block.kind in ("ul", "ol"):
            items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
            out.append(f"<{block.kind}>{items}</{block.kind}>")
        elif block.kind == "code":
            out.append(f"<pre><code>{html.escape(block.text, quote=False)}</code></pre>")
        elif block.kind == "table":
            header, *body = block.rows
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body
            )
            out.append(f"<table><tr>{head}</tr>{rows}</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
