"""Images API v2 metadata definitions (the ``metadefs`` catalog): namespaces, resource
types, properties, objects and tags, with python-glanceclient's manager names and methods
(``client.metadefs_namespace.list()``, ``client.metadefs_tag.create_multiple(...)`` ...).

Unlike python-glanceclient, no JSON schema is fetched to validate arguments before a request:
Glance validates every body itself and answers 400 with the reason, which reaches the caller
as HTTPBadRequest. Objects are :class:`Resource` dicts without the server's ``self`` link.
"""
from __future__ import annotations

import builtins  # the managers' list methods shadow list in their annotations
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from glancefs.api.http import HTTPClient
from glancefs.api.resource import Resource
from glancefs.api.values import check_one_of

DEFAULT_PAGE_SIZE = 20
SORT_DIR_VALUES = ("asc", "desc")
SORT_KEY_VALUES = ("created_at", "namespace")
# Fields the server sets; a PUT that carries them is refused.
_READ_ONLY = ("schema", "updated_at", "created_at", "self")


def _seg(name: str) -> str:
    """One path segment. Names like ``OS::Compute::CPUPinning`` keep their colons."""
    return quote(str(name), safe=":")


def _namespace_path(namespace: str, *rest: str) -> str:
    return "/".join(["/v2/metadefs/namespaces", _seg(namespace), *(_seg(r) for r in rest)])


def _resource(body: Any) -> Resource:
    body = dict(body or {})
    body.pop("self", None)
    return Resource(body)


def _writable(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in {**current, **changes}.items() if k not in _READ_ONLY}
    return body


class _Manager:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def _delete(self, path: str) -> None:
        self.http.request("DELETE", path).close()


class NamespaceManager(_Manager):
    """``client.metadefs_namespace``."""

    def create(self, **kwargs: Any) -> Resource:
        return _resource(self.http.json_request("POST", "/v2/metadefs/namespaces",
                                                json=kwargs))

    def update(self, namespace_name: str, **kwargs: Any) -> Resource:
        """Change fields of a namespace (``namespace=`` renames it); returns it as stored."""
        current = self.get(namespace_name)
        for key in ("properties", "objects", "tags", "resource_type_associations"):
            current.pop(key, None)  # not part of a namespace's own record
        body = _writable(current, kwargs)
        self.http.request("PUT", _namespace_path(namespace_name), json=body).close()
        return self.get(body.get("namespace") or namespace_name)

    def get(self, namespace: str, **kwargs: Any) -> Resource:
        """One namespace with its properties, objects, tags and resource types;
        ``resource_type=`` prefixes the property names as that type sees them."""
        params = {k: v for k, v in kwargs.items() if v is not None}
        return _resource(self.http.json_request("GET", _namespace_path(namespace),
                                                params=params or None))

    def list(self, filters: dict[str, Any] | None = None, page_size: int | None = None,
             marker: str | None = None, sort_key: str | None = None,
             sort_dir: str | None = None, limit: int | None = None,
             **_ignored: Any) -> Iterator[Resource]:
        """Every namespace matching ``filters`` (``resource_types``, ``visibility``),
        following the server's next links; ``limit`` caps the total."""
        check_one_of("sort_key", sort_key, SORT_KEY_VALUES)
        check_one_of("sort_dir", sort_dir, SORT_DIR_VALUES)
        params: builtins.list[tuple[str, str]] = []
        for key, value in (filters or {}).items():
            if value is None:
                continue
            if isinstance(value, (builtins.list, tuple)):
                value = ",".join(str(v) for v in value)
            params.append((key, str(value)))
        params.append(("limit", str(page_size or DEFAULT_PAGE_SIZE)))
        for key, value in (("marker", marker), ("sort_key", sort_key), ("sort_dir", sort_dir)):
            if value:
                params.append((key, value))
        for raw in self.http.pages("/v2/metadefs/namespaces", "namespaces", params, limit):
            yield _resource(raw)

    def delete(self, namespace: str) -> None:
        self._delete(_namespace_path(namespace))


class ResourceTypeManager(_Manager):
    """``client.metadefs_resource_type``."""

    def associate(self, namespace: str, **kwargs: Any) -> Resource:
        return _resource(self.http.json_request(
            "POST", _namespace_path(namespace, "resource_types"), json=kwargs))

    def deassociate(self, namespace: str, resource: str) -> None:
        self._delete(_namespace_path(namespace, "resource_types", resource))

    def list(self) -> Iterator[Resource]:
        """Every resource type the catalog knows."""
        body = self.http.json_request("GET", "/v2/metadefs/resource_types") or {}
        return iter([_resource(r) for r in body.get("resource_types", [])])

    def get(self, namespace: str) -> Iterator[Resource]:
        """The resource types associated with ``namespace``."""
        body = self.http.json_request("GET", _namespace_path(namespace, "resource_types")) or {}
        return iter([_resource(r) for r in body.get("resource_type_associations", [])])


