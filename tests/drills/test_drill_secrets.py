"""`safehold drill` on an app with a secrets source: without an identity the drill proves the
secrets are there, complete and encrypted to the recipients, and says it did not decrypt
them; with one it decrypts them into the scratch folder, verifies them, and gives the smoke
command the app's own variables — and the record never holds a secret value."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.conftest import RunCli
from tests.sources.test_secrets_source import SECRET_VALUES, VARIABLES, make_app, make_identity

SMOKE = """
import os, sys
assert os.environ["STRIPE_SECRET_KEY"].startswith("sk_live_"), "no stripe key"
folder = os.environ["SAFEHOLD_SECRETS_DIR"]
assert open(os.path.join(folder, "config", "master.key")).read().strip(), "no master key"
print("secrets ok, key", os.environ["STRIPE_SECRET_KEY"])
"""


def _drill(run_cli: RunCli, app: Path, scratch: Path, *args: str) -> tuple[int, str, Any]:
    env = {**VARIABLES, "SAFEHOLD_DRILL_TMPDIR": str(scratch)}
    proc = run_cli("--plan", str(app / "safehold.toml"), "drill", "--json", *args, env=env)
    return proc.returncode, proc.stdout + proc.stderr, json.loads(proc.stdout)


def test_drill_checks_the_secrets_without_identity_and_decrypts_them_with_one(
    tmp_path: Path, run_cli: RunCli
) -> None:
    identity, recipient = make_identity(tmp_path / "password-manager")
    checks = f"""
[[drill.checks]]
type = "command"
name = "smoke with secrets"
command = "{sys.executable} smoke.py"
"""
    app = make_app(tmp_path, recipient)
    plan = app / "safehold.toml"
    (app / "smoke.py").write_text(SMOKE)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**VARIABLES}
    assert run_cli("--plan", str(plan), "init", env=env).returncode == 0
    assert run_cli("--plan", str(plan), "backup", env=env).returncode == 0

    code, output, record = _drill(run_cli, app, scratch)
    assert code == 0, output
    [check] = [c for c in record["checks"] if c["kind"] == "secrets"]
    assert check["ok"] and check["warning"]
    assert "not decrypted (no identity)" in check["detail"]
    assert "5 encrypted items present" in check["detail"]

    plan.write_text(plan.read_text() + checks)
    code, output, record = _drill(run_cli, app, scratch, "--identity", str(identity))
    assert code == 0, output
    [check] = [c for c in record["checks"] if c["kind"] == "secrets"]
    assert check["ok"] and not check["warning"]
    assert check["name"] == "secrets of secrets decrypted and verified"
    [smoke] = [c for c in record["checks"] if c["name"] == "smoke with secrets"]
    assert smoke["ok"], smoke
    for value in SECRET_VALUES:
        assert value not in output
    assert list(scratch.iterdir()) == []  # the decrypted copies went with the scratch folder

    (app / "smoke.py").write_text(SMOKE + "sys.exit(1)\n")  # a failing check prints the key
    code, output, record = _drill(run_cli, app, scratch, "--identity", str(identity))
    assert code == 1
    [smoke] = [c for c in record["checks"] if c["name"] == "smoke with secrets"]
    assert not smoke["ok"] and "secrets ok, key ***" in smoke["detail"], smoke
    for value in SECRET_VALUES:
        assert value not in output
    (app / "smoke.py").write_text(SMOKE)
    assert _drill(run_cli, app, scratch, "--identity", str(identity))[0] == 0

    runbook = run_cli("--plan", str(plan), "runbook", "-o", "-", env=env)
    assert runbook.returncode == 0, runbook.stderr
    assert "age-encrypted" in runbook.stdout and f"--identity {identity}" in runbook.stdout
    status = run_cli("--plan", str(plan), "status", "--json", env=env)
    [item] = [i for i in json.loads(status.stdout)["items"] if i["key"] == "secrets:secrets"]
    assert item["level"] == "pass", item
