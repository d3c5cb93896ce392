"""Images API v1: metadata travels in ``x-image-meta-*`` headers.

Glance removed v1 in 2018, but clouds running old releases still serve it.
Differences the rest of glancefs relies on: properties sit under
``properties``; data is uploaded with the create or update request itself;
a GET of the data ignores ``Range`` (download.stream adapts); listing pages
by ``marker`` without ``next`` links.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from glancefs.api import download
from glancefs.api import exceptions as exc
from glancefs.api.buffers import BufferPool, Chunk
from glancefs.api.formats import guess_formats
from glancefs.api.http import CHUNK_SIZE, HTTPClient
from glancefs.api.resource import Image, Resource
from glancefs.api.v2 import DataSource, image_id_of
from glancefs.api.values import is_true

LOG = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 200
META = "x-image-meta-"
PROPERTY = "x-image-meta-property-"
UPDATE_FIELDS = frozenset({
    "name", "disk_format", "container_format", "min_disk", "min_ram", "owner", "size",
    "is_public", "protected", "location", "checksum", "copy_from", "properties", "deleted",
})
CREATE_FIELDS = UPDATE_FIELDS | {"id", "store"}
_BOOLEANS = ("is_public", "protected", "deleted")
_INTEGERS = ("size", "min_disk", "min_ram")
# Quote everything but plain printable ASCII, so any property value (UTF-8,
# '%', newlines) survives a header round trip.
_SAFE = " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"


def encode_header(value: Any) -> str:
    if isinstance(value, bool):
        value = "True" if value else "False"
    return quote(str(value), safe=_SAFE)


def meta_to_headers(fields: dict[str, Any]) -> dict[str, str]:
    headers = {}
    for key, value in (fields.get("properties") or {}).items():
        headers[PROPERTY + key] = encode_header(value)
    for key, value in fields.items():
        if key != "properties" and value is not None:
            headers[META + key] = encode_header(value)
    return headers


def meta_from_headers(headers: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"properties": {}}
    for key, value in headers.items():
        key = key.lower()
        if key.startswith(PROPERTY):
            meta["properties"][unquote(key[len(PROPERTY):])] = unquote(value)
        elif key.startswith(META):
            meta[key[len(META):]] = unquote(value)
    return normalise(meta)


def normalise(meta: dict[str, Any]) -> dict[str, Any]:
    for key in _BOOLEANS:
        if isinstance(meta.get(key), str):
            meta[key] = is_true(meta[key])
    for key in _INTEGERS:
        if isinstance(meta.get(key), str):
            meta[key] = int(meta[key]) if meta[key].strip().isdigit() else None
    meta.setdefault("properties", {})
    return meta


class Images:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def _model(self, meta: dict[str, Any]) -> Image:
        return Image(self, normalise(dict(meta)))

    def list(self, filters: dict[str, Any] | None = None, page_size: int | None = None,
             limit: int | None = None, marker: str | None = None,
             sort_key: str | None = None, sort_dir: str | None = None,
             detail: bool = True, **extra_filters: Any) -> Iterator[Image]:
        """Every image (detailed) matching ``filters``; pages by marker."""
        params: dict[str, Any] = {}
        for key, value in {**(filters or {}), **extra_filters}.items():
            if value is None:
                continue
            if key == "properties":
                params.update({f"property-{k}": v for k, v in value.items()})
            else:
                params[key] = str(value).lower() if isinstance(value, bool) else value
        if sort_key:
            params["sort_key"] = sort_key
        if sort_dir:
            params["sort_dir"] = sort_dir
        page = page_size or DEFAULT_PAGE_SIZE
        remaining = limit
        path = "/v1/images/detail" if detail else "/v1/images"
        while True:
            params["limit"] = min(page, remaining) if remaining is not None else page
            if marker:
                params["marker"] = marker
            images = self.http.json_request("GET", path, params=params).get("images", [])
            for raw in images:
                yield self._model(raw)
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return
            # The server may cap the page below what we asked: go on until a
            # page comes back empty rather than trusting a short one.
            if not images:
                return
            marker = images[-1]["id"]

    def get(self, image: Any) -> Image:
        resp = self.http.request("HEAD", f"/v1/images/{quote(image_id_of(image))}")
        resp.close()
        return self._model(meta_from_headers(resp.headers))

    def create(self, data: Any = None, image_size: int | None = None, **fields: Any) -> Image:
        unknown = set(fields) - CREATE_FIELDS
        if unknown:
            raise TypeError(f"unknown v1 image fields: {', '.join(sorted(unknown))}")
        return self._send("POST", "/v1/images", fields, data, image_size)

    def update(self, image: Any, data: Any = None, purge_props: bool = False,
               remove_props: Iterable[str] | None = None, image_size: int | None = None,
               **fields: Any) -> Image:
        """Change metadata, and upload ``data`` into a queued image. v1 keeps
        properties not sent unless ``purge_props``; ``remove_props`` purges
        with the current properties minus those."""
        unknown = set(fields) - UPDATE_FIELDS
        if unknown:
            raise TypeError(f"unknown v1 image fields: {', '.join(sorted(unknown))}")
        image_id = image_id_of(image)
        if remove_props:
            current = self.get(image_id)["properties"]
            merged = {k: v for k, v in current.items() if k not in set(remove_props)}
            merged.update(fields.get("properties") or {})
            fields["properties"] = merged
            purge_props = True
        extra = {"x-glance-registry-purge-props": "true" if purge_props else "false"}
        return self._send("PUT", f"/v1/images/{quote(image_id)}", fields, data, image_size, extra)

    def _send(self, method: str, path: str, fields: dict[str, Any], data: Any,
              image_size: int | None, extra: dict[str, str] | None = None) -> Image:
        headers = meta_to_headers(fields)
        headers.update(extra or {})
        body = None
        source = None
        if data is not None:
            source = data if isinstance(data, DataSource) else DataSource(data, image_size)
            headers.update(self._formats_for_data(path, fields, source))
            headers["Content-Type"] = "application/octet-stream"
            if source.size is not None:
                headers[META + "size"] = str(source.size)
            body = source.body()
        answer = self.http.json_request(method, path, headers=headers, data=body,
                                        upload=source is not None)
        image = self._model(answer["image"])
        if source is not None:
            source.check(image["id"], image.get("checksum"))
        return image

    def _formats_for_data(self, path: str, fields: dict[str, Any],
                          source: DataSource) -> dict[str, str]:
        """v1 refuses data without disk and container formats: detect the
        missing ones from the data, as the v2 client does."""
        if fields.get("disk_format") and fields.get("container_format"):
            return {}
        current: dict[str, Any] = {}
        if path != "/v1/images":
            current = self.get(path.rsplit("/", 1)[1])
        name = fields.get("name") or current.get("name")
        disk, container, how = guess_formats(source.peek(), name)
        headers = {}
        for key, guess in (("disk_format", disk), ("container_format", container)):
            if not fields.get(key) and not current.get(key):
                headers[META + key] = guess
                LOG.info("%s %s from the data's %s", key, guess, how)
        return headers

    def delete(self, image: Any) -> None:
        self.http.request("DELETE", f"/v1/images/{quote(image_id_of(image))}").close()

    def data(self, image: Any, do_checksum: bool = True, offset: int = 0,
             length: int | None = None, byte_range: tuple[int, int] | None = None,
             chunk_size: int = CHUNK_SIZE, buffers: BufferPool | None = None,
             **_ignored: Any) -> Iterator[Chunk]:
        meta = image if isinstance(image, dict) and "status" in image else self.get(image)
        if byte_range is not None:
            offset, length = byte_range[0], byte_range[1] - byte_range[0] + 1
        expected = download.Expected(size=meta.get("size"), checksum=meta.get("checksum"))
        return download.stream(self.http, f"/v1/images/{quote(meta['id'])}", offset=offset,
                               length=length, expected=expected, verify=do_checksum,
                               chunk_size=chunk_size, buffers=buffers)


class ImageMembers:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http

    def list(self, image: Any = None, member: str | None = None) -> list[Resource]:
        if image is not None and member is None:
            body = self.http.json_request("GET", f"/v1/images/{image_id_of(image)}/members")
            return [Resource({"image_id": image_id_of(image), **m})
                    for m in body.get("members", [])]
        if member is not None and image is None:
            body = self.http.json_request("GET", f"/v1/shared-images/{member}")
            return [Resource({"member_id": member, **m}) for m in body.get("shared_images", [])]
        raise exc.ClientException("give exactly one of image or member")

    def create(self, image: Any, member_id: str, can_share: bool = False) -> None:
        self.http.request("PUT", f"/v1/images/{image_id_of(image)}/members/{member_id}",
                          json={"member": {"can_share": can_share}}).close()

    def delete(self, image_id: Any, member_id: str) -> None:
        path = f"/v1/images/{image_id_of(image_id)}/members/{member_id}"
        self.http.request("DELETE", path).close()

    def replace(self, image: Any, members: Iterable[dict[str, Any]]) -> None:
        body = {"memberships": [{"member_id": m["member_id"],
                                 "can_share": m.get("can_share", False)} for m in members]}
        self.http.request("PUT", f"/v1/images/{image_id_of(image)}/members", json=body).close()


class Client:
    """Images v1 client; see glancefs.api.Client."""

    version = "1"

    def __init__(self, http: HTTPClient) -> None:
        self.http = http
        self.images = Images(http)
        self.image_members = ImageMembers(http)
