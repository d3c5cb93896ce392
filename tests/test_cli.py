"""The ``glancefs`` command line against a real Glance (v2) and the v1 server.

Commands run in-process through ``glancefs.cli.main.run`` with replaceable
streams (fast), and a few through the installed entry point in a subprocess
(real pipes, a real terminal from a pty). Every effect is checked on the
server through glancefs.api, not through the CLI's own output.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import select
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from glancefs.api import Client
from glancefs.api import exceptions as exc
from glancefs.cli import commands as cmds
from glancefs.cli.main import run
from glancefs.cli.output import render_table
from tests.cli_support import cli_env, glancefs_cmd

# -- servers (the lead's conftest fixtures when present, else our own) -----------------------


@pytest.fixture(scope="session")
def v2_server(request, tmp_path_factory):
    try:
        return request.getfixturevalue("glance_v2")
    except pytest.FixtureLookupError:
        pass
    from glancefs.testing.glance_server import GlanceServer, free_port
    server = GlanceServer(tmp_path_factory.mktemp("cli-glance"), free_port())
    server.start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def v1_server(request):
    try:
        return request.getfixturevalue("glance_v1")
    except pytest.FixtureLookupError:
        pass
    from glancefs.testing.v1server import V1Server
    server = V1Server().start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def api2(v2_server):
    return Client("2", endpoint=v2_server.endpoint)


@pytest.fixture(scope="session")
def api1(v1_server):
    return Client("1", endpoint=v1_server.endpoint)


@dataclass
class Result:
    rc: int
    out: str
    err: str
    data: bytes

    def json(self):
        return json.loads(self.out)


def run_cli(endpoint: str, version: str, *argv: str, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> Result:
    out, err, data = io.StringIO(), io.StringIO(), io.BytesIO()
    console = cmds.Console(stdin=io.BytesIO(stdin or b""), stdout=out, stdout_binary=data,
                           stderr=err, stdin_data=stdin is not None)
    environ = {"OS_IMAGE_URL": endpoint, "OS_IMAGE_API_VERSION": version}
    if env is not None:
        environ = env
    rc = run(list(argv), console=console, environ=environ)
    return Result(rc, out.getvalue(), err.getvalue(), data.getvalue())


@pytest.fixture
def g2(v2_server):
    return lambda *argv, **kw: run_cli(v2_server.endpoint, "2", *argv, **kw)


@pytest.fixture
def g1(v1_server):
    return lambda *argv, **kw: run_cli(v1_server.endpoint, "1", *argv, **kw)


def unique(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def one_error_line(result: Result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    assert lines[0].startswith("glancefs: ")
    return lines[0]


def payload(n: int = 300_000) -> bytes:
    return os.urandom(n)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- help and the command line itself --------------------------------------------------------

V2_COMMANDS = ["image-list", "image-show", "image-create", "image-update", "image-upload",
               "image-download", "image-delete", "image-deactivate", "image-reactivate",
               "image-tag-update", "image-tag-delete", "image-stage", "image-import",
               "image-create-via-import", "member-list", "member-create", "member-update",
               "member-delete", "import-info", "stores-info", "usage", "mount", "image-tasks",
               "task-list", "task-show", "task-create", "stores-delete"]


def test_help_lists_every_command(g2):
    r = g2("help")
    assert r.rc == 0
    for name in V2_COMMANDS:
        assert f"  {name} " in r.out, name
    assert "--os-auth-url" in r.out and "OS_PASSWORD" in r.out


def test_no_arguments_prints_help(g2):
    r = g2()
    assert r.rc == 0 and "image-list" in r.out


def test_help_command_explains_it(g2):
    r = g2("help", "image-create")
    assert r.rc == 0
    for option in ("--name", "--disk-format", "--property", "--file", "--progress"):
        assert option in r.out
    assert g2("image-create", "--help").out == r.out


def test_help_unknown_command(g2):
    r = g2("help", "image-frobnicate")
    assert r.rc == 2
    assert "unknown command" in one_error_line(r)


def test_unknown_option_is_one_line_usage_error(g2):
    r = g2("image-list", "--no-such-option")
    assert r.rc == 2
    assert "unrecognized arguments" in one_error_line(r)


def test_global_options_after_the_command(g2, api2):
    name = unique()
    api2.images.create(name=name)
    r = g2("image-show", name, "-f", "json")
    assert r.rc == 0 and r.json()["name"] == name


def test_v1_help_marks_v2_only_commands(g1):
    r = g1("help")
    assert r.rc == 0
    assert "(v2 only)" in next(line for line in r.out.splitlines() if "image-deactivate" in line)
    assert "(v2 only)" not in next(line for line in r.out.splitlines()
                                   if "  image-create " in line)


@pytest.mark.parametrize("command", ["image-deactivate", "image-tag-update", "image-stage",
                                     "image-import", "import-info", "usage", "member-update"])
def test_v2_only_command_under_v1_says_so(g1, command):
    r = g1(command, "x", "y")
    assert r.rc == 1
    line = one_error_line(r)
    assert "needs Images API v2" in line and "--os-image-api-version 2" in line


def test_bad_api_version(g2):
    r = g2("--os-image-api-version", "3", "image-list")
    assert r.rc == 2
    assert "use 1 or 2" in one_error_line(r)


# -- image-create / upload -------------------------------------------------------------------


def test_create_from_file_with_fields_and_properties(g2, api2, tmp_path):
    data = payload()
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    name = unique()
    r = g2("-f", "json", "image-create", "--name", name, "--disk-format", "raw",
           "--container-format", "bare", "--min-disk", "3", "--min-ram", "64",
           "--protected", "False", "--visibility", "private", "--tags", "a", "b",
           "--property", "os_distro=debian", "--property", "note=x=y", "--file", str(path))
    assert r.rc == 0, r.err
    shown = r.json()
    image = api2.images.get(shown["id"])
    assert image["status"] == "active"
    assert image["checksum"] == md5(data) == shown["checksum"]
    assert image["size"] == len(data)
    assert (image["min_disk"], image["min_ram"]) == (3, 64)
    assert image["visibility"] == "private"
    assert sorted(image["tags"]) == ["a", "b"]
    assert image["os_distro"] == "debian" and image["note"] == "x=y"
    assert r.err == ""


def test_create_table_output(g2):
    name = unique()
    r = g2("image-create", "--name", name)
    assert r.rc == 0
    lines = r.out.splitlines()
    assert lines[0].startswith("+-") and lines[1].split("|")[1].strip() == "Property"
    assert any(line.startswith("| name ") and name in line for line in lines)
    assert any(line.startswith("| status ") and "queued" in line for line in lines)


def test_create_from_stdin_detects_format(g2, api2):
    data = payload(200_000)
    r = g2("-f", "json", "image-create", "--name", unique(), stdin=data)
    assert r.rc == 0, r.err
    image = api2.images.get(r.json()["id"])
    assert image["status"] == "active" and image["checksum"] == md5(data)
    assert image["disk_format"] == "raw" and image["container_format"] == "bare"


def test_create_without_data_then_upload_file(g2, api2, tmp_path):
    name = unique()
    r = g2("-f", "json", "image-create", "--name", name, "--disk-format", "raw",
           "--container-format", "bare")
    assert r.rc == 0 and r.json()["status"] == "queued"
    data = payload()
    (tmp_path / "d").write_bytes(data)
    r = g2("image-upload", name, "--file", str(tmp_path / "d"))
    assert r.rc == 0, r.err
    assert r.out == ""
    image = api2.images.get(api2.images.get(next(iter(
        api2.images.list(filters={"name": name})))["id"])["id"])
    assert image["status"] == "active" and image["checksum"] == md5(data)


def test_upload_from_stdin_with_size(g2, api2):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare")
    data = payload(123_457)
    r = g2("image-upload", image["id"], "--size", str(len(data)), stdin=data)
    assert r.rc == 0, r.err
    after = api2.images.get(image["id"])
    assert after["status"] == "active" and after["size"] == len(data)
    assert after["checksum"] == md5(data)


def test_upload_without_data_is_usage_error(g2, api2):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare")
    r = g2("image-upload", image["id"])
    assert r.rc == 2
    assert "--file" in one_error_line(r)
    assert api2.images.get(image["id"])["status"] == "queued"


def test_upload_size_mismatch_refused(g2, api2, tmp_path):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare")
    (tmp_path / "d").write_bytes(b"x" * 100)
    r = g2("image-upload", image["id"], "--file", str(tmp_path / "d"), "--size", "99")
    assert r.rc == 2 and "does not match" in one_error_line(r)


def test_upload_missing_file(g2, api2):
    image = api2.images.create(name=unique())
    r = g2("image-upload", image["id"], "--file", "/nonexistent/disk.img")
    assert r.rc == 1
    assert "cannot read /nonexistent/disk.img" in one_error_line(r)


def test_upload_to_active_image_is_conflict(g2, api2):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare",
                               data=b"abc")
    r = g2("image-upload", image["id"], stdin=b"other")
    assert r.rc == 1
    assert "HTTP 409" in one_error_line(r)


def test_create_with_wrong_format_data_reports_and_keeps_image(g2, api2, tmp_path):
    name = unique()
    (tmp_path / "d").write_bytes(payload(70_000))
    r = g2("image-create", "--name", name, "--disk-format", "qcow2", "--container-format",
           "bare", "--file", str(tmp_path / "d"))
    assert r.rc == 1
    line = one_error_line(r)
    assert "upload failed" in line and "415" in line
    (image,) = list(api2.images.list(filters={"name": name}))
    assert image["status"] == "queued" and image["id"] in line


# -- image-list ------------------------------------------------------------------------------


def test_list_filters_sort_and_json(g2, api2):
    tag = unique("tag")
    names = [unique("lst") for _ in range(3)]
    ids = {}
    for i, name in enumerate(names):
        image = api2.images.create(name=name, tags=[tag], flavour=f"f{i % 2}")
        ids[name] = image["id"]
    r = g2("-f", "json", "image-list", "--tag", tag)
    assert r.rc == 0
    got = r.json()
    assert [i["name"] for i in got] == sorted(names)  # name order by default
    assert all("tags" in i and "status" in i for i in got)  # whole records

    r = g2("-f", "json", "image-list", "--tag", tag, "--sort", "name:desc")
    assert [i["name"] for i in r.json()] == sorted(names, reverse=True)
    r = g2("-f", "json", "image-list", "--tag", tag, "--sort-key", "name", "--sort-dir", "desc")
    assert [i["name"] for i in r.json()] == sorted(names, reverse=True)

    r = g2("-f", "json", "image-list", "--tag", tag, "--property-filter", "flavour=f0")
    assert sorted(i["name"] for i in r.json()) == sorted([names[0], names[2]])

    r = g2("-f", "json", "image-list", "--name", names[1])
    assert [i["id"] for i in r.json()] == [ids[names[1]]]

    # Paging: one image per request, all of them in the end; --limit caps.
    r = g2("-f", "json", "image-list", "--tag", tag, "--page-size", "1")
    assert len(r.json()) == 3
    r = g2("-f", "json", "image-list", "--tag", tag, "--limit", "2", "--page-size", "1")
    assert len(r.json()) == 2

    r = g2("image-list", "--tag", tag)
    lines = r.out.splitlines()
    assert [h.strip() for h in lines[1].split("|")[1:-1]] == ["ID", "Name"]
    assert len(lines) == 3 + 3 + 1
    r = g2("-v", "image-list", "--tag", tag)
    assert "Disk_format" in r.out and "Status" in r.out


def test_list_status_filter_and_sort_conflict(g2, api2):
    tag = unique("tag")
    queued = api2.images.create(name=unique(), tags=[tag])
    active = api2.images.create(name=unique(), tags=[tag], disk_format="raw",
                                container_format="bare", data=b"1234")
    r = g2("-f", "json", "image-list", "--tag", tag, "--status", "active")
    assert [i["id"] for i in r.json()] == [active["id"]]
    r = g2("-f", "json", "image-list", "--tag", tag, "--status", "queued")
    assert [i["id"] for i in r.json()] == [queued["id"]]
    r = g2("image-list", "--sort", "name", "--sort-key", "size")
    assert r.rc == 2 and "--sort cannot be combined" in one_error_line(r)


# -- image-show and naming -------------------------------------------------------------------


def test_show_by_id_and_by_name(g2, api2):
    name = unique()
    image = api2.images.create(name=name, color="blue")
    by_id = g2("-f", "json", "image-show", image["id"])
    by_name = g2("-f", "json", "image-show", name)
    assert by_id.rc == by_name.rc == 0
    assert by_id.json()["id"] == by_name.json()["id"] == image["id"]
    assert by_name.json()["color"] == "blue"
    assert "self" not in by_id.json() and "schema" not in by_id.json()


def test_show_human_readable(g2, api2):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare",
                               data=b"x" * 3 * 1024 * 1024)
    r = g2("image-show", image["id"], "--human-readable")
    assert "3.0 MiB" in r.out


def test_show_missing_image(g2):
    r = g2("image-show", "no-such-image-" + uuid.uuid4().hex)
    assert r.rc == 1
    assert "no image with name or ID" in one_error_line(r)
    r = g2("image-show", str(uuid.uuid4()))
    assert r.rc == 1
    assert "no image with name or ID" in one_error_line(r)


def test_duplicate_names_are_refused_with_ids(g2, api2):
    name = unique("dup")
    a = api2.images.create(name=name)
    b = api2.images.create(name=name)
    r = g2("image-show", name)
    assert r.rc == 1
    line = one_error_line(r)
    assert "2 images are named" in line and a["id"] in line and b["id"] in line
    assert "use an ID" in line
    # A delete by an ambiguous name deletes nothing.
    r = g2("image-delete", name)
    assert r.rc == 1
    assert api2.images.get(a["id"]) and api2.images.get(b["id"])


# -- image-update ----------------------------------------------------------------------------


def test_update_fields_and_properties(g2, api2):
    name = unique()
    image = api2.images.create(name=name, keep="1", drop="2", other="3")
    new_name = unique("renamed")
    r = g2("-f", "json", "image-update", name, "--name", new_name, "--min-ram", "512",
           "--property", "keep=changed", "--property", "added=yes",
           "--remove-property", "drop", "--remove-property", "other", "--tags", "t1",
           "--instance-uuid", "6c4c5b8e-7c1f-4e8a-9d0e-1f2a3b4c5d6e", "--architecture", "x86_64")
    assert r.rc == 0, r.err
    after = api2.images.get(image["id"])
    assert after["name"] == new_name and after["min_ram"] == 512
    assert after["instance_uuid"] == "6c4c5b8e-7c1f-4e8a-9d0e-1f2a3b4c5d6e"
    assert after["architecture"] == "x86_64"
    assert after["keep"] == "changed" and after["added"] == "yes"
    assert "drop" not in after and "other" not in after
    assert after["tags"] == ["t1"]
    assert r.json()["name"] == new_name


def test_update_read_only_field_refused(g2, api2):
    image = api2.images.create(name=unique())
    r = g2("image-update", image["id"], "--property", "checksum=abc")
    assert r.rc == 1
    assert "checksum" in one_error_line(r)


def test_update_set_and_remove_same_property(g2, api2):
    image = api2.images.create(name=unique())
    r = g2("image-update", image["id"], "--property", "a=1", "--remove-property", "a")
    assert r.rc == 2


# -- image-download --------------------------------------------------------------------------


def test_download_to_stdout_and_file(g2, api2, tmp_path):
    data = payload(2 * 1024 * 1024 + 17)
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare",
                               data=data)
    r = g2("image-download", image["id"])
    assert r.rc == 0, r.err
    assert r.data == data and r.err == ""
    target = tmp_path / "copy.img"
    r = g2("image-download", image["id"], "--file", str(target), "--progress")
    assert r.rc == 0 and r.err == ""  # stderr is no terminal: no progress bar
    assert hashlib.sha512(target.read_bytes()).hexdigest() == \
        api2.images.get(image["id"])["os_hash_value"]
    assert list(tmp_path.iterdir()) == [target]


def test_download_corrupt_data_fails_and_leaves_no_file(g2, api2, v2_server, tmp_path):
    data = payload(500_000)
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare",
                               data=data)
    stored = Path(v2_server.images_dir) / image["id"]
    if not stored.exists():
        pytest.skip("the Glance store layout is not the file-per-image one")
    corrupt = bytearray(data)
    corrupt[1000] ^= 0xFF
    stored.write_bytes(bytes(corrupt))
    target = tmp_path / "bad.img"
    r = g2("image-download", image["id"], "--file", str(target))
    assert r.rc == 1
    assert "corrupt" in one_error_line(r)
    assert list(tmp_path.iterdir()) == []
    r = g2("image-download", image["id"])
    assert r.rc == 1
    assert "NOT the image" in one_error_line(r)


def test_download_of_queued_image_refused(g2, api2):
    image = api2.images.create(name=unique())
    r = g2("image-download", image["id"])
    assert r.rc == 1 and "no data" in one_error_line(r)


# -- delete, deactivate, tags ----------------------------------------------------------------


def test_delete_several_with_one_missing(g2, api2):
    a = api2.images.create(name=unique())
    b = api2.images.create(name=unique())
    missing = str(uuid.uuid4())
    r = g2("image-delete", a["id"], missing, b["name"])
    assert r.rc == 1
    lines = r.err.splitlines()
    assert len(lines) == 2 and missing in lines[0] and "1 of 3" in lines[1]
    for image in (a, b):
        with pytest.raises(exc.HTTPNotFound):
            api2.images.get(image["id"])


def test_delete_all_ok_is_silent(g2, api2):
    a = api2.images.create(name=unique())
    r = g2("image-delete", a["id"])
    assert (r.rc, r.out, r.err) == (0, "", "")


def test_delete_protected_refused(g2, api2):
    image = api2.images.create(name=unique(), protected=True)
    r = g2("image-delete", image["id"])
    assert r.rc == 1 and "403" in r.err
    api2.images.update(image["id"], protected=False)
    assert g2("image-delete", image["id"]).rc == 0


def test_deactivate_and_reactivate(g2, api2):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare",
                               data=b"abc")
    assert g2("image-deactivate", image["name"]).rc == 0
    assert api2.images.get(image["id"])["status"] == "deactivated"
    assert g2("image-reactivate", image["id"]).rc == 0
    assert api2.images.get(image["id"])["status"] == "active"


def test_deactivate_queued_image_fails(g2, api2):
    image = api2.images.create(name=unique())
    r = g2("image-deactivate", image["id"])
    assert r.rc == 1 and "HTTP 403" in one_error_line(r)


def test_tags(g2, api2):
    image = api2.images.create(name=unique())
    r = g2("-f", "json", "image-tag-update", image["id"], "red")
    assert r.rc == 0 and r.json()["tags"] == ["red"]
    assert g2("image-tag-update", image["name"], "blue").rc == 0
    assert sorted(api2.images.get(image["id"])["tags"]) == ["blue", "red"]
    assert g2("image-tag-delete", image["id"], "red").rc == 0
    assert api2.images.get(image["id"])["tags"] == ["blue"]


# -- stage / import --------------------------------------------------------------------------


def test_stage_puts_image_in_uploading(g2, api2):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare")
    r = g2("image-stage", image["id"], stdin=b"x" * 1000)
    assert r.rc == 0, r.err
    assert api2.images.get(image["id"])["status"] == "uploading"


def test_import_argument_checks(g2, api2):
    image = api2.images.create(name=unique())
    r = g2("image-import", image["id"], "--import-method", "web-download")
    assert r.rc == 2 and "--uri" in one_error_line(r)
    r = g2("image-import", image["id"], "--uri", "http://example.invalid/x")
    assert r.rc == 2
    r = g2("image-import", image["id"], "--import-method", "no-such-method")
    assert r.rc == 1 and "not enabled" in one_error_line(r)
    r = g2("image-create-via-import", "--name", unique(), "--import-method", "glance-direct")
    assert r.rc == 2 and "needs data" in one_error_line(r)


def test_import_info_and_stores_info(g2):
    r = g2("-f", "json", "import-info")
    assert r.rc == 0
    assert "glance-direct" in r.json()["import-methods"]["value"]
    r = g2("import-info")
    assert "import-methods" in r.out
    r = g2("-f", "json", "stores-info")
    assert r.rc == 0 and r.json()["stores"][0]["id"]
    r = g2("stores-info")
    assert r.out.splitlines()[1].split("|")[1].strip() == "ID"


def test_usage(g2):
    r = g2("usage")
    assert r.rc == 0 and "Quota" in r.out
    assert isinstance(g2("-f", "json", "usage").json(), dict)


# -- members ---------------------------------------------------------------------------------


def test_members(g2, api2):
    image = api2.images.create(name=unique(), visibility="shared")
    project = "proj-" + uuid.uuid4().hex[:8]
    r = g2("-f", "json", "member-create", image["name"], project)
    assert r.rc == 0, r.err
    assert r.json()[0]["status"] == "pending"
    assert [m["member_id"] for m in api2.image_members.list(image["id"])] == [project]
    r = g2("-f", "json", "member-list", "--image-id", image["id"])
    assert [m["member_id"] for m in r.json()] == [project]
    assert g2("member-update", image["id"], project, "accepted").rc == 0
    assert api2.image_members.get(image["id"], project)["status"] == "accepted"
    r = g2("member-list", "--image-id", image["id"])
    assert "accepted" in r.out and "Member ID" in r.out
    assert g2("member-delete", image["id"], project).rc == 0
    assert list(api2.image_members.list(image["id"])) == []
    r = g2("member-update", image["id"], project, "maybe")
    assert r.rc == 2


# -- failures in general ---------------------------------------------------------------------


def test_no_credentials_is_one_clear_line():
    r = run_cli("", "2", "image-list", env={})
    assert r.rc == 1
    line = one_error_line(r)
    assert "OS_AUTH_URL" in line and "--os-cloud" in line


def test_unreachable_server_is_one_line():
    from glancefs.testing.glance_server import free_port
    port = free_port()
    r = run_cli(f"http://127.0.0.1:{port}", "2", "image-list")
    assert r.rc == 1
    assert one_error_line(r) == (f"glancefs: image-list: cannot reach http://127.0.0.1:{port} "
                                 "(Connection refused)")


def test_debug_shows_traceback(g2):
    r = g2("--debug", "image-show", "nonexistent-" + uuid.uuid4().hex)
    assert r.rc == 1
    assert "Traceback" in r.err and r.err.rstrip().splitlines()[-1].startswith("glancefs: ")


def test_password_flag_warns_and_is_never_printed(g2):
    secret = "Sup3r-" + uuid.uuid4().hex
    r = run_cli("", "2", "--os-auth-url", "http://127.0.0.1:9/v3", "--os-username", "u",
                "--os-password", secret, "--os-project-name", "p", "--debug", "image-list",
                env={})
    assert r.rc == 1
    assert "visible to other users" in r.err and "OS_PASSWORD" in r.err
    assert secret not in r.err and secret not in r.out


def test_missing_password_names_the_option():
    r = run_cli("", "2", "image-list", env={"OS_AUTH_URL": "http://127.0.0.1:9/v3",
                                            "OS_USERNAME": "u", "OS_PROJECT_NAME": "p"})
    assert r.rc == 1
    assert "OS_PASSWORD" in one_error_line(r)


def test_mount_command_registered(g2):
    r = g2("help", "mount")
    assert r.rc == 0 and "mount" in r.out


def test_mount_keeps_its_own_short_options(g2, tmp_path):
    # -f after "mount" is the mount's (foreground), not the global --format.
    r = g2("mount", "-f", str(tmp_path / "missing-mountpoint"))
    assert r.rc != 0
    assert "format" not in r.err and "expected one argument" not in r.err


def test_version_option_after_the_command(g2, v2_server):
    r = g2("image-list", "--os-image-api-version", "1")
    assert r.rc == 1
    assert "does not offer this Images API version (HTTP 300; it offers v2)" in \
        one_error_line(r)


def test_attached_short_option_values(g2):
    r = g2("-fjson", "image-list", "--limit", "1")
    assert r.rc == 0 and isinstance(r.json(), list)


def test_command_index():
    from glancefs.cli.main import command_index
    assert command_index(["-f", "json", "image-list", "-f", "x"]) == 2
    assert command_index(["--debug", "--os-cloud", "c", "mount", "-f"]) == 3
    assert command_index(["--os-cloud=c", "-v", "help"]) == 2
    assert command_index(["-fjson", "usage"]) == 1
    assert command_index(["--insecure"]) == 1


# -- v1 --------------------------------------------------------------------------------------


def test_v1_create_show_list_download_delete(g1, api1, tmp_path):
    data = payload()
    path = tmp_path / "d.img"
    path.write_bytes(data)
    name = unique("v1")
    r = g1("-f", "json", "image-create", "--name", name, "--file", str(path),
           "--property", "os_distro=cirros", "--is-public", "True", "--min-ram", "32")
    assert r.rc == 0, r.err
    image = api1.images.get(r.json()["id"])
    assert image["status"] == "active" and image["checksum"] == md5(data)
    assert image["properties"] == {"os_distro": "cirros"}
    assert image["is_public"] is True and image["min_ram"] == 32
    assert image["disk_format"] == "raw" and image["container_format"] == "bare"

    r = g1("image-show", name)
    assert r.rc == 0 and "Property 'os_distro'" in r.out and "cirros" in r.out

    r = g1("-f", "json", "image-list", "--name", name)
    assert [i["id"] for i in r.json()] == [image["id"]]
    r = g1("-f", "json", "image-list", "--property-filter", "os_distro=cirros")
    assert image["id"] in [i["id"] for i in r.json()]
    r = g1("image-list", "--name", name)
    assert "Disk Format" in r.out and name in r.out

    r = g1("image-download", name)
    assert r.rc == 0 and r.data == data
    r = g1("image-download", image["id"], "--file", str(tmp_path / "o"))
    assert r.rc == 0 and (tmp_path / "o").read_bytes() == data

    assert g1("image-delete", name).rc == 0
    with pytest.raises(exc.HTTPNotFound):
        api1.images.get(image["id"])


def test_v1_create_from_stdin_and_upload(g1, api1):
    data = payload(100_000)
    r = g1("-f", "json", "image-create", "--name", unique("v1"), "--disk-format", "raw",
           "--container-format", "bare", stdin=data)
    assert r.rc == 0, r.err
    assert api1.images.get(r.json()["id"])["checksum"] == md5(data)

    r = g1("-f", "json", "image-create", "--name", unique("v1"), "--disk-format", "raw",
           "--container-format", "bare")
    assert r.rc == 0 and r.json()["status"] == "queued"
    ident = r.json()["id"]
    r = g1("image-upload", ident, stdin=data)
    assert r.rc == 0, r.err
    after = api1.images.get(ident)
    assert after["status"] == "active" and after["checksum"] == md5(data)


def test_v1_update(g1, api1):
    image = api1.images.create(name=unique("v1"), properties={"a": "1", "b": "2"})
    r = g1("image-update", image["id"], "--name", "renamed-v1", "--property", "c=3",
           "--remove-property", "a", "--visibility", "public", "--protected", "True")
    assert r.rc == 0, r.err
    after = api1.images.get(image["id"])
    assert after["name"] == "renamed-v1"
    assert after["properties"] == {"b": "2", "c": "3"}
    assert after["is_public"] is True and after["protected"] is True
    r = g1("image-delete", image["id"])
    assert r.rc == 1 and "403" in r.err
    assert g1("image-update", image["id"], "--is-protected", "False").rc == 0
    assert g1("image-delete", image["id"]).rc == 0


def test_v1_shared_visibility_refused(g1):
    r = g1("image-create", "--name", "x", "--visibility", "shared")
    assert r.rc == 2


def test_v1_members(g1, api1):
    image = api1.images.create(name=unique("v1"))
    tenant = "tenant-" + uuid.uuid4().hex[:6]
    assert g1("member-create", image["id"], tenant, "--can-share").rc == 0
    members = api1.image_members.list(image=image["id"])
    assert [(m["member_id"], m["can_share"]) for m in members] == [(tenant, True)]
    r = g1("-f", "json", "member-list", "--image-id", image["name"])
    assert [m["member_id"] for m in r.json()] == [tenant]
    r = g1("-f", "json", "member-list", "--tenant-id", tenant)
    assert [m["image_id"] for m in r.json()] == [image["id"]]
    r = g1("member-list")
    assert r.rc == 2
    assert g1("member-delete", image["id"], tenant).rc == 0
    assert api1.image_members.list(image=image["id"]) == []


def test_v1_errors(g1):
    r = g1("image-show", str(uuid.uuid4()))
    assert r.rc == 1 and "no image" in one_error_line(r)


# -- the real entry point, real pipes and terminals ------------------------------------------


def test_entry_point_pipe_upload_and_download(v2_server, api2, tmp_path):
    data = payload(1_500_000)
    env = cli_env(OS_IMAGE_URL=v2_server.endpoint)
    proc = subprocess.run(glancefs_cmd("-f", "json", "image-create", "--name", unique("pipe")),
                          input=data, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ident = json.loads(proc.stdout)["id"]
    assert api2.images.get(ident)["checksum"] == md5(data)
    proc = subprocess.run(glancefs_cmd("image-download", ident), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == data and proc.stderr == b""


def test_entry_point_devnull_stdin_creates_no_data(v2_server, api2):
    env = cli_env(OS_IMAGE_URL=v2_server.endpoint)
    proc = subprocess.run(glancefs_cmd("-f", "json", "image-create", "--name", unique()),
                          stdin=subprocess.DEVNULL, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert api2.images.get(json.loads(proc.stdout)["id"])["status"] == "queued"


def _run_in_pty(argv: list[str], env: dict[str, str], stdout_tty: bool = True,
                timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Run with stderr (and optionally stdout) on a pseudo-terminal."""
    master, slave = pty.openpty()
    with tempfile.TemporaryFile() as sink:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=slave if stdout_tty else sink, stderr=slave)
        os.close(slave)
        tty_bytes = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                tty_bytes += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=10)
        os.close(master)
        sink.seek(0)
        out = sink.read()
    return proc.returncode, out, tty_bytes


