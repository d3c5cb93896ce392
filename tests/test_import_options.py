"""The import mount options and how upload=auto decides (pure logic: the in-memory service,
which offers no import workflow, and a stand-in that offers one)."""
from __future__ import annotations

import errno
from typing import cast

import pytest

from glancefs.api.service import ImageService
from glancefs.fs.errors import FsError
from glancefs.fs.options import MountOptions, apply_option_string
from glancefs.fs.write.upload import WriteConfig
from glancefs.testing.memory_service import MemoryImageService


class Offers(MemoryImageService):
    """A server offering glance-direct (what /v2/info/import of the test Glance says)."""

    def import_methods(self) -> tuple[str, ...]:
        return ("glance-direct", "web-download", "copy-image")


def test_import_options_parse_as_glance_names_them() -> None:
    opts = MountOptions()
    assert (opts.upload, opts.stores, opts.all_stores, opts.allow_failure) == \
        ("auto", [], False, True)
    # stores=a,b as glance --stores a,b: the words after it that are no option are stores.
    apply_option_string(opts, "ro,stores=fast,slow,ttl=3,upload=IMPORT,allow_failure=off")
    assert (opts.stores, opts.ttl, opts.upload, opts.allow_failure, opts.ro) == \
        (["fast", "slow"], 3.0, "import", False, True)
    opts.check()
    opts = MountOptions()
    apply_option_string(opts, "stores=a:b,store=c")
    assert opts.stores == ["a", "b", "c"]
    opts = MountOptions()
    apply_option_string(opts, "upload=sideways")
    with pytest.raises(ValueError, match="upload must be one of"):
        opts.check()
    opts = MountOptions()
    apply_option_string(opts, "upload=direct,all_stores")
    with pytest.raises(ValueError, match="direct upload goes to one store"):
        opts.check()
    opts = MountOptions()
    apply_option_string(opts, "stores=a,all_stores")
    with pytest.raises(ValueError, match="only one of stores and all_stores"):
        opts.check()


@pytest.mark.parametrize(("upload", "stores", "all_stores", "offered", "method"), [
    ("auto", (), False, True, "direct"),        # nothing asks for an import
    ("auto", ("slow",), False, True, "import"),  # a store: the import honours it
    ("auto", (), True, True, "import"),
    ("auto", ("slow",), False, False, "direct"),  # one store: X-Image-Meta-Store
    ("import", (), False, True, "import"),
    ("direct", ("slow",), False, True, "direct"),
])
def test_how_upload_auto_decides(upload: str, stores: tuple[str, ...], all_stores: bool,
                                 offered: bool, method: str) -> None:
    service = Offers() if offered else MemoryImageService()
    config = WriteConfig(upload=upload, stores=stores, all_stores=all_stores)
    assert config.method(cast(ImageService, service)) == method


@pytest.mark.parametrize(("upload", "stores", "all_stores"), [
    ("import", (), False), ("auto", ("a", "b"), False), ("auto", (), True)])
def test_import_the_server_cannot_do_is_eopnotsupp(upload: str, stores: tuple[str, ...],
                                                   all_stores: bool) -> None:
    config = WriteConfig(upload=upload, stores=stores, all_stores=all_stores)
    with pytest.raises(FsError) as refused:
        config.method(cast(ImageService, MemoryImageService()))
    assert refused.value.errno == errno.EOPNOTSUPP