class _Member(_Manager):
    """Properties, objects and tags: records kept under ``collection`` inside a namespace,
    each named by its path. The public methods keep python-glanceclient's argument names
    (``prop_name``, ``object_name``, ``tag_name``) and call these."""

    collection = ""

    def _path(self, namespace: str, *name: str) -> str:
        return _namespace_path(namespace, self.collection, *name)

    def get(self, namespace: str, name: str) -> Resource:
        return _resource(self.http.json_request("GET", self._path(namespace, name)))

    def _listed(self, namespace: str) -> Any:
        """The collection as the server lists it (a list, or a dict for properties)."""
        body = self.http.json_request("GET", self._path(namespace)) or {}
        return body.get(self.collection)

    def _update(self, namespace: str, name: str, changes: dict[str, Any]) -> Resource:
        """PUT the record with ``changes`` (``name=`` renames it); returns it as stored."""
        body = _writable(self.get(namespace, name), changes)
        self.http.request("PUT", self._path(namespace, name), json=body).close()
        return self.get(namespace, body.get("name") or name)

    def delete_all(self, namespace: str) -> None:
        self._delete(self._path(namespace))


class PropertyManager(_Member):
    """``client.metadefs_property``."""

    collection = "properties"

    def create(self, namespace: str, **kwargs: Any) -> Resource:
        return _resource(self.http.json_request("POST", self._path(namespace), json=kwargs))

    def update(self, namespace: str, prop_name: str, **kwargs: Any) -> Resource:
        return self._update(namespace, prop_name, kwargs)

    def get(self, namespace: str, prop_name: str) -> Resource:
        prop = super().get(namespace, prop_name)
        prop["name"] = prop_name
        return prop

    def list(self, namespace: str, **_ignored: Any) -> Iterator[Resource]:
        return iter([_resource({**value, "name": key})
                     for key, value in (self._listed(namespace) or {}).items()])

    def delete(self, namespace: str, prop_name: str) -> None:
        self._delete(self._path(namespace, prop_name))


class ObjectManager(_Member):
    """``client.metadefs_object``."""

    collection = "objects"

    def create(self, namespace: str, **kwargs: Any) -> Resource:
        return _resource(self.http.json_request("POST", self._path(namespace), json=kwargs))

    def update(self, namespace: str, object_name: str, **kwargs: Any) -> Resource:
        return self._update(namespace, object_name, kwargs)

    def get(self, namespace: str, object_name: str) -> Resource:
        return super().get(namespace, object_name)

    def list(self, namespace: str, **_ignored: Any) -> Iterator[Resource]:
        return iter([_resource(o) for o in self._listed(namespace) or []])

    def delete(self, namespace: str, object_name: str) -> None:
        self._delete(self._path(namespace, object_name))


class TagManager(_Member):
    """``client.metadefs_tag``."""

    collection = "tags"

    def create(self, namespace: str, tag_name: str) -> Resource:
        return _resource(self.http.json_request("POST", self._path(namespace, tag_name)))

    def create_multiple(self, namespace: str, tags: builtins.list[str] | None = None,
                        append: bool = False, **_ignored: Any) -> Iterator[Resource]:
        """Set the namespace's tags to ``tags`` (``append``: add them to the ones there)."""
        headers = {"X-Openstack-Append": "True"} if append else {}
        body = self.http.json_request(
            "POST", self._path(namespace),
            json={"tags": [{"name": t} for t in tags or []]}, headers=headers) or {}
        return iter([_resource(t) for t in body.get("tags", [])])

    def update(self, namespace: str, tag_name: str, **kwargs: Any) -> Resource:
        return self._update(namespace, tag_name, kwargs)

    def get(self, namespace: str, tag_name: str) -> Resource:
        return super().get(namespace, tag_name)

    def list(self, namespace: str, **_ignored: Any) -> Iterator[Resource]:
        return iter([_resource(t) for t in self._listed(namespace) or []])

    def delete(self, namespace: str, tag_name: str) -> None:
        self._delete(self._path(namespace, tag_name))
