"""Images API v2: images, data, locations, tags, members, import, info, the image cache
and schemas (metadata definitions: glancefs.api.metadefs)."""
from __future__ import annotations

import builtins  # Images.list shadows list in the class's annotations
import hashlib
import io
import logging
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import urlencode

from glancefs.api import download, fields, metadefs
from glancefs.api import exceptions as exc
from glancefs.api.buffers import BufferPool, Chunk
from glancefs.api.formats import SNIFF_BYTES, guess_formats
from glancefs.api.http import CHUNK_SIZE, HTTPClient, SizedIterable
from glancefs.api.resource import Image, Resource
from glancefs.api.values import check_one_of

LOG = logging.getLogger(__name__)

PATCH_TYPE = "application/openstack-images-v2.1-json-patch"
DEFAULT_PAGE_SIZE = 200
WIRE_CHUNK = 64 * 1024      # chunk of an upload body (chunked encoding), as glanceclient sends
# The one field schema (glancefs.api.fields), under the names this module used.
READ_ONLY_FIELDS = fields.SERVER_OWNED
CORE_FIELDS = fields.CORE


def image_id_of(image: Any) -> str:
    return image["id"] if isinstance(image, dict) else getattr(image, "id", image)


class DataSource:
    """Image data from a file object, bytes or an iterator of chunks, read
    in large chunks and hashed on the way out (so an upload can be checked
    against what the server computed, without reading the data twice).

    One hash, MD5, in a worker thread: Glance stores the MD5 ``checksum`` of
    every upload (v1 and v2), and on a small machine that also runs the
    server, a second hash on the sending path costs upload speed.
    """

    def __init__(self, data: BinaryIO | bytes | Iterable[bytes], size: int | None = None,
                 chunk_size: int = CHUNK_SIZE) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = io.BytesIO(bytes(data))
        self.size = size if size is not None else _known_size(data)
        self.chunk_size = chunk_size
        self._md5 = download.BackgroundHash(hashlib.md5(usedforsecurity=False))
        self._md5_hex: str | None = None
        self.sent = 0
        self._head = b""
        if hasattr(data, "read"):
            self._iter: Iterator[bytes] = iter(lambda: data.read(chunk_size), b"")
        else:
            self._iter = iter(data)

    def peek(self, n: int = SNIFF_BYTES) -> bytes:
        """The first ``n`` bytes, kept to be sent first (for format detection)."""
        while len(self._head) < n:
            try:
                chunk = next(self._iter)
            except StopIteration:
                break
            self._head += chunk
        return self._head[:n]

    def __iter__(self) -> Iterator[bytes]:
        if self._head:
            head, self._head = self._head, b""
            yield from self._account(head)
        for chunk in self._iter:
            yield from self._account(chunk)

    def _account(self, chunk: bytes) -> Iterator[bytes]:
        if chunk:
            self._md5.update(chunk)
            self.sent += len(chunk)
            yield chunk

    def md5_hexdigest(self) -> str:
        """MD5 of everything sent so far; call once the upload is done."""
        if self._md5_hex is None:
            self._md5_hex = self._md5.hexdigest()
        return self._md5_hex

    def check(self, image_id: str, checksum: str | None) -> None:
        """Raise HashMismatch unless the server's ``checksum`` is the MD5 of
        the data sent."""
        sent = self.md5_hexdigest()
        if checksum and checksum != sent:
            raise exc.HashMismatch(f"image {image_id}: the server stored checksum {checksum}, "
                                   f"the data sent has {sent}")

    def body(self) -> Iterable[bytes]:
        return SizedIterable(self, self.size) if self.size is not None else iter(self)

    def wire_chunks(self) -> Iterator[bytes | memoryview]:
        """The data as a chunked-encoding body of 64 KiB chunks, the way
        python-glanceclient sends it. Glance (under gunicorn) reads a body 64 KiB
        at a time and copies the rest of a larger chunk at every read: 1 MiB
        chunks cost the server a quarter more CPU than 64 KiB ones, and a
        Content-Length body more still, which on a busy server is upload speed."""
        for chunk in self:
            if len(chunk) <= WIRE_CHUNK:
                yield chunk
                continue
            view = memoryview(chunk)
            for start in range(0, len(view), WIRE_CHUNK):
                yield view[start:start + WIRE_CHUNK]


