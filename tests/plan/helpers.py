"""Plan texts and fixture types shared by the plan tests."""

from __future__ import annotations

from collections.abc import Callable

from safehold.plan import Plan, PlanError

HEAD = """\
app = "myapp"
env = "prod"

[targets]
rpo = "24h"
rto = "1h"
"""

SOURCE = """
[[sources]]
name = "db"
type = "postgres"
url = "postgresql://app@db.internal:5432/shop"
"""

DESTINATION = """
[[destinations]]
name = "local"
repository = "backups"
"""

MINIMAL = HEAD + SOURCE + DESTINATION

LoadText = Callable[..., Plan]
ErrorOf = Callable[..., PlanError]
