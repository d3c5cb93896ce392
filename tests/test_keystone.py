"""Real Keystone in front of a real Glance: the command line and the Python API
logging in with a password through flags, OS_* variables and clouds.yaml; a
wrong password; one token per run; tokens that expire during a long download.

Keystone (PyPI, SQLite, fernet) and Glance (keystonemiddleware.auth_token)
are started once for this module by glancefs.testing.keystone_server.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
import uuid

import pytest
import yaml

from glancefs.api import Client
from glancefs.api import exceptions as exc
from glancefs.auth import AuthOptions, client_from_options, make_session
from glancefs.cli import commands as cmds
from glancefs.cli.main import run
from glancefs.testing.keystone_server import KeystoneCloud
from tests.cli_support import cli_env, glancefs_cmd

pytestmark = pytest.mark.slow

UA = "glancefs keystoneauth1"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with KeystoneCloud(tmp_path_factory.mktemp("keystone-cloud")) as c:
        yield c


@pytest.fixture(scope="module")
def demo_api(cloud):
    return client_from_options(AuthOptions(**cloud.info["demo"]))


@pytest.fixture(scope="module")
def admin_api(cloud):
    return client_from_options(AuthOptions(**cloud.info["admin"]))


def cli(*argv: str, env: dict[str, str], stdin: bytes | None = None):
    out, err, data = io.StringIO(), io.StringIO(), io.BytesIO()
    console = cmds.Console(stdin=io.BytesIO(stdin or b""), stdout=out, stdout_binary=data,
                           stderr=err, stdin_data=stdin is not None)
    rc = run(list(argv), console=console, environ=env)
    return rc, out.getvalue(), err.getvalue(), data.getvalue()


def unique(prefix: str = "ks") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_status(api, image_id: str, want: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        image = api.images.get(image_id)
        if image["status"] == want or time.monotonic() > deadline:
            return image
        time.sleep(0.3)


# -- logging in ------------------------------------------------------------------------------


def test_password_through_flags(cloud, demo_api):
    demo = cloud.info["demo"]
    data = os.urandom(200_000)
    rc, out, err, _ = cli(
        "--os-auth-url", demo["auth_url"], "--os-username", demo["username"],
        "--os-password", demo["password"], "--os-project-name", demo["project_name"],
        "--os-user-domain-id", "default", "--os-project-domain-id", "default",
        "-f", "json", "image-create", "--name", unique(), stdin=data, env={})
    assert rc == 0, err
    assert "visible to other users" in err and "OS_PASSWORD" in err
    assert demo["password"] not in err + out
    image = demo_api.images.get(json.loads(out)["id"])
    assert image["status"] == "active"
    assert image["owner"] == cloud.info["demo_project_id"]
    assert image["checksum"] == hashlib.md5(data).hexdigest()


def test_old_tenant_flags(cloud, demo_api):
    demo = cloud.info["demo"]
    env = {"OS_AUTH_URL": demo["auth_url"], "OS_PASSWORD": demo["password"]}
    rc, out, err, _ = cli("--os-username", "demo", "--os-tenant-name", "demo", "-f", "json",
                          "image-create", "--name", unique(), env=env)
    assert rc == 0, err
    assert err == ""  # the password came from the environment: no warning
    assert demo_api.images.get(json.loads(out)["id"])["owner"] == cloud.info["demo_project_id"]


def test_password_through_os_variables(cloud, demo_api):
    image = demo_api.images.create(name=unique(), disk_format="raw", container_format="bare",
                                   data=b"env" * 1000)
    rc, out, err, _ = cli("-f", "json", "image-list", "--name", image["name"],
                          env=cloud.os_env("demo"))
    assert rc == 0, err
    assert [i["id"] for i in json.loads(out)] == [image["id"]]
    rc, _, err, data = cli("image-download", image["name"], env=cloud.os_env("demo"))
    assert rc == 0 and data == b"env" * 1000


def test_auth_url_without_version_and_image_url_from_catalog(cloud):
    env = cloud.os_env("demo")
    env["OS_AUTH_URL"] = env["OS_AUTH_URL"].rsplit("/v3", 1)[0]
    rc, out, err, _ = cli("image-list", env=env)
    assert rc == 0, err


def test_clouds_yaml_with_secure_yaml(cloud, demo_api, tmp_path):
    demo = cloud.info["demo"]
    (tmp_path / "clouds.yaml").write_text(yaml.safe_dump({"clouds": {"mycloud": {
        "auth": {"auth_url": demo["auth_url"], "username": demo["username"],
                 "project_name": demo["project_name"], "user_domain_id": "default",
                 "project_domain_id": "default"},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3}}}))
    (tmp_path / "secure.yaml").write_text(yaml.safe_dump(
        {"clouds": {"mycloud": {"auth": {"password": demo["password"]}}}}))
    env = cli_env(OS_CLIENT_CONFIG_FILE=str(tmp_path / "clouds.yaml"))
    name = unique("cloud")
    proc = subprocess.run(glancefs_cmd("--os-cloud", "mycloud", "-f", "json", "image-create",
                                       "--name", name), env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ident = json.loads(proc.stdout)["id"]
    assert demo_api.images.get(ident)["owner"] == cloud.info["demo_project_id"]
    # OS_CLOUD works the same, from another directory.
    env["OS_CLOUD"] = "mycloud"
    proc = subprocess.run(glancefs_cmd("-f", "json", "image-show", name), env=env,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == ident
    proc = subprocess.run(glancefs_cmd("--os-cloud", "nosuchcloud", "image-list"), env=env,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode().count("\n") == 1 and b"nosuchcloud" in proc.stderr


@pytest.mark.parametrize("how", ["flag", "env", "env-debug"])
def test_wrong_password_is_one_clear_line(cloud, how):
    wrong = "Wr0ng-" + uuid.uuid4().hex
    env = cloud.os_env("demo")
    argv = ["image-list"]
    if how == "flag":
        del env["OS_PASSWORD"]
        argv = ["--os-password", wrong, *argv]
    else:
        env["OS_PASSWORD"] = wrong
    if how == "env-debug":
        argv = ["--debug", *argv]
    rc, out, err, _ = cli(*argv, env=env)
    assert rc == 1
    assert wrong not in out and wrong not in err
    lines = [line for line in err.splitlines() if line.startswith("glancefs: ")
             and "warning" not in line]
    assert lines[-1].startswith("glancefs: image-list: authentication failed: Keystone "
                                "refused the credentials")
    if how != "env-debug":
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == (2 if how == "flag" else 1)


def test_wrong_password_subprocess_never_shows_it(cloud):
    wrong = "Wr0ng-" + uuid.uuid4().hex
    env = cli_env(**{**cloud.os_env("demo"), "OS_PASSWORD": wrong})
    proc = subprocess.run(glancefs_cmd("--debug", "image-list"), env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1
    assert wrong.encode() not in proc.stdout + proc.stderr


def test_missing_credential_names_it(cloud):
    env = cloud.os_env("demo")
    del env["OS_USERNAME"]
    rc, _, err, _ = cli("image-list", env=env)
    assert rc == 1
    assert err.strip() == "glancefs: image-list: cannot authenticate: --os-username " \
                          "(OS_USERNAME) is missing"


def test_token_and_image_url_skip_keystone(cloud, demo_api):
    demo = cloud.info["demo"]
    token = cloud.keystone.authenticate(demo["username"], demo["password"], "demo")[0]
    before = cloud.keystone.token_requests(UA)
    rc, out, err, _ = cli("-f", "json", "image-list", "--limit", "1",
                          env={"OS_IMAGE_URL": cloud.image_url, "OS_AUTH_TOKEN": token})
    assert rc == 0, err
    assert cloud.keystone.token_requests(UA) == before
    rc, out, err, _ = cli("image-list", env={"OS_IMAGE_URL": cloud.image_url,
                                             "OS_AUTH_TOKEN": "not-a-token"})
    assert rc == 1 and "HTTP 401" in err and len(err.splitlines()) == 1


def test_token_fetched_once_per_run(cloud, demo_api):
    tag = unique("tag")
    for _ in range(3):
        demo_api.images.create(name=unique(), tags=[tag])
    before = cloud.keystone.token_requests(UA)
    rc, out, err, _ = cli("-f", "json", "image-list", "--tag", tag, "--page-size", "1",
                          env=cloud.os_env("demo"))
    assert rc == 0, err
    assert len(json.loads(out)) == 3  # four GETs: three pages and the empty end
    assert cloud.keystone.token_requests(UA) - before == 1


def test_python_api_with_a_session(cloud):
    session, endpoint, token = make_session(AuthOptions(**cloud.info["demo"]))
    assert endpoint is None and token is None
    glance = Client("2", session=session)
    image = glance.images.create(name=unique("py"), disk_format="raw", container_format="bare")
    image.update(data=io.BytesIO(b"python" * 500))
    assert image.status == "active"
    assert b"".join(image.data()) == b"python" * 500
    image.delete()
    with pytest.raises(exc.HTTPNotFound):
        glance.images.get(image["id"])


def test_python_api_with_an_application_credential(cloud):
    session, _, _ = make_session(AuthOptions(**cloud.info["demo"]))
    user_id = session.get_user_id()
    made = session.post(f"{cloud.info['demo']['auth_url'].rstrip('/')}/users/{user_id}"
                        "/application_credentials",
                        json={"application_credential": {"name": unique("appcred")}}).json()
    credential = made["application_credential"]
    glance = client_from_options(AuthOptions(
        auth_url=cloud.info["demo"]["auth_url"], application_credential_id=credential["id"],
        application_credential_secret=credential["secret"]))
    image = glance.images.create(name=unique("appcred"), disk_format="raw",
                                 container_format="bare", data=b"app" * 100)
    assert glance.images.get(image.id).status == "active"
    glance.images.delete(image.id)


# -- what an ordinary user meets -------------------------------------------------------------


def test_import_workflow(cloud, demo_api, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "d.raw"
    path.write_bytes(data)
    env = cloud.os_env("demo")
    rc, out, err, _ = cli("-f", "json", "image-create-via-import", "--name", unique("imp"),
                          "--disk-format", "raw", "--container-format", "bare",
                          "--file", str(path), env=env)
    assert rc == 0, err
    image = wait_status(demo_api, json.loads(out)["id"], "active")
    assert image["status"] == "active" and image["checksum"] == hashlib.md5(data).hexdigest()

    image = demo_api.images.create(name=unique("stage"), disk_format="raw",
                                   container_format="bare")
    rc, _, err, _ = cli("image-stage", image["id"], "--file", str(path), env=env)
    assert rc == 0, err
    assert demo_api.images.get(image["id"])["status"] == "uploading"
    rc, out, err, _ = cli("-f", "json", "image-import", image["name"], env=env)
    assert rc == 0, err
    assert wait_status(demo_api, image["id"], "active")["size"] == len(data)


def test_deactivated_image_download_refused(cloud, demo_api):
    image = demo_api.images.create(name=unique(), disk_format="raw", container_format="bare",
                                   data=b"x" * 100)
    env = cloud.os_env("demo")
    assert cli("image-deactivate", image["id"], env=env)[0] == 0
    rc, _, err, data = cli("image-download", image["id"], env=env)
    assert rc == 1 and data == b""
    assert "HTTP 403" in err and "deactivated" in err and len(err.splitlines()) == 1
    assert cli("image-reactivate", image["id"], env=env)[0] == 0
    assert cli("image-download", image["id"], env=env)[3] == b"x" * 100


def test_other_projects_image_is_not_found(cloud, demo_api, admin_api):
    private = admin_api.images.create(name=unique("adm"), visibility="private")
    rc, _, err, _ = cli("image-show", private["id"], env=cloud.os_env("demo"))
    assert rc == 1 and "no image with name or ID" in err


def test_members_between_projects(cloud, demo_api, admin_api):
    admin_project = cloud.keystone.authenticate(
        "admin", cloud.keystone.admin_password, "admin")[1]["token"]["project"]["id"]
    image = demo_api.images.create(name=unique("share"), visibility="shared")
    env = cloud.os_env("demo")
    rc, out, err, _ = cli("-f", "json", "member-create", image["id"], admin_project, env=env)
    assert rc == 0, err
    rc, out, err, _ = cli("-f", "json", "member-update", image["id"], admin_project,
                          "accepted", env=cloud.os_env("admin"))
    assert rc == 0, err
    assert demo_api.image_members.get(image["id"], admin_project)["status"] == "accepted"
    rc, _, err, _ = cli("member-update", image["id"], admin_project, "rejected", env=env)
    assert rc == 1 and "403" in err  # only the member itself may answer
    assert cli("member-delete", image["id"], admin_project, env=env)[0] == 0


# -- short-lived tokens ------------------------------------------------------------------------


# Long enough that a token outlives the wait for its validation on a busy 2-core machine:
# with a lifetime under keystoneauth's 120 s minimum, every request authenticates anew
# (a password hash in Keystone's 4 threads), and Glance's check of the token queues
# behind them. With 8 s, a CLI download's parts were answered 5-8 s after their tokens
# were issued, and a part's token and its one renewal both expired first (HTTP 401) in
# 2 of 5 runs one morning.
TOKEN_LIFETIME = 20


@pytest.fixture
def short_tokens(cloud):
    cloud.keystone.restart(token_expiration=TOKEN_LIFETIME)
    try:
        yield TOKEN_LIFETIME
    finally:
        cloud.keystone.restart(token_expiration=3600)


def test_token_expires_during_a_long_cli_download(cloud, demo_api, short_tokens):
    data = os.urandom(48 * 1024 * 1024)
    image = demo_api.images.create(name=unique("long"), disk_format="raw",
                                   container_format="bare", data=data)
    env = cli_env(**cloud.os_env("demo"))
    started = time.monotonic()
    proc = subprocess.Popen(glancefs_cmd("image-download", image["name"]), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    got = hashlib.sha512()
    size = 0
    while True:  # a slow reader: the download outlives the token
        chunk = proc.stdout.read(1024 * 1024)
        if not chunk:
            break
        got.update(chunk)
        size += len(chunk)
        time.sleep(0.5)    # 48 MiB: 24 s, longer than the token lives
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert time.monotonic() - started > short_tokens + 2
    assert size == len(data) and got.hexdigest() == hashlib.sha512(data).hexdigest()


def test_python_api_renews_expired_tokens_between_ranged_reads(cloud, short_tokens):
    glance = client_from_options(AuthOptions(**cloud.info["demo"]))
    data = os.urandom(4 * 1024 * 1024)
    image = glance.images.create(name=unique("ranges"), disk_format="raw",
                                 container_format="bare", data=data)
    before = cloud.keystone.token_requests(UA)
    mib = 1024 * 1024
    parts = []
    stream = glance.images.data(image, chunk_size=64 * 1024)
    first = next(stream)
    time.sleep(short_tokens + 1)  # the token used so far has expired now
    parts.append(first + b"".join(stream))
    for offset in range(0, len(data), 2 * mib):
        parts.append(b"".join(glance.images.data(image, offset=offset, length=2 * mib)))
    assert parts[0] == data and b"".join(parts[1:]) == data
    assert glance.images.get(image["id"])["status"] == "active"
    assert cloud.keystone.token_requests(UA) > before  # renewed, without a failure


def test_keystone_unreachable_for_a_token_is_one_clear_error_without_retries(cloud, caplog):
    """Getting a token fails: the Images request is not retried (that would only
    ask the unreachable Keystone again), and the error says what failed."""
    api = client_from_options(AuthOptions(**{**cloud.info["demo"], "image_url": cloud.image_url}))
    cloud.keystone.stop()
    try:
        with caplog.at_level("WARNING", logger="glancefs"):
            with pytest.raises(exc.CommunicationError) as failed:
                list(api.images.list(limit=1))
    finally:
        cloud.keystone.start()
    assert "identity service could not be reached" in str(failed.value)
    # The cause, not urllib3's report of its retries around it.
    assert str(failed.value).endswith("/v3/auth/tokens: [Errno 111] Connection refused"), \
        str(failed.value)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]
    assert isinstance(list(api.images.list(limit=1)), list)   # Keystone back: works again
