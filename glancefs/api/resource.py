"""Objects returned by the Python API, shaped like python-glanceclient's.

An :class:`Image` is a dict (so ``image['name']`` and ``json.dumps(image)``
work, as with glanceclient's v2 models) that also answers attribute access
(``image.status``, as with its v1 resources) and carries the methods the
founding document uses: ``image.update(...)``, ``image.data()``,
``image.delete()``. ``update`` refreshes the very object it is called on, so
``image.status`` reads ``'active'`` right after ``image.update(data=f)``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from glancefs.api.buffers import Chunk


class ImageManager(Protocol):
    def update(self, image: Any, **kwargs: Any) -> Image: ...
    def delete(self, image: Any) -> None: ...
    def data(self, image: Any, **kwargs: Any) -> Iterator[Chunk]: ...
    def get(self, image: Any) -> Image: ...


class Resource(dict):
    """A server object: dict items with attribute access."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def to_dict(self) -> dict[str, Any]:
        return dict(self)


class Image(Resource):
    """An image bound to the manager that made it."""

    def __init__(self, manager: ImageManager | None, info: dict[str, Any]) -> None:
        super().__init__(info)
        object.__setattr__(self, "_manager", manager)

    def __repr__(self) -> str:
        return f"<Image {self.get('id')} {self.get('name')!r} {self.get('status')}>"

    def _replace(self, fresh: dict[str, Any]) -> Image:
        self.clear()
        self.update_fields(fresh)
        return self

    def update_fields(self, fields: dict[str, Any]) -> None:
        dict.update(self, fields)

    # python-glanceclient's Image.update (the server) replaces dict.update: as
    # glanceclient's objects do, on purpose.
    def update(self, *args: Any, **kwargs: Any) -> Image:  # type: ignore[override]
        """Change the image on the server (name, properties, data ...) and
        refresh this object from the server's answer."""
        if args:
            raise TypeError("Image.update takes keyword arguments only")
        return self._replace(self._manager.update(self, **kwargs))

    def reload(self) -> Image:
        return self._replace(self._manager.get(self["id"]))

    def data(self, **kwargs: Any) -> Iterator[Chunk]:
        return self._manager.data(self, **kwargs)

    def delete(self) -> None:
        self._manager.delete(self)
