"""Each destination signs in with its own login (issue 14, part 3), on a real SeaweedFS that
enforces credentials and bucket policies.

Two S3 destinations, each bucket granted by its bucket policy to one identity only (`backup`
for production, `offsite` for the copy); neither identity has any permission of its own. The
plan gives each destination its keys as `${VAR}` references; the process-wide AWS_* variables
hold a key the server does not know, so a backend that fell back to them would fail. Proven:
init, backup with copy_after_backup, status and plan check work; each login is refused the
other's bucket (by the server directly, and through safehold when the plan gives the wrong
key); plan check names each login and never prints a secret; status FAILs when both
destinations share one key; the AWS_* variables are still the fallback."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import TEST_PASSWORD, RunCli
from tests.s3server import SeaweedServer
from tests.sshserver import SshServer

OFFSITE_PASSWORD = "the offsite repository passphrase 7"
BOGUS_AWS = {"AWS_ACCESS_KEY_ID": "NOSUCHKEY0000000", "AWS_SECRET_ACCESS_KEY": "nosuchsecret000"}


RESCUE_BUCKET_ACTIONS = ["s3:GetBucketVersioning", "s3:ListBucketVersions"]
RESCUE_OBJECT_ACTIONS = ["s3:GetObjectVersion"]


def bucket_for(server: SeaweedServer, identity: str, label: str, *, rescue: bool = False) -> str:
    """A bucket whose policy grants `identity` (and nobody else but the admin) its objects
    (`rescue`: and what a rescue needs besides: its versions)."""
    bucket = server.bucket_name(label)
    admin = server.client()
    admin.create_bucket(Bucket=bucket)
    principal = {"AWS": server.principal_arn(identity)}
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": principal,
             "Action": ["s3:ListBucket", "s3:GetBucketLocation",
                        *(RESCUE_BUCKET_ACTIONS if rescue else [])],
             "Resource": f"arn:aws:s3:::{bucket}"},
            {"Effect": "Allow", "Principal": principal,
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                        "s3:DeleteObjectVersion", "s3:AbortMultipartUpload",
                        *(RESCUE_OBJECT_ACTIONS if rescue else [])],
             "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    }  # fmt: skip
    admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return bucket


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


PLAN = """
app = "shop"
env = "prod"
[targets]
rpo = "1d"
rto = "1h"
[[sources]]
name = "uploads"
type = "files"
paths = ["uploads"]
[[destinations]]
name = "prod"
type = "s3"
url = "{prod_url}"
access_key_id = "${{PROD_KEY_ID}}"
secret_access_key = "${{PROD_SECRET}}"
[[destinations]]
name = "offsite"
type = "s3"
url = "{offsite_url}"
{offsite_login}
password_env = "OFFSITE_PASSWORD"
copy_after_backup = true
"""
OWN_KEYS = 'access_key_id = "${OFFSITE_KEY_ID}"\nsecret_access_key = "${OFFSITE_SECRET}"'


class App:
    def __init__(self, tmp_path: Path, server: SeaweedServer, run_cli: RunCli) -> None:
        self.root = tmp_path / "shop"
        (self.root / "uploads").mkdir(parents=True)
        (self.root / "uploads" / "a.bin").write_bytes(bytes(range(256)) * 3000)
        (self.root / "uploads" / "b.txt").write_text("hello\n")
        self.server, self.run_cli = server, run_cli
        self.prod_bucket = bucket_for(server, "backup", "prod")
        self.offsite_bucket = bucket_for(server, "offsite", "offsite")
        self.prod_url = f"s3:{server.endpoint}/{self.prod_bucket}/shop"
        self.offsite_url = f"s3:{server.endpoint}/{self.offsite_bucket}/shop"
        prod_key, prod_secret = server.credentials("backup")
        offsite_key, offsite_secret = server.credentials("offsite")
        self.secrets = [prod_secret, offsite_secret, TEST_PASSWORD, OFFSITE_PASSWORD]
        self.env = {
            **BOGUS_AWS,
            "PROD_KEY_ID": prod_key, "PROD_SECRET": prod_secret,
            "OFFSITE_KEY_ID": offsite_key, "OFFSITE_SECRET": offsite_secret,
            "OFFSITE_PASSWORD": OFFSITE_PASSWORD,
            "SAFEHOLD_STATE_DIR": str(tmp_path / "state"),
        }  # fmt: skip
        self.write(OWN_KEYS)

    def write(self, offsite_login: str) -> None:
        (self.root / "safehold.toml").write_text(
            PLAN.format(
                prod_url=self.prod_url, offsite_url=self.offsite_url, offsite_login=offsite_login
            )
        )

    def __call__(
        self, *args: str, expect: int = 0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = self.run_cli(
            "--plan", str(self.root / "safehold.toml"), *args, env={**self.env, **(env or {})}
        )
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        for secret in self.secrets:
            assert secret not in output, (secret, output)
        assert result.returncode == expect, f"{args}: exit {result.returncode}\n{output}"
        return result


def _status_items(app: App, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    result = app("status", "--json", expect=2, env=env)  # no schedule, no drill: not protected
    return {item["key"]: item for item in json.loads(result.stdout)["items"]}


def test_two_s3_destinations_under_two_logins(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    app = App(tmp_path, s3_server, run_cli)
    prod_key = s3_server.credentials("backup")[0]
    offsite_key = s3_server.credentials("offsite")[0]

    # plan check names each login (masked key id and the variable), never the secret
    described = app("plan", "check").stdout
    assert f"login: key {prod_key[:4]}…{prod_key[-4:]} from ${{PROD_KEY_ID}}" in described
    assert f"login: key {offsite_key[:4]}…{offsite_key[-4:]} from ${{OFFSITE_KEY_ID}}" in described
    assert prod_key not in described and offsite_key not in described
    as_json = json.loads(app("plan", "check", "--json").stdout)
    logins = {d["name"]: d["login"] for d in as_json["destinations"]}
    assert logins["offsite"].endswith("from ${OFFSITE_KEY_ID}"), logins

    app("init")
    app("backup")  # the copy to offsite runs after it, with the offsite login

    # each bucket holds a repository, written by its own identity
    admin = s3_server.client()
    for bucket in (app.prod_bucket, app.offsite_bucket):
        keys = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"]]
        assert "shop/config" in keys and any(k.startswith("shop/snapshots/") for k in keys)

    # the server refuses each login the other's bucket
    for identity, bucket in (("backup", app.offsite_bucket), ("offsite", app.prod_bucket)):
        client = s3_server.client(*s3_server.credentials(identity))
        for request, arguments in (
            (client.list_objects_v2, {"Bucket": bucket}),
            (client.get_object, {"Bucket": bucket, "Key": "shop/config"}),
            (client.put_object, {"Bucket": bucket, "Key": "shop/x", "Body": b"x"}),
        ):
            with pytest.raises(ClientError) as caught:
                request(**arguments)
            assert caught.value.response["Error"]["Code"] == "AccessDenied"

    items = _status_items(app)
    assert items["copies:current:offsite"]["level"] == "pass", items
    login = items["copies:offsite-login"]
    assert login["level"] == "pass", login
    assert "offsite: key" in login["detail"] and offsite_key not in json.dumps(items)

    # the plan gives the offsite the production key: refused by the bucket, named in the error
    wrong = {"OFFSITE_KEY_ID": prod_key, "OFFSITE_SECRET": s3_server.credentials("backup")[1]}
    copy = app("copy", expect=1, env=wrong)
    output = copy.stdout + copy.stderr
    assert "S3 denied" in output and "destination offsite" in output, output
    items = _status_items(app, env=wrong)
    shared = items["copies:offsite-login"]
    assert shared["level"] == "fail", shared
    assert "offsite signs in with the same login as prod" in shared["detail"]
    assert "access_key_id" in shared["fix"]

    # without keys of its own the offsite falls back to the AWS_* variables
    app.write("")
    fallback = {"AWS_ACCESS_KEY_ID": offsite_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.credentials("offsite")[1]}  # fmt: skip
    described = app("plan", "check", env=fallback).stdout
    assert f"login: the AWS_* environment (key {offsite_key[:4]}…" in described, described
    (app.root / "uploads" / "c.txt").write_text("third\n")
    app("backup", env=fallback)
    restored = tmp_path / "restored"
    run = run_cli(
        "-r", app.offsite_url, "restore", "latest", "--target", str(restored),
        env={**fallback, "SAFEHOLD_PASSWORD": OFFSITE_PASSWORD},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    tree = next(restored.rglob("a.bin")).parent
    assert _digest(tree) == _digest(app.root / "uploads")
    # with the bogus AWS_* variables the fallback is refused, named as such
    app("snapshots")  # prod has keys of its own: the bogus variables do not matter
    copy = app("copy", expect=1)
    output = copy.stdout + copy.stderr
    assert "S3 denied" in output and "AWS_ACCESS_KEY_ID" in output, output


def test_plan_login_keys_are_checked(tmp_path: Path, run_cli: RunCli) -> None:
    """A login key on the wrong destination type, half a key pair, keys and a profile: one
    line each naming the fix, exit 2 (a plan error), no secret echoed."""
    base = (
        'app = "a"\nenv = "b"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        '[[sources]]\nname = "f"\ntype = "files"\npaths = ["."]\n'
    )
    cases = {
        '[[destinations]]\nname = "l"\nrepository = "r"\naccess_key_id = "AKIAXXXXXXXXXXXX"\n'
        'secret_access_key = "topsecretvalue99"\n': "access_key_id only on an s3 destination",
        '[[destinations]]\nname = "o"\ntype = "s3"\nurl = "s3:https://h/b"\n'
        'secret_access_key = "topsecretvalue99"\n': "access_key_id and secret_access_key together",
        '[[destinations]]\nname = "o"\ntype = "s3"\nurl = "s3:https://h/b"\nprofile = "p"\n'
        'access_key_id = "AKIAXXXXXXXXXXXX"\nsecret_access_key = "topsecretvalue99"\n':
            "either keys or a profile",
        '[[destinations]]\nname = "o"\ntype = "sftp"\nurl = "sftp:u@h:/r"\nprofile = "p"\n':
            "profile only on an s3 destination",
        '[[destinations]]\nname = "o"\ntype = "s3"\nurl = "s3:https://h/b"\nidentity = "k"\n':
            "identity only on an sftp destination",
    }  # fmt: skip
    for index, (destination, expected) in enumerate(cases.items()):
        plan = tmp_path / f"plan{index}.toml"
        plan.write_text(base + destination)
        result = run_cli("--plan", str(plan), "plan", "check")
        output = result.stdout + result.stderr
        assert result.returncode != 0 and expected in output, output
        assert "topsecretvalue99" not in output and "Traceback" not in output


def test_sftp_destination_with_its_own_identity(
    sshd_server: SshServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """The plan's identity and known_hosts sign in; no SAFEHOLD_SFTP_* variable is set, and
    ~/.ssh holds nothing the server knows."""
    app = tmp_path / "app"
    (app / "data").mkdir(parents=True)
    (app / "data" / "f.txt").write_text("sftp\n")
    env = sshd_server.env()
    url = sshd_server.location(tmp_path / "sftp-repo")
    (app / "safehold.toml").write_text(
        f'app = "a"\nenv = "b"\n[targets]\nrpo = "1d"\nrto = "1h"\n'
        f'[[sources]]\nname = "f"\ntype = "files"\npaths = ["data"]\n'
        f'[[destinations]]\nname = "local"\nrepository = "repo"\n'
        f'[[destinations]]\nname = "offsite"\ntype = "sftp"\nurl = "{url}"\n'
        f'identity = "{env["SAFEHOLD_SFTP_IDENTITY"]}"\n'
        f'known_hosts = "{env["SAFEHOLD_SFTP_KNOWN_HOSTS"]}"\ncopy_after_backup = true\n'
    )
    plan = ["--plan", str(app / "safehold.toml")]
    home = {"HOME": str(tmp_path / "home")}
    described = run_cli(*plan, "plan", "check", env=home)
    assert described.returncode == 0, described.stdout + described.stderr
    assert f"login: the key {env['SAFEHOLD_SFTP_IDENTITY']}, host keys from" in described.stdout
    for args in (("init",), ("backup",)):
        result = run_cli(*plan, *args, env=home)
        assert result.returncode == 0, result.stdout + result.stderr
    listed = run_cli("-r", url, "snapshots", "--json", env={**home, **env})
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1, listed.stderr


def test_a_destination_signs_in_with_its_own_profile(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """`profile = "offsite"` reads that profile's key from the shared credentials file, not the
    (bogus) AWS_* variables; a profile this machine lacks is one line naming it."""
    app = App(tmp_path, s3_server, run_cli)
    key, secret = s3_server.credentials("offsite")
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[offsite]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    )
    app.env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)
    app.env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    app.write('profile = "offsite"')
    assert "login: the AWS profile offsite" in app("plan", "check").stdout
    app("init")
    app("backup")
    items = _status_items(app)
    assert items["copies:current:offsite"]["level"] == "pass", items
    assert items["copies:offsite-login"]["level"] == "pass", items

    app.write('profile = "nope"')
    failed = app("copy", expect=1)
    output = failed.stdout + failed.stderr
    assert "the AWS profile nope (from destination offsite) is not configured" in output, output


def test_a_destination_with_its_own_endpoint_and_region(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """The url names AWS itself; the destination's `endpoint` sends every request to the
    SeaweedFS server instead (signed for its `region`), so init, backup with its copy, and
    status work there, and plan check names both."""
    app = App(tmp_path, s3_server, run_cli)
    app.offsite_url = f"s3:s3.amazonaws.com/{app.offsite_bucket}/shop"
    app.write(f'{OWN_KEYS}\nregion = "eu-central-1"\nendpoint = "{s3_server.endpoint}/"')
    described = app("plan", "check").stdout
    assert f"from ${{OFFSITE_KEY_ID}}, region eu-central-1, endpoint {s3_server.endpoint}" in (
        described
    ), described
    app("init")
    app("backup")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=app.offsite_bucket)["Contents"]]  # fmt: skip
    assert "shop/config" in keys and any(k.startswith("shop/snapshots/") for k in keys)
    items = _status_items(app)
    assert items["copies:current:offsite"]["level"] == "pass", items

    app.write(f'{OWN_KEYS}\nendpoint = "127.0.0.1:1"')
    refused = app("plan", "check", expect=1)  # a plan error
    assert (
        "destinations[1].endpoint: expected an endpoint URL starting with http:// or https://; "
        'found "127.0.0.1:1"' in refused.stderr
    ), refused.stderr


def test_rescue_of_a_plan_destination_signs_in_with_its_login(
    s3_server: SeaweedServer, run_cli: RunCli, tmp_path: Path
) -> None:
    """`rescue --dest offsite` lists, restores and checks the offsite bucket with the offsite
    key from the plan (the AWS_* variables are bogus), after every object there was deleted."""
    app = App(tmp_path, s3_server, run_cli)
    admin = s3_server.client()
    # the offsite login may not read the bucket's versions: refused, named, nothing changed
    admin.put_bucket_versioning(
        Bucket=app.offsite_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    denied = app("rescue", "--dest", "offsite", "--as-of", "-1m", "--dry-run", expect=1)
    assert "S3 denied" in denied.stderr and "destination offsite" in denied.stderr
    app.offsite_bucket = bucket_for(s3_server, "offsite", "offsite", rescue=True)
    app.offsite_url = f"s3:{s3_server.endpoint}/{app.offsite_bucket}/shop"
    app.write(OWN_KEYS)
    admin.put_bucket_versioning(
        Bucket=app.offsite_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    app("init")
    app("backup")
    listed = admin.list_objects_v2(Bucket=app.offsite_bucket)["Contents"]
    good = {o["Key"]: o["ETag"] for o in listed}
    time.sleep(1.5)  # S3 times are whole seconds
    before = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.5)
    for key in good:
        admin.delete_object(Bucket=app.offsite_bucket, Key=key)
    assert "Contents" not in admin.list_objects_v2(Bucket=app.offsite_bucket)

    dry = app("rescue", "--dest", "offsite", "--as-of", before.isoformat(), "--dry-run")
    assert "dry run" in dry.stdout
    assert "Contents" not in admin.list_objects_v2(Bucket=app.offsite_bucket)
    done = app("rescue", "--dest", "offsite", "--as-of", before.isoformat(), "--yes")
    assert "no errors were found" in done.stdout, done.stdout
    listed = admin.list_objects_v2(Bucket=app.offsite_bucket)["Contents"]
    assert {o["Key"]: o["ETag"] for o in listed} == good
    items = _status_items(app)
    assert items["copies:current:offsite"]["level"] == "pass", items
