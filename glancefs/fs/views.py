"""Views: read-only directories of the root that list images the default
listing leaves out, or the same images another way (issue 14).

* ``.shared``: images other projects shared with this one, any member
  status (``user.glance.member_status``; setting it answers the share).
* ``.community``: community images.
* ``.hidden``: images with ``os_hidden=true``.
* ``.by-tag/<tag>``: one folder per tag in use in the root's listing.
* ``.by-owner/<project id>``: one folder per owner of the images this
  project may list (``visibility=all``: every project's, for an admin); each
  lists what it may see of that owner's images (``owner`` and ``visibility=all``).

Why they are shaped this way: a view is a directory over its own
:class:`~glancefs.fs.catalog.ViewListing`, made the first time someone looks
(a mount whose views nobody opens sends no request for them), refreshed by
the root's rules (one class, :class:`~glancefs.fs.catalog.Listing`), and
holding the catalog's records and inodes, so an image is one inode (and one
file, to ``find -samefile`` and ``rsync -H``) wherever it appears. Names
follow glancefs.fs.names as in the root. Nothing is created, removed or
renamed here: images live in the root (EPERM, as in ``.by-id``).
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from glancefs.api.service import ImageRecord
from glancefs.fs import names
from glancefs.fs.catalog import ViewListing
from glancefs.fs.errors import FsError
from glancefs.fs.nodes import Attr, Directory, ImageNode, Node

if TYPE_CHECKING:
    from glancefs.fs.filesystem import GlanceFS

SHARED_NAME = b".shared"
COMMUNITY_NAME = b".community"
HIDDEN_NAME = b".hidden"
BY_TAG_NAME = b".by-tag"
BY_OWNER_NAME = b".by-owner"


class ViewDir(Directory):
    """A directory of the images one listing request returns."""

    def __init__(self, fs: GlanceFS, inode: int, fetch: Callable[[], list[ImageRecord]],
                 what: str, tells_member_status: bool = False) -> None:
        super().__init__(fs, inode)
        self._fetch = fetch
        self._what = what
        self._tells_member_status = tells_member_status
        self._listing: ViewListing | None = None

    @property
    def listing(self) -> ViewListing:
        # Made on first use: until someone looks, the view costs nothing.
        if self._listing is None:
            self._listing = self.fs.catalog.view(self._fetch, self._what,
                                                 self._tells_member_status)
        return self._listing

    async def lookup(self, name: bytes) -> Node:
        listing = self.listing
        await listing.refresh()
        record = listing.lookup(name)
        if record is None:
            raise FsError(errno.ENOENT, f"no image named {name!r} in {self._what}")
        return ImageNode(self.fs, record)

    async def entries(self) -> list[tuple[bytes, Attr]]:
        listing = self.listing
        await listing.refresh()
        return [(shown, ImageNode(self.fs, record).attr())
                for shown, record in listing.entries()]


class ByTagDir(Directory):
    """``.by-tag``: one folder per tag of the images in the root's listing
    (known from that listing: no request of its own); each folder is a view
    listing by that tag."""

    def __init__(self, fs: GlanceFS, inode: int) -> None:
        super().__init__(fs, inode)
        self.folders: dict[str, ViewDir] = {}    # by tag, made when first seen

    def _in_use(self) -> dict[bytes, str]:
        catalog = self.fs.catalog
        records = [catalog.records.get(image_id) for image_id in catalog.listed]
        tags = {tag for record in records if record is not None for tag in record.tags}
        shown = {names.escape(tag): tag for tag in tags}
        return {name: tag for name, tag in shown.items() if len(name) <= names.NAME_MAX}

    def folder(self, tag: str) -> ViewDir:
        found = self.folders.get(tag)
        if found is None:
            fs = self.fs
            found = ViewDir(fs, fs.catalog.new_inode(),
                            lambda: fs.service.list_images({"tag": tag}), f"tag {tag!r}")
            self.folders[tag] = found
            fs.add_dir(found)
        return found

    async def lookup(self, name: bytes) -> Node:
        await self.fs.catalog.refresh()
        tag = self._in_use().get(name)
        if tag is None:
            raise FsError(errno.ENOENT, f"no image has the tag {name!r}")
        return self.folder(tag)

    async def entries(self) -> list[tuple[bytes, Attr]]:
        await self.fs.catalog.refresh()
        return [(name, self.folder(tag).attr()) for name, tag in sorted(self._in_use().items())]


class ByOwnerDir(Directory):
    """``.by-owner``: one folder per owner of the images ``visibility=all``
    lists (a listing of its own, made when someone looks); each folder is a
    view listing by that owner."""

    def __init__(self, fs: GlanceFS, inode: int) -> None:
        super().__init__(fs, inode)
        self.everything = ViewDir(fs, fs.catalog.new_inode(),
                                  lambda: fs.service.list_images({"visibility": "all"}),
                                  "the images of every owner")
        self.folders: dict[str, ViewDir] = {}    # by owner, made when first seen

    async def _owners(self) -> dict[bytes, str]:
        listing = self.everything.listing
        await listing.refresh()
        owners = {record.owner for _, record in listing.entries() if record.owner}
        return {names.escape(owner): owner for owner in owners
                if len(names.escape(owner)) <= names.NAME_MAX}

    def folder(self, owner: str) -> ViewDir:
        found = self.folders.get(owner)
        if found is None:
            fs = self.fs
            found = ViewDir(fs, fs.catalog.new_inode(),
                            lambda: fs.service.list_images({"owner": owner,
                                                            "visibility": "all"}),
                            f"the images of {owner}")
            self.folders[owner] = found
            fs.add_dir(found)
        return found

    async def lookup(self, name: bytes) -> Node:
        owner = (await self._owners()).get(name)
        if owner is None:
            raise FsError(errno.ENOENT, f"no image this project may list is owned by {name!r}")
        return self.folder(owner)

    async def entries(self) -> list[tuple[bytes, Attr]]:
        return [(name, self.folder(owner).attr())
                for name, owner in sorted((await self._owners()).items())]


def make_views(fs: GlanceFS) -> dict[bytes, Directory]:
    """The root's views, by name (none where the API cannot list them: v1)."""
    if not fs.service.serves_views:
        return {}
    service, catalog = fs.service, fs.catalog
    return {
        SHARED_NAME: ViewDir(fs, catalog.new_inode(), service.shared_images,
                             "images shared with this project", tells_member_status=True),
        COMMUNITY_NAME: ViewDir(fs, catalog.new_inode(),
                                lambda: service.list_images({"visibility": "community"}),
                                "community images"),
        HIDDEN_NAME: ViewDir(fs, catalog.new_inode(),
                             lambda: service.list_images({"os_hidden": "true"}),
                             "hidden images"),
        BY_TAG_NAME: ByTagDir(fs, catalog.new_inode()),
        BY_OWNER_NAME: ByOwnerDir(fs, catalog.new_inode()),
    }
