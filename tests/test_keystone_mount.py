"""The mount logging in to a real Keystone: OS_* variables and clouds.yaml,
a wrong password refused before mounting, and no password in ps or the log."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glancefs.auth import AuthOptions, client_from_options
from glancefs.testing.keystone_server import KeystoneCloud
from tests.mount_support import ROOT, mounted

pytestmark = [pytest.mark.slow, pytest.mark.mount]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    with KeystoneCloud(tmp_path_factory.mktemp("keystone-mount")) as c:
        yield c


def keystone_env(cloud, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_mount_with_os_variables_reads_an_image(cloud, tmp_path: Path) -> None:
    glance = client_from_options(AuthOptions(**cloud.info["demo"]))
    data = os.urandom(3 * 1024 * 1024 + 5)
    image = glance.images.create(name="through-keystone.raw", disk_format="raw",
                                 container_format="bare", data=data)
    password = cloud.info["demo"]["password"]
    with mounted("", tmp_path / "mnt", env=keystone_env(cloud, **cloud.os_env("demo"))) as mnt:
        assert (mnt.path / "through-keystone.raw").read_bytes() == data
        ps = subprocess.run(["ps", "axww", "-o", "args"], capture_output=True, text=True).stdout
        assert password not in ps
    assert password not in mnt.log_text()
    glance.images.delete(image.id)


def test_mount_with_clouds_yaml(cloud, tmp_path: Path) -> None:
    demo = cloud.info["demo"]
    clouds = {"clouds": {"ks": {"auth": {
        "auth_url": demo["auth_url"], "username": demo["username"], "password": demo["password"],
        "project_name": demo["project_name"], "user_domain_id": demo["user_domain_id"],
        "project_domain_id": demo["project_domain_id"]}}}}
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump(clouds))
    env = keystone_env(cloud, OS_CLIENT_CONFIG_FILE=str(config))
    with mounted("", tmp_path / "mnt", source="ks", env=env) as mnt:
        assert ".by-id" in os.listdir(mnt.path)


def test_wrong_password_fails_before_mounting(cloud, tmp_path: Path) -> None:
    where = tmp_path / "mnt"
    where.mkdir()
    env = keystone_env(cloud, **{**cloud.os_env("demo"), "OS_PASSWORD": "Wr0ng-pass-9981"})
    done = subprocess.run([sys.executable, "-m", "glancefs.cli.mount_helper", "glance",
                           str(where)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Wr0ng-pass-9981" not in done.stderr, done.stderr
    assert not os.path.ismount(where)
