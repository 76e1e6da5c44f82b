"""`@alerts_on_failure("backup")`: a command run with a plan alerts its channels when it fails
and says "recovered" when it works again (app/command_alerts.py). Put it right above the
command function, below `@pass_state`."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from safehold.cli.context import CliState
from safehold.errors import ExitCode, SafeholdError

F = TypeVar("F", bound=Callable[..., Any])


def alerts_on_failure(job: str) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(state: CliState, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("dry_run") or kwargs.get("paths") or not _plan_mode(state):
                return command(state, *args, **kwargs)
            try:
                result = command(state, *args, **kwargs)
            except SafeholdError as error:
                if error.exit_code != ExitCode.INTERRUPTED:  # stopped on purpose: no alert
                    _report(state, job, error.exit_code, [error.message], error.hint or "")
                raise
            code = result if isinstance(result, int) else ExitCode.OK
            _report(state, job, code, state.failure_details, "")
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _plan_mode(state: CliState) -> bool:
    return state.has_plan() and not state.explicit_repository()


def _report(state: CliState, job: str, code: int, errors: list[str], hint: str) -> None:
    from safehold.ops.command_alerts import CommandOutcome, report_command

    try:
        plan = state.plan()
    except SafeholdError:
        return  # the plan itself is broken: the command's own error says so
    problems = report_command(plan, job, CommandOutcome(code, errors, hint), os.environ)
    for problem in problems:
        state.warn(problem)