def _known_size(data: Any) -> int | None:
    """Bytes left in a seekable file, else None (then chunked encoding)."""
    try:
        pos = data.tell()
        end = data.seek(0, io.SEEK_END)
        data.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


class Images:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def _model(self, body: dict[str, Any]) -> Image:
        body = dict(body)
        body.pop("self", None)
        return Image(self, body)

    # -- listing -----------------------------------------------------------
    def list(self, filters: dict[str, Any] | None = None, page_size: int | None = None,
             limit: int | None = None, marker: str | None = None,
             sort_key: str | list[str] | None = None, sort_dir: str | list[str] | None = None,
             sort: str | None = None, **extra_filters: Any) -> Iterator[Image]:
        """Every image matching ``filters``, following ``next`` links past the
        server's page size; ``limit`` caps the total."""
        params: list[tuple[str, str]] = []
        for key, value in {**(filters or {}), **extra_filters}.items():
            if value is None:
                continue
            if key == "tag" and isinstance(value, (list, tuple)):
                params.extend(("tag", str(tag)) for tag in value)
            else:
                params.append((key, str(value).lower() if isinstance(value, bool) else str(value)))
        if sort and (sort_key or sort_dir):
            raise exc.HTTPBadRequest("sort cannot be combined with sort_key or sort_dir")
        if sort:
            params.append(("sort", sort))
        for key in _as_list(sort_key):
            params.append(("sort_key", key))
        for direction in _as_list(sort_dir):
            params.append(("sort_dir", direction))
        page = page_size or DEFAULT_PAGE_SIZE
        if limit is not None:
            page = min(page, limit)
        params.append(("limit", str(page)))
        if marker:
            params.append(("marker", marker))
        for raw in self.http.pages("/v2/images", "images", params, limit):
            yield self._model(raw)

    def get(self, image: Any) -> Image:
        return self._model(self.http.json_request("GET", f"/v2/images/{image_id_of(image)}"))

    # -- create / update / delete ----------------------------------------
    def create(self, data: Any = None, **fields: Any) -> Image:
        """Create an image record (status ``queued``); with ``data``, upload it too.
        ``backend``: the store the data goes to (as python-glanceclient takes it)."""
        properties = fields.pop("properties", None) or {}
        backend = fields.pop("backend", None)
        body = {**{k: v for k, v in fields.items() if v is not None}, **properties}
        headers = {"Content-Type": "application/json"}
        if backend:
            headers["x-image-meta-store"] = backend
        image = self._model(self.http.json_request("POST", "/v2/images", json=body,
                                                   headers=headers))
        if data is not None:
            self.upload(image, data, backend=backend)
            image = self.get(image)
        return image

    def update(self, image: Any, remove_props: Iterable[str] | None = None,
               data: Any = None, properties: dict[str, Any] | None = None,
               purge_props: bool = False, image_size: int | None = None,
               **fields: Any) -> Image:
        """Change fields and properties (one JSON-patch request), then upload
        ``data`` if given. ``properties`` (the v1 spelling) are flattened into
        top-level properties as v2 stores them."""
        image_id = image_id_of(image)
        changes = {**fields, **(properties or {})}
        removals = set(remove_props or ())
        if changes or removals or purge_props:
            current = self.get(image_id)
            if purge_props:
                removals |= {k for k in current if k not in changes and k not in CORE_FIELDS}
            ops = patch_ops(current, changes, removals)
            if ops:
                self.patch(image_id, ops)
        if data is not None:
            self.upload(image_id, data, image_size=image_size)
        return self.get(image_id)

    def patch(self, image: Any, ops: builtins.list[dict[str, Any]]) -> Image:
        return self._model(self.http.json_request(
            "PATCH", f"/v2/images/{image_id_of(image)}", json=ops,
            headers={"Content-Type": PATCH_TYPE}))

    def delete(self, image: Any) -> None:
        self.http.request("DELETE", f"/v2/images/{image_id_of(image)}").close()

    def deactivate(self, image: Any) -> None:
        self.http.request("POST", f"/v2/images/{image_id_of(image)}/actions/deactivate").close()

    def reactivate(self, image: Any) -> None:
        self.http.request("POST", f"/v2/images/{image_id_of(image)}/actions/reactivate").close()

    # -- data --------------------------------------------------------------
    def upload(self, image: Any, image_data: Any, image_size: int | None = None,
               filename: str | None = None, verify: bool = True, _stage: bool = False,
               backend: str | None = None) -> None:
        """Stream data into a queued image. Missing disk/container formats are
        detected from the data first, because v2 refuses data without them.
        With ``verify``, the image's checksum must equal what was sent.
        ``backend``: the store to upload to (multi-store clouds; stores-info)."""
        image_id = image_id_of(image)
        source = image_data if isinstance(image_data, DataSource) else \
            DataSource(image_data, image_size)
        current = image if isinstance(image, dict) and "disk_format" in image else \
            self.get(image_id)
        if not current.get("disk_format") or not current.get("container_format"):
            disk, container, how = guess_formats(source.peek(), filename or current.get("name"))
            LOG.info("image %s: disk_format %s, container_format %s (from the data's %s)",
                     image_id, current.get("disk_format") or disk,
                     current.get("container_format") or container, how)
            ops = []
            if not current.get("disk_format"):
                ops.append({"op": "replace", "path": "/disk_format", "value": disk})
            if not current.get("container_format"):
                ops.append({"op": "replace", "path": "/container_format", "value": container})
            self.patch(image_id, ops)
        target = "stage" if _stage else "file"
        headers = {"Content-Type": "application/octet-stream"}
        if source.size is not None:
            # As python-glanceclient sends it: stores that allocate their target up
            # front (RBD, Cinder, S3) size it from this instead of growing it, and
            # Glance checks the quota before taking the data. The body stays chunked.
            headers["x-openstack-image-size"] = str(source.size)
        if backend and not _stage:
            headers["x-image-meta-store"] = backend
        self.http.request("PUT", f"/v2/images/{image_id}/{target}", data=source.wire_chunks(),
                          headers=headers, upload=True).close()
        if verify and not _stage:
            source.check(image_id, self.get(image_id).get("checksum"))

    def stage(self, image: Any, image_data: Any, image_size: int | None = None) -> None:
        self.upload(image, image_data, image_size=image_size, _stage=True)

    def image_import(self, image: Any, method: str = "glance-direct", uri: str | None = None,
                     stores: builtins.list[str] | None = None,
                     all_stores: bool | None = None,
                     allow_failure: bool = True, backend: str | None = None,
                     remote_region: str | None = None, remote_image_id: str | None = None,
                     remote_service_interface: str | None = None) -> None:
        """Start an import (the server runs it as a task: ``get_associated_image_tasks``).
        ``remote_*``: the glance-download method's image in another region."""
        body: dict[str, Any] = {"method": {"name": method}}
        if remote_region and remote_image_id:
            body["method"]["glance_region"] = remote_region
            body["method"]["glance_image_id"] = remote_image_id
            if remote_service_interface:
                body["method"]["glance_service_interface"] = remote_service_interface
        if uri:
            if method != "web-download":
                raise exc.HTTPBadRequest('a URI is only supported with method "web-download"')
            body["method"]["uri"] = uri
        if stores:
            body["stores"] = stores
        if all_stores:
            body["all_stores"] = True
        if stores or all_stores:
            body["all_stores_must_succeed"] = not allow_failure
        headers = {"x-image-meta-store": backend} if backend else {}
        self.http.request("POST", f"/v2/images/{image_id_of(image)}/import", json=body,
                          headers=headers).close()

    def data(self, image: Any, do_checksum: bool = True, offset: int = 0,
             length: int | None = None, byte_range: tuple[int, int] | None = None,
             chunk_size: int = CHUNK_SIZE, streams: int = 1,
             prefer: builtins.list[str] | None = None,
             buffers: BufferPool | None = None,
             **_ignored: Any) -> Iterator[Chunk]:
        """The image's data as a stream of chunks, resumed after a dropped
        connection; a whole read is verified against os_hash_value/checksum.
        ``byte_range=(start, end_inclusive)`` or ``offset``/``length`` read a part.
        ``streams`` > 1 reads a whole image as ranged parts over that many
        connections at once (download.parallel_stream), still in order.
        ``prefer``: stores to read from first, in order (multi-store clouds).
        ``buffers`` (glancefs): receive a ranged or single-stream read into
        buffers of that pool (download.stream)."""
        meta = image if isinstance(image, dict) and "status" in image else self.get(image)
        if byte_range is not None:
            offset, length = byte_range[0], byte_range[1] - byte_range[0] + 1
        expected = download.Expected(meta.get("size"), meta.get("os_hash_algo"),
                                     meta.get("os_hash_value"), meta.get("checksum"))
        path = f"/v2/images/{meta['id']}/file"
        if prefer:
            path += "?" + urlencode({"prefer": ",".join(prefer)})
        if streams > 1 and offset == 0 and length is None:
            return download.parallel_stream(self.http, path,
                                            expected=expected, streams=streams,
                                            verify=do_checksum, chunk_size=chunk_size)
        return download.stream(self.http, path, offset=offset,
                               length=length, expected=expected, verify=do_checksum,
                               chunk_size=chunk_size, buffers=buffers)

    # -- locations (the server must show them: show_multiple_locations) ------
    def _with_locations(self, image_id: str) -> Image:
        image = self.get(image_id)
        if image.get("locations") is None:
            raise exc.HTTPBadRequest("The administrator has disabled API access to image "
                                     "locations", code=400)
        return image

    def add_location(self, image_id: str, url: str, metadata: dict[str, Any],
                     validation_data: dict[str, Any] | None = None) -> Image:
        """Append a location to the image's list (a URL already there is an error)."""
        value: dict[str, Any] = {"url": url, "metadata": metadata}
        if validation_data:
            value["validation_data"] = validation_data
        self.patch(image_id, [{"op": "add", "path": "/locations/-", "value": value}])
        return self.get(image_id)

    def delete_locations(self, image_id: str, url_set: Iterable[str]) -> None:
        """Remove the locations with these URLs (all of them must be there)."""
        urls = [loc["url"] for loc in self._with_locations(image_id)["locations"]]
        wanted = set(url_set)
        missing = sorted(wanted - set(urls))
        if missing:
            raise exc.HTTPNotFound(f"Unknown URL(s): {missing}", code=404)
        # Highest index first: each removal shifts the ones after it.
        indices = sorted((urls.index(u) for u in wanted), reverse=True)
        self.patch(image_id, [{"op": "remove", "path": f"/locations/{i}"} for i in indices])

    def update_location(self, image_id: str, url: str, metadata: dict[str, Any]) -> Image:
        """Replace the metadata of the location with this URL."""
        image = self._with_locations(image_id)
        locations = [dict(loc) for loc in image["locations"]]
        match = [loc for loc in locations if loc["url"] == url]
        if not match:
            raise exc.HTTPNotFound(f"Unknown URL: {url}, the URL must be one of existing "
                                   f"locations of current image", code=404)
        if match[0].get("metadata") == metadata:
            return image
        match[0]["metadata"] = metadata
        self.patch(image_id, [{"op": "replace", "path": "/locations", "value": locations}])
        return self.get(image_id)

    def _require(self, version: str, what: str) -> None:
        if not has_version(self.http, version):
            raise exc.HTTPNotImplemented(f"{what} needs Images API {version}, which this "
                                         f"Glance does not offer", code=501)

    def add_image_location(self, image_id: str, location_url: str,
                           validation_data: dict[str, Any] | None = None) -> Image:
        """Give a queued image its data by location (Images API 2.17, POST .../locations)."""
        self._require("v2.17", "adding a location to a queued image")
        self.http.request("POST", f"/v2/images/{image_id}/locations",
                          json={"url": location_url,
                                "validation_data": validation_data or {}}).close()
        return self.get(image_id)

    def get_image_locations(self, image_id: str) -> builtins.list[dict[str, Any]]:
        self._require("v2.17", "listing an image's locations")
        return list(self.http.json_request("GET", f"/v2/images/{image_id}/locations") or [])

    # -- info (python-glanceclient has these on images too) -----------------
    def get_import_info(self) -> Resource:
        return Info(self.http).get_import_info()

    def get_stores_info(self) -> Resource:
        return Info(self.http).get_stores_info()

    def get_stores_info_detail(self) -> Resource:
        return Info(self.http).get_stores_info_detail()

    def delete_from_store(self, store_id: str, image: Any) -> None:
        """Remove the image's data from one store (it stays in the others)."""
        self.http.request("DELETE", f"/v2/stores/{store_id}/{image_id_of(image)}").close()

    def get_associated_image_tasks(self, image: Any) -> Resource:
        """``{"tasks": [...]}``: the import tasks run for the image, newest first;
        a failed one's ``message`` says why (Images API v2.12)."""
        body = self.http.json_request("GET", f"/v2/images/{image_id_of(image)}/tasks") or {}
        body.pop("self", None)
        return Resource(body)