def test_download_to_terminal_refused(v2_server, api2):
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare",
                               data=b"binary\x00data")
    rc, _, tty = _run_in_pty(glancefs_cmd("image-download", image["id"]),
                             cli_env(OS_IMAGE_URL=v2_server.endpoint))
    assert rc == 2
    assert b"refusing to write image data to a terminal" in tty
    assert b"binary\x00data" not in tty


def test_progress_bar_on_terminal_stderr(v2_server, api2, tmp_path):
    data = payload(8 * 1024 * 1024)
    image = api2.images.create(name=unique(), disk_format="raw", container_format="bare",
                               data=data)
    rc, out, tty = _run_in_pty(glancefs_cmd("image-download", image["id"], "--progress"),
                               cli_env(OS_IMAGE_URL=v2_server.endpoint), stdout_tty=False)
    assert rc == 0 and out == data
    assert b"100%" in tty and b"/s" in tty and b"8.0 MiB" in tty
    path = tmp_path / "up.img"
    path.write_bytes(data)
    rc, _, tty = _run_in_pty(glancefs_cmd("image-create", "--name", unique(), "--file",
                                          str(path), "--progress"),
                             cli_env(OS_IMAGE_URL=v2_server.endpoint), stdout_tty=False)
    assert rc == 0 and b"upload" in tty and b"100%" in tty


