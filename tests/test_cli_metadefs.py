"""The ``md-*`` commands and ``explain`` against a real Glance with Glance's shipped metadata
definitions loaded (``glance-manage db_load_metadefs``), each effect checked through
python-glanceclient, and the Python API's metadefs managers against glanceclient's.

One Glance for the module: metadefs do not touch images, but loading them takes seconds.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glancefs.api import Client
from glancefs.api import exceptions as exc
from glancefs.testing.glance_server import GlanceServer, glance_bin
from tests.cli_support import CliResult, glanceclient_for, run_glancefs
from tests.conftest import fresh_glance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with fresh_glance(tmp_path_factory, "glance-metadefs", metadefs=True) as s:
        yield s


@pytest.fixture(scope="module")
def gc(server: GlanceServer) -> Any:
    return glanceclient_for(server.endpoint)


@pytest.fixture
def g(server: GlanceServer) -> Any:
    def run(*argv: str, **kwargs: Any) -> CliResult:
        return run_glancefs(server.endpoint, *argv, **kwargs)
    return run


def unique(prefix: str = "ns") -> str:
    return f"glancefs-{prefix}-{uuid.uuid4().hex[:8]}"


def ok(result: CliResult) -> CliResult:
    assert result.rc == 0, result.err
    assert result.err == ""
    return result


def table_rows(text: str) -> list[list[str]]:
    """The data rows of a bordered table (header row dropped)."""
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[1:]


def not_found(call: Any) -> bool:
    with pytest.raises(Exception) as info:
        call()
    return getattr(info.value, "code", None) == 404 or "404" in str(info.value)


# -- namespaces ------------------------------------------------------------------------------


def test_namespace_create_update_show_list_delete(g: Any, gc: Any) -> None:
    name = unique()
    created = ok(g("-f", "json", "md-namespace-create", name, "--display-name", "First",
                   "--description", "made by glancefs", "--visibility", "public",
                   "--protected", "False", "--resource-type-associations",
                   "OS::Glance::Image")).json()
    assert created["namespace"] == name
    seen = gc.metadefs_namespace.get(name)
    assert (seen["display_name"], seen["description"], seen["visibility"]) == \
        ("First", "made by glancefs", "public")
    assert [a["name"] for a in seen["resource_type_associations"]] == ["OS::Glance::Image"]

    renamed = name + "-b"
    ok(g("md-namespace-update", name, "--namespace", renamed, "--display-name", "Second",
         "--visibility", "private"))
    seen = gc.metadefs_namespace.get(renamed)
    assert (seen["display_name"], seen["visibility"], seen["description"]) == \
        ("Second", "private", "made by glancefs")
    assert not_found(lambda: gc.metadefs_namespace.get(name))

    shown = dict(table_rows(ok(g("md-namespace-show", renamed)).out))
    assert shown["namespace"] == renamed and shown["display_name"] == "Second"
    assert shown["resource_type_associations"] == "OS::Glance::Image"

    listed = [r[0] for r in table_rows(ok(g("md-namespace-list", "--page-size", "7")).out)]
    assert renamed in listed
    assert sorted(listed) == sorted(n["namespace"] for n in gc.metadefs_namespace.list())
    private = {n["namespace"] for n in ok(g("-f", "json", "md-namespace-list", "--visibility",
                                            "private")).json()}
    assert renamed in private
    assert private == {n["namespace"] for n in
                       gc.metadefs_namespace.list(filters={"visibility": "private"})}

    ok(g("md-namespace-delete", renamed))
    assert not_found(lambda: gc.metadefs_namespace.get(renamed))


def test_namespace_list_by_resource_type_matches_glanceclient(g: Any, gc: Any) -> None:
    mine = ok(g("-f", "json", "md-namespace-list", "--resource-types", "OS::Nova::Flavor")).json()
    theirs = gc.metadefs_namespace.list(filters={"resource_types": ["OS::Nova::Flavor"]})
    assert {n["namespace"] for n in mine} == {n["namespace"] for n in theirs}
    assert "OS::Compute::CPUPinning" in {n["namespace"] for n in mine}


def test_namespace_show_with_resource_type_prefixes_properties(g: Any) -> None:
    plain = ok(g("-f", "json", "md-namespace-show", "OS::Compute::CPUPinning")).json()
    prefixed = ok(g("-f", "json", "md-namespace-show", "OS::Compute::CPUPinning",
                    "--resource-type", "OS::Glance::Image")).json()
    assert set(prefixed["properties"]) == {"hw_" + p for p in plain["properties"]}


def test_namespace_import_from_file_and_stdin(g: Any, gc: Any, tmp_path: Path) -> None:
    from_file, from_stdin = unique("imp"), unique("imp")
    document = {"namespace": from_file, "display_name": "Imported", "visibility": "public",
                "properties": {"speed": {"title": "Speed", "type": "integer"}},
                "tags": [{"name": "fast"}]}
    path = tmp_path / "ns.json"
    path.write_text(json.dumps(document))
    ok(g("md-namespace-import", "--file", str(path)))
    document["namespace"] = from_stdin
    ok(g("md-namespace-import", stdin=json.dumps(document).encode()))
    for name in (from_file, from_stdin):
        seen = gc.metadefs_namespace.get(name)
        assert seen["display_name"] == "Imported"
        assert list(seen["properties"]) == ["speed"]
        assert [t["name"] for t in seen["tags"]] == ["fast"]
        gc.metadefs_namespace.delete(name)


def test_namespace_import_refuses_what_is_not_a_json_object(g: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[1, 2]")
    bad = g("md-namespace-import", "--file", str(path))
    assert bad.rc == 1 and "not a valid JSON object" in bad.error_line()
    nothing = g("md-namespace-import")
    assert nothing.rc == 1 and "--file" in nothing.error_line()


# -- resource types --------------------------------------------------------------------------


def test_resource_types_list_associate_and_deassociate(g: Any, gc: Any) -> None:
    listed = [r[0] for r in table_rows(ok(g("md-resource-type-list")).out)]
    assert sorted(listed) == sorted(r["name"] for r in gc.metadefs_resource_type.list())
    assert "OS::Glance::Image" in listed

    name = unique()
    gc.metadefs_namespace.create(namespace=name)
    try:
        out = dict(table_rows(ok(g("md-resource-type-associate", name, "--name",
                                   "OS::Cinder::Volume", "--prefix", "x_",
                                   "--properties-target", "image")).out))
        assert (out["name"], out["prefix"], out["properties_target"]) == \
            ("OS::Cinder::Volume", "x_", "image")
        seen = [(r["name"], r["prefix"], r["properties_target"])
                for r in gc.metadefs_resource_type.get(name)]
        assert seen == [("OS::Cinder::Volume", "x_", "image")]
        rows = table_rows(ok(g("md-namespace-resource-type-list", name)).out)
        assert rows == [["OS::Cinder::Volume", "x_", "image"]]

        ok(g("md-resource-type-deassociate", name, "OS::Cinder::Volume"))
        assert list(gc.metadefs_resource_type.get(name)) == []
    finally:
        gc.metadefs_namespace.delete(name)


# -- properties, objects, tags ---------------------------------------------------------------


@pytest.fixture
def namespace(gc: Any) -> Iterator[str]:
    name = unique()
    gc.metadefs_namespace.create(namespace=name)
    yield name
    gc.metadefs_namespace.delete(name)


def test_properties(g: Any, gc: Any, namespace: str) -> None:
    out = ok(g("-f", "json", "md-property-create", namespace, "--name", "cores", "--title",
               "Cores", "--type", "integer", "--schema",
               '{"minimum": 1, "description": "CPU cores"}')).json()
    assert (out["name"], out["minimum"]) == ("cores", 1)
    seen = gc.metadefs_property.get(namespace, "cores")
    assert (seen["title"], seen["type"], seen["minimum"], seen["description"]) == \
        ("Cores", "integer", 1, "CPU cores")
    ok(g("md-property-create", namespace, "--name", "arch", "--title", "Arch", "--type",
         "string", "--schema", "{}"))

    rows = table_rows(ok(g("md-property-list", namespace)).out)
    assert sorted(rows) == [["arch", "Arch", "string"], ["cores", "Cores", "integer"]]
    shown = dict(table_rows(ok(g("md-property-show", namespace, "cores")).out))
    assert (shown["name"], shown["minimum"]) == ("cores", "1")

    ok(g("md-property-update", namespace, "cores", "--name", "vcpus", "--title", "vCPUs",
         "--schema", '{"type": "integer", "maximum": 64}'))
    seen = gc.metadefs_property.get(namespace, "vcpus")
    assert (seen["title"], seen["maximum"]) == ("vCPUs", 64)
    assert not_found(lambda: gc.metadefs_property.get(namespace, "cores"))

    ok(g("md-property-delete", namespace, "arch"))
    assert [p["name"] for p in gc.metadefs_property.list(namespace)] == ["vcpus"]
    ok(g("md-namespace-properties-delete", namespace))
    assert list(gc.metadefs_property.list(namespace)) == []


def test_property_create_with_bad_schema_is_refused(g: Any, gc: Any, namespace: str) -> None:
    bad = g("md-property-create", namespace, "--name", "p", "--title", "P", "--type",
            "string", "--schema", "{not json")
    assert bad.rc == 1 and "Schema is not a valid JSON object" in bad.error_line()
    missing = g("md-property-create", namespace, "--name", "p")
    assert missing.rc == 2
    assert list(gc.metadefs_property.list(namespace)) == []


def test_objects(g: Any, gc: Any, namespace: str) -> None:
    schema = {"description": "a flavor part",
              "properties": {"ram": {"type": "integer", "title": "RAM", "minimum": 0}},
              "required": ["ram"]}
    ok(g("md-object-create", namespace, "--name", "memory", "--schema", json.dumps(schema)))
    seen = gc.metadefs_object.get(namespace, "memory")
    assert seen["description"] == "a flavor part" and seen["required"] == ["ram"]
    assert seen["properties"]["ram"]["title"] == "RAM"

    shown = dict(table_rows(ok(g("md-object-show", namespace, "memory")).out))
    assert (shown["name"], shown["properties"]) == ("memory", "ram")
    prop = dict(table_rows(ok(g("md-object-property-show", namespace, "memory", "ram")).out))
    assert (prop["name"], prop["title"], prop["type"]) == ("ram", "RAM", "integer")
    missing = g("md-object-property-show", namespace, "memory", "disk")
    assert missing.rc == 1 and "Property disk not found in object memory" in missing.error_line()

    ok(g("md-object-update", namespace, "memory", "--name", "mem", "--schema",
         '{"description": "renamed"}'))
    seen = gc.metadefs_object.get(namespace, "mem")
    assert seen["description"] == "renamed"
    assert not_found(lambda: gc.metadefs_object.get(namespace, "memory"))

    ok(g("md-object-create", namespace, "--name", "other", "--schema", "{}"))
    rows = table_rows(ok(g("md-object-list", namespace)).out)
    assert sorted(rows) == [["mem", "renamed"], ["other", ""]]
    ok(g("md-object-delete", namespace, "other"))
    assert [o["name"] for o in gc.metadefs_object.list(namespace)] == ["mem"]
    ok(g("md-namespace-objects-delete", namespace))
    assert list(gc.metadefs_object.list(namespace)) == []


def test_tags(g: Any, gc: Any, namespace: str) -> None:
    ok(g("md-tag-create", namespace, "--name", "solo"))
    assert gc.metadefs_tag.get(namespace, "solo")["name"] == "solo"

    # Without --append the namespace's tags are replaced.
    rows = table_rows(ok(g("md-tag-create-multiple", namespace, "--names", "a; b ;c",
                           "--delim", ";")).out)
    assert sorted(r[0] for r in rows) == ["a", "b", "c"]
    assert sorted(t["name"] for t in gc.metadefs_tag.list(namespace)) == ["a", "b", "c"]
    ok(g("md-tag-create-multiple", namespace, "--names", "d,e", "--append"))
    assert sorted(t["name"] for t in gc.metadefs_tag.list(namespace)) == \
        ["a", "b", "c", "d", "e"]

    ok(g("md-tag-update", namespace, "a", "--name", "z"))
    assert gc.metadefs_tag.get(namespace, "z")["name"] == "z"
    assert not_found(lambda: gc.metadefs_tag.get(namespace, "a"))
    shown = dict(table_rows(ok(g("md-tag-show", namespace, "z")).out))
    assert shown["name"] == "z"
    listed = sorted(r[0] for r in table_rows(ok(g("md-tag-list", namespace)).out))
    assert listed == ["b", "c", "d", "e", "z"]

    ok(g("md-tag-delete", namespace, "z"))
    assert sorted(t["name"] for t in gc.metadefs_tag.list(namespace)) == ["b", "c", "d", "e"]
    ok(g("md-namespace-tags-delete", namespace))
    assert list(gc.metadefs_tag.list(namespace)) == []

    blank = g("md-tag-create", namespace, "--name", "  ")
    assert blank.rc == 1 and "non-blank" in blank.error_line()
    assert list(gc.metadefs_tag.list(namespace)) == []


def test_missing_namespace_is_one_line_and_status_1(g: Any) -> None:
    for argv in (["md-namespace-show", "no-such-ns"], ["md-property-list", "no-such-ns"],
                 ["md-tag-delete", "no-such-ns", "t"]):
        result = g(*argv)
        assert result.rc == 1, argv
        assert "404" in result.error_line()


def test_exit_statuses_match_glance(server: GlanceServer, g: Any, tmp_path: Path) -> None:
    """The same failing command lines through ``glance`` itself: same exit status. Its
    home is the test's: glance caches the server's schemas there, and what it caches
    changes the options other runs of it offer."""
    import subprocess

    from tests.cli_support import cli_env

    cases = [["md-namespace-show", "no-such-ns"],        # the server's 404
             ["md-property-create", "x", "--name", "p"],  # missing required options
             ["md-object-create", "x", "--name", "o", "--schema", "nope"],  # bad JSON
             ["explain", "no-such-model"]]
    for argv in cases:
        theirs = subprocess.run([str(glance_bin("glance")), "--os-image-url", server.endpoint,
                                 *argv], env=cli_env(HOME=str(tmp_path)), capture_output=True,
                                text=True, timeout=120)
        assert g(*argv).rc == theirs.returncode, (argv, theirs.stderr)


# -- explain ---------------------------------------------------------------------------------


def test_explain_lists_the_schema_attributes(g: Any, gc: Any) -> None:
    for model in ("image", "metadefs/namespace"):
        rows = table_rows(ok(g("explain", model)).out)
        schema = gc.schemas.get(model)
        assert [r[0] for r in rows] == [p.name for p in schema.properties]
        described = {p.name: p.description or "" for p in schema.properties}
        assert all(" ".join(described[r[0]].split()).startswith(r[1].split()[0])
                   for r in rows if r[1])
    missing = g("explain", "no-such-model")
    assert missing.rc == 1
    assert "Unable to find requested model 'no-such-model'" in missing.error_line()


# -- the Python API --------------------------------------------------------------------------


def test_python_api_managers_read_what_glanceclient_reads(server: GlanceServer,
                                                          gc: Any) -> None:
    client = Client("2", endpoint=server.endpoint)
    mine = {n["namespace"] for n in client.metadefs_namespace.list(page_size=5)}
    assert mine == {n["namespace"] for n in gc.metadefs_namespace.list()}
    assert len(list(client.metadefs_namespace.list(limit=3))) == 3
    ns = "OS::Compute::Quota"
    assert client.metadefs_namespace.get(ns)["display_name"] == \
        gc.metadefs_namespace.get(ns)["display_name"]
    assert sorted(p["name"] for p in client.metadefs_property.list(ns)) == \
        sorted(p["name"] for p in gc.metadefs_property.list(ns))
    assert sorted(o["name"] for o in client.metadefs_object.list(ns)) == \
        sorted(o["name"] for o in gc.metadefs_object.list(ns))
    assert [r["name"] for r in client.metadefs_resource_type.get(ns)] == \
        [r["name"] for r in gc.metadefs_resource_type.get(ns)]
    with pytest.raises(exc.HTTPNotFound):
        client.metadefs_tag.get(ns, "no-such-tag")
    with pytest.raises(ValueError):
        list(client.metadefs_namespace.list(sort_key="size"))