def patch_ops(current: dict[str, Any], changes: dict[str, Any],
              removals: Iterable[str]) -> list[dict[str, Any]]:
    """JSON-patch operations turning ``current`` into ``current + changes -
    removals``; only properties that exist are removed (Glance answers 409
    to removing a missing one)."""
    ops: list[dict[str, Any]] = []
    for key, value in changes.items():
        if key in READ_ONLY_FIELDS:
            raise exc.HTTPForbidden(f"{key} is managed by the server and cannot be changed",
                                    code=403)
        if key not in CORE_FIELDS and not isinstance(value, str):
            value = str(value)  # Glance stores properties as strings.
        op = "replace" if key in current else "add"
        ops.append({"op": op, "path": "/" + _escape_pointer(key), "value": value})
    for key in removals:
        if key in current and key not in changes:
            ops.append({"op": "remove", "path": "/" + _escape_pointer(key)})
    return ops


def _escape_pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class ImageTags:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def update(self, image_id: str, tag_value: str) -> None:
        self.http.request("PUT", f"/v2/images/{image_id}/tags/{tag_value}").close()

    def delete(self, image_id: str, tag_value: str) -> None:
        self.http.request("DELETE", f"/v2/images/{image_id}/tags/{tag_value}").close()


class ImageMembers:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def list(self, image_id: str) -> Iterator[Resource]:
        body = self.http.json_request("GET", f"/v2/images/{image_id}/members")
        return iter([Resource(m) for m in body.get("members", [])])

    def get(self, image_id: str, member_id: str) -> Resource:
        return Resource(self.http.json_request("GET", f"/v2/images/{image_id}/members/{member_id}"))

    def create(self, image_id: str, member_id: str) -> Resource:
        return Resource(self.http.json_request("POST", f"/v2/images/{image_id}/members",
                                               json={"member": member_id}))

    def update(self, image_id: str, member_id: str, member_status: str) -> Resource:
        return Resource(self.http.json_request(
            "PUT", f"/v2/images/{image_id}/members/{member_id}", json={"status": member_status}))

    def delete(self, image_id: str, member_id: str) -> None:
        self.http.request("DELETE", f"/v2/images/{image_id}/members/{member_id}").close()