def test_pipe_closed_early_is_quiet(v2_server, api2):
    for _ in range(3):
        api2.images.create(name=unique("pipe"))
    env = cli_env(OS_IMAGE_URL=v2_server.endpoint)
    proc = subprocess.run(f"{sys.executable} -m glancefs.cli.main image-list | head -1",
                          shell=True, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert b"Traceback" not in proc.stderr and b"Broken pipe" not in proc.stderr


# -- the table printer -----------------------------------------------------------------------


def test_render_table_wraps_and_aligns():
    table = render_table(["Property", "Value"], [["a", "x" * 25], ["long key", "two\nlines"]],
                         max_width=10)
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[3] == "| a        | xxxxxxxxxx |"
    assert "| long key | two        |" in lines and "|          | lines      |" in lines


# -- the progress bar ------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_rate_and_eta():
    from glancefs.cli.progress import Progress
    now = [100.0]
    bar = Progress(_Tty(), 100 * 1024 * 1024, "download", clock=lambda: now[0])
    for _ in range(10):  # 10 MiB/s for 5 s
        now[0] += 0.5
        bar.update(5 * 1024 * 1024)
    line = bar.line()
    assert "[" in line and " 50%" in line and "50.0 MiB of 100.0 MiB" in line
    assert "10.0 MiB/s" in line and "ETA 00:05" in line
    for _ in range(4):  # it slows down: the rate follows within the window
        now[0] += 1.0
        bar.update(1024 * 1024)
    assert "1.0 MiB/s" in bar.line()


def test_progress_without_total_or_terminal():
    from glancefs.cli.progress import Progress
    now = [0.0]
    bar = Progress(_Tty(), None, "upload", clock=lambda: now[0])
    now[0] = 2.0
    bar.update(4096)
    assert bar.line().startswith("upload 4.0 KiB") and "00:02" in bar.line()
    quiet = io.StringIO()  # not a terminal: nothing is drawn
    bar = Progress(quiet, 10, "x")
    bar.update(10)
    bar.finish()
    assert quiet.getvalue() == ""