class Info:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def get_usage(self) -> Resource:
        return Resource(self.http.json_request("GET", "/v2/info/usage"))

    def get_import_info(self) -> Resource:
        return Resource(self.http.json_request("GET", "/v2/info/import"))

    def get_stores_info(self) -> Resource:
        return Resource(self.http.json_request("GET", "/v2/info/stores"))

    def get_stores_info_detail(self) -> Resource:
        """Stores with their type and properties (admin only)."""
        return Resource(self.http.json_request("GET", "/v2/info/stores/detail"))


TASK_SORT_KEYS = ("id", "type", "status")
TASK_SORT_DIRS = ("asc", "desc")
TASK_PAGE_SIZE = 20


class Tasks:
    """Glance tasks (``/v2/tasks``): the imports the server runs, and the
    legacy ``import`` task type."""

    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def list(self, filters: dict[str, Any] | None = None, page_size: int | None = None,
             marker: str | None = None, sort_key: str | None = None,
             sort_dir: str | None = None) -> Iterator[Resource]:
        """Every task matching ``filters`` (``type``, ``status``), following ``next`` links."""
        check_one_of("sort_key", sort_key, TASK_SORT_KEYS)
        check_one_of("sort_dir", sort_dir, TASK_SORT_DIRS)
        params: builtins.list[tuple[str, str]] = [
            (k, str(v)) for k, v in (filters or {}).items() if v is not None]
        params.append(("limit", str(page_size or TASK_PAGE_SIZE)))
        if marker:
            params.append(("marker", marker))
        if sort_key:
            params.append(("sort_key", sort_key))
        if sort_dir:
            params.append(("sort_dir", sort_dir))
        for raw in self.http.pages("/v2/tasks", "tasks", params):
            raw.pop("self", None)
            yield Resource(raw)

    def get(self, task_id: str) -> Resource:
        body = self.http.json_request("GET", f"/v2/tasks/{task_id}")
        body.pop("self", None)
        return Resource(body)

    def create(self, **kwargs: Any) -> Resource:
        """A new task: ``type`` (e.g. ``import``) and its ``input`` object."""
        body = self.http.json_request("POST", "/v2/tasks", json=kwargs,
                                      headers={"Content-Type": "application/json"})
        body.pop("self", None)
        return Resource(body)


def has_version(http: HTTPClient, version: str) -> bool:
    """Whether the server's /versions lists ``version`` (like "v2.18") as usable."""
    body = http.json_request("GET", "/versions") or {}
    for entry in body.get("versions", []):
        if entry.get("id") == version:
            return entry.get("status") in ("SUPPORTED", "CURRENT", "EXPERIMENTAL")
    return False


class Cache:
    """The image cache of the Glance node behind the endpoint (``client.cache``).

    The cache API is per node: behind a load balancer each request may reach another
    node, which is why the command line asks for a direct endpoint.
    """

    TARGET_VALUES = ("both", "cache", "queue")

    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def is_supported(self, version: str) -> bool:
        if has_version(self.http, version):
            return True
        raise exc.HTTPNotImplemented(f"Glance does not support image caching API ({version})",
                                     code=501)

    def list(self) -> dict[str, Any]:
        """{"cached_images": [...], "queued_images": [image ids]}."""
        self.is_supported("v2.14")
        return dict(self.http.json_request("GET", "/v2/cache") or {})

    def delete(self, image_id: str) -> None:
        self.is_supported("v2.14")
        self.http.request("DELETE", f"/v2/cache/{image_id}").close()

    def clear(self, target: str = "both") -> None:
        if target not in self.TARGET_VALUES:
            raise ValueError(f"target must be one of {', '.join(self.TARGET_VALUES)}")
        self.is_supported("v2.14")
        headers = {} if target == "both" else {"x-image-cache-clear-target": target}
        self.http.request("DELETE", "/v2/cache", headers=headers).close()

    def queue(self, image_id: str) -> None:
        self.is_supported("v2.14")
        self.http.request("PUT", f"/v2/cache/{image_id}").close()

    def list_cached_nodes(self, image_id: str) -> builtins.list[str]:
        self.is_supported("v2.14")
        return list(self.http.json_request("GET", f"/v2/cache/nodes/{image_id}") or [])

    def clean(self) -> dict[str, Any]:
        self.is_supported("v2.18")
        return dict(self.http.json_request("POST", "/v2/cache/clean") or {})

    def prune(self) -> dict[str, Any]:
        self.is_supported("v2.18")
        return dict(self.http.json_request("POST", "/v2/cache/prune") or {})


class Schemas:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def get(self, schema_name: str) -> Resource:
        return Resource(self.http.json_request("GET", f"/v2/schemas/{schema_name}"))


class Client:
    """Images v2 client; see glancefs.api.Client."""

    version = "2"

    def __init__(self, http: HTTPClient) -> None:
        self.http = http
        self.images = Images(http)
        self.image_tags = ImageTags(http)
        self.image_members = ImageMembers(http)
        self.info = Info(http)
        self.schemas = Schemas(http)
        self.cache = Cache(http)
        self.metadefs_namespace = metadefs.NamespaceManager(http)
        self.metadefs_resource_type = metadefs.ResourceTypeManager(http)
        self.metadefs_property = metadefs.PropertyManager(http)
        self.metadefs_object = metadefs.ObjectManager(http)
        self.metadefs_tag = metadefs.TagManager(http)
        self.tasks = Tasks(http)
