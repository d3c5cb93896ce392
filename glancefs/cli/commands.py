"""The image commands of ``glancefs``, for Images API v2 and v1.

Each command is a function registered under the ``glance`` command's name in
:data:`V2` or :data:`V1`, with its argparse arguments; its docstring's first
line is the summary ``glancefs help`` lists, the rest is what
``glancefs help COMMAND`` adds. A command gets a :class:`Context` (the client,
the printer, the standard streams) and the parsed arguments; it returns an
exit status or None for 0, and raises to fail (main turns any error into one
line on stderr and exit status 1).

Everything a command does goes through glancefs.api; the only logic here is
the command line's own: finding an image by name, choosing the data source,
writing a download safely, printing.
"""
from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

from glancefs.api import exceptions as exc
from glancefs.api.values import comma_list, parse_bool
from glancefs.cli.output import Printer, human_size
from glancefs.cli.progress import Progress, ProgressReader

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
MEMBER_STATUSES = ("pending", "accepted", "rejected", "all")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                   r"[0-9a-fA-F]{12}$")


class CommandError(Exception):
    """A refusal of the command line itself (bad combination, missing data...)."""

    summary = ""   # the message is the whole line (api.exceptions.describe)


class UsageError(CommandError):
    """Wrong arguments: exit status 2, like argparse's own errors."""


# -- the world a command sees --------------------------------------------------------------


@dataclass
class Console:
    """The standard streams, replaceable in tests."""

    stdin: BinaryIO
    stdout: TextIO
    stdout_binary: BinaryIO
    stderr: TextIO
    # None: decide from what stdin is (see stdin_has_data).
    stdin_data: bool | None = None

    @classmethod
    def system(cls) -> Console:
        import sys
        # sys.stdin/stdout have a binary buffer, except when a caller replaced
        # them with a text stream of its own (then the stream itself serves).
        return cls(stdin=cast(BinaryIO, getattr(sys.stdin, "buffer", sys.stdin)),
                   stdout=sys.stdout,
                   stdout_binary=cast(BinaryIO, getattr(sys.stdout, "buffer", sys.stdout)),
                   stderr=sys.stderr)

    def stdin_has_data(self) -> bool:
        """True when standard input is a pipe, socket or file: image data.

        Stricter than "not a terminal" (what glance checks): a cron job or CI
        step has /dev/null or nothing as stdin, and must not upload an empty
        image by accident.
        """
        if self.stdin_data is not None:
            return self.stdin_data
        try:
            mode = os.fstat(self.stdin.fileno()).st_mode
        except (OSError, ValueError, AttributeError):
            return False
        return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)

    def stdout_is_tty(self) -> bool:
        isatty = getattr(self.stdout_binary, "isatty", None)
        return bool(isatty and isatty())


@dataclass
class Context:
    console: Console
    printer: Printer
    client_factory: Callable[[], Any]
    version: str
    verbose: bool = False
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def warn(self, text: str) -> None:
        self.console.stderr.write(f"glancefs: {text}\n")
        self.console.stderr.flush()


# -- registry --------------------------------------------------------------------------------


@dataclass
class Command:
    name: str
    func: Callable[[Context, argparse.Namespace], int | None]
    arguments: list[tuple[tuple[str, ...], dict[str, Any]]]
    summary: str
    description: str


V2: dict[str, Command] = {}
V1: dict[str, Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


def command(table: dict[str, Command], name: str,
            *arguments: tuple[tuple[str, ...], dict[str, Any]] | list[Any]) -> Callable:
    flat: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    for item in arguments:
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)

    def register(func: Callable) -> Callable:
        doc = inspect.getdoc(func) or name
        summary = doc.split("\n", 1)[0].strip()
        table[name] = Command(name, func, flat, summary, doc)
        return func
    return register


# -- argument types --------------------------------------------------------------------------


def bool_value(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected True or False, not {text!r}") from None


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {value}")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0")
    return value


# -- finding images -------------------------------------------------------------------------


def looks_like_id(ref: str) -> bool:
    return bool(_UUID.match(ref))


def find_image(ctx: Context, ref: str) -> Any:
    """The image whose id or (unique) name is ``ref``."""
    images = ctx.client.images
    if looks_like_id(ref):
        try:
            return images.get(ref)
        except exc.HTTPNotFound:
            pass  # an image may be *named* like an id
    matches = list(images.list(filters={"name": ref}, limit=2, page_size=2)) if ref else []
    if not matches:
        raise CommandError(f"no image with name or ID {ref!r}")
    if len(matches) > 1:
        every = [m["id"] for m in images.list(filters={"name": ref}, limit=20)]
        raise exc.NoUniqueMatch(
            f"{len(every)}{'+' if len(every) == 20 else ''} images are named {ref!r} "
            f"({', '.join(every[:5])}{', ...' if len(every) > 5 else ''}); use an ID")
    image = matches[0]
    # v2 lists carry every field; v1 detail lists too, but v1's HEAD is authoritative.
    return image if ctx.version == "2" else images.get(image["id"])


def image_id(ctx: Context, ref: str) -> str:
    """An id for ``ref`` without a request when it already is one."""
    if looks_like_id(ref):
        return ref
    return find_image(ctx, ref)["id"]


# -- printing images -------------------------------------------------------------------------


def flat_v1(image: dict[str, Any]) -> dict[str, Any]:
    """v1's nested properties as rows, the way ``glance`` v1 shows them."""
    out = {k: v for k, v in image.items() if k != "properties"}
    for key, value in (image.get("properties") or {}).items():
        out[f"Property '{key}'"] = value
    return out


def show_image(ctx: Context, image: dict[str, Any], human: bool = False) -> None:
    if ctx.printer.fmt == "json":
        ctx.printer.record(dict(image))
        return
    fields = dict(image)
    if ctx.version == "1":
        fields = flat_v1(fields)
    elif "virtual_size" in fields and not fields["virtual_size"]:
        fields["virtual_size"] = "Not available"
    if human and isinstance(fields.get("size"), int):
        fields["size"] = human_size(fields["size"])
    ctx.printer.record(fields)


# -- data in and out ------------------------------------------------------------------------


class DataInput:
    """The data of an upload: --file, or standard input when it carries data."""

    def __init__(self, ctx: Context, args: argparse.Namespace, required: bool,
                 label: str = "upload") -> None:
        self.stream: Any = None
        self.size: int | None = getattr(args, "size", None)
        self.filename: str | None = None
        self.progress: Progress | None = None
        self._own: BinaryIO | None = None
        path = getattr(args, "file", None)
        if path is not None:
            try:
                self._own = open(path, "rb")  # noqa: SIM115 (closed by close())
            except OSError as e:
                raise CommandError(f"cannot read {path}: {e.strerror}") from None
            self.stream = self._own
            self.filename = os.path.basename(path)
            real = self._regular_size(self._own)
            if self.size is not None and real is not None and real != self.size:
                self.close()
                raise UsageError(f"--size {self.size} does not match the size of {path} ({real})")
            self.size = self.size if self.size is not None else real
        elif ctx.console.stdin_has_data():
            self.stream = ctx.console.stdin
            if self.size is None:
                self.size = self._regular_size(self.stream)
        elif required:
            raise UsageError("no image data: give --file FILE or send the data on standard input")
        if self.stream is not None and getattr(args, "progress", False):
            self.progress = Progress(ctx.console.stderr, self.size, label)
            self.stream = ProgressReader(self.stream, self.progress)

    @staticmethod
    def _regular_size(stream: Any) -> int | None:
        try:
            st = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError):
            try:
                pos = stream.tell()
                end = stream.seek(0, io.SEEK_END)
                stream.seek(pos)
                return end - pos
            except (OSError, ValueError, AttributeError):
                return None
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            return st.st_size - stream.tell()
        except (OSError, ValueError):
            return st.st_size

    def __bool__(self) -> bool:
        return self.stream is not None

    def done(self) -> None:
        if self.progress:
            self.progress.finish()

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    def __enter__(self) -> DataInput:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def write_download(ctx: Context, chunks: Iterable[bytes], path: str | None) -> int:
    """Write a download to ``path`` or stdout; returns the bytes written.

    A regular file is written under a temporary name and renamed into place
    only once the hash has been checked, so a failed or corrupt download
    never leaves a file that looks complete.
    """
    written = 0
    if path is None:
        out = ctx.console.stdout_binary
        for chunk in chunks:
            out.write(chunk)
            written += len(chunk)
        out.flush()
        return written
    target = Path(path)
    if target.exists() and not target.is_file():
        # /dev/null, a FIFO, a device: write straight into it.
        with open(target, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
        return written
    tmp = target.with_name(f".{target.name}.glancefs-{os.getpid()}.part")
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


# -- argument groups shared by commands -----------------------------------------------------

IMAGE_ARG = arg("image", metavar="<IMAGE>", help="Name or ID of the image.")
DATA_ARGS = [
    arg("--file", metavar="<FILE>",
        help="Local file with the image data. Without it, data piped or redirected to "
             "standard input is used."),
    arg("--size", metavar="<IMAGE_SIZE>", type=non_negative, default=None,
        help="Size of the data in bytes, when it cannot be found out (data on a pipe)."),
    arg("--progress", action="store_true", default=False,
        help="Show a progress bar on stderr (when stderr is a terminal)."),
]
SHOW_ARGS = [
    arg("--human-readable", action="store_true", default=False,
        help="Print the image size in a human-friendly format."),
    arg("--max-column-width", metavar="<integer>", type=positive, default=80,
        help="The max column width of the printed table."),
]
DOWNLOAD_ARGS = [
    arg("--file", metavar="<FILE>",
        help="Local file to save the image data to (default: standard output, which "
             "must not be a terminal)."),
    arg("--progress", action="store_true", default=False,
        help="Show a progress bar on stderr (when stderr is a terminal)."),
    arg("--streams", metavar="<N>", type=positive, default=8,
        help="Ranged GETs in flight at once (default 8): where one connection is "
             "capped (a far Glance) the parts arrive in parallel, and are written and "
             "verified in order. Images v1 servers ignore Range: always 1 there."),
]
# Image fields both API versions take.
FIELDS_COMMON = [
    arg("--name", metavar="<NAME>", help="Name of the image."),
    arg("--disk-format", metavar="<DISK_FORMAT>", choices=DISK_FORMATS,
        help=f"Format of the disk: {', '.join(DISK_FORMATS)}. Detected from the data "
             "when missing."),
    arg("--container-format", metavar="<CONTAINER_FORMAT>", choices=CONTAINER_FORMATS,
        help=f"Format of the container: {', '.join(CONTAINER_FORMATS)}."),
]
FIELDS_V2 = [
    *FIELDS_COMMON,
    arg("--visibility", metavar="<VISIBILITY>", choices=VISIBILITIES,
        help=f"Scope of image accessibility: {', '.join(VISIBILITIES)}."),
    arg("--protected", metavar="[True|False]", type=bool_value, default=None,
        help="If true, the image cannot be deleted."),
    arg("--min-disk", metavar="<MIN_DISK>", type=non_negative,
        help="Disk space (GB) needed to boot the image."),
    arg("--min-ram", metavar="<MIN_RAM>", type=non_negative,
        help="RAM (MB) needed to boot the image."),
    arg("--tags", metavar="<TAG>", nargs="+", help="List of strings related to the image."),
    arg("--owner", metavar="<OWNER>", help="Owner of the image (project ID)."),
    arg("--hidden", dest="os_hidden", metavar="[True|False]", type=bool_value, default=None,
        help="If true, the image does not appear in the default image list."),
    arg("--architecture", metavar="<ARCHITECTURE>", help="CPU architecture (property)."),
    arg("--os-distro", metavar="<OS_DISTRO>", help="Operating system distribution (property)."),
    arg("--os-version", metavar="<OS_VERSION>", help="Operating system version (property)."),
    arg("--kernel-id", metavar="<KERNEL_ID>", help="ID of an AKI image (property)."),
    arg("--ramdisk-id", metavar="<RAMDISK_ID>", help="ID of an ARI image (property)."),
    arg("--instance-uuid", metavar="<INSTANCE_UUID>",
        help="The instance this image is associated with (property; informational only, "
             "does not create an instance snapshot)."),
    arg("--property", metavar="<KEY=VALUE>", action="append", type=key_value, default=[],
        help="Arbitrary property to set on the image. May be used multiple times."),
]
_V2_FIELD_NAMES = ("name", "disk_format", "container_format", "visibility", "protected",
                   "min_disk", "min_ram", "tags", "owner", "os_hidden", "architecture",
                   "os_distro", "os_version", "kernel_id", "ramdisk_id", "instance_uuid")


def v2_fields(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """(core fields, properties) given on the command line."""
    fields = {k: getattr(args, k) for k in _V2_FIELD_NAMES
              if getattr(args, k, None) is not None}
    if getattr(args, "id", None):
        fields["id"] = args.id
    props = dict(args.property or [])
    clash = sorted(set(props) & set(fields))
    if clash:
        raise UsageError(f"{clash[0]} is given both as an option and as --property")
    return fields, props


# ===========================================================================================
# Images API v2
# ===========================================================================================

LIST_SORT_HELP = ("Sort by this image attribute (name, status, container_format, disk_format, "
                  "size, id, created_at, updated_at). May be used multiple times.")


@command(V2, "image-list",
         arg("--limit", metavar="<LIMIT>", type=positive, default=None,
             help="Maximum number of images to get."),
         arg("--page-size", metavar="<SIZE>", type=positive, default=None,
             help="Number of images to request in each paginated request."),
         arg("--visibility", metavar="<VISIBILITY>", choices=VISIBILITIES + ("all",),
             help="The visibility of the images to display."),
         arg("--member-status", metavar="<MEMBER_STATUS>", choices=MEMBER_STATUSES,
             help="The status of images to display (pending, accepted, rejected, all)."),
         arg("--owner", metavar="<OWNER>", help="Display images owned by <OWNER>."),
         arg("--name", metavar="<NAME>", help="Display images with this name."),
         arg("--status", metavar="<STATUS>", help="Display images in this status."),
         arg("--disk-format", metavar="<DISK_FORMAT>", help="Filter by disk format."),
         arg("--container-format", metavar="<CONTAINER_FORMAT>",
             help="Filter by container format."),
         arg("--size-min", metavar="<SIZE>", type=non_negative, help="Minimum size in bytes."),
         arg("--size-max", metavar="<SIZE>", type=non_negative, help="Maximum size in bytes."),
         arg("--protected", metavar="[True|False]", type=bool_value, default=None,
             help="Filter by the protected flag."),
         arg("--property-filter", metavar="<KEY=VALUE>", action="append", type=key_value,
             default=[], dest="property_filter",
             help="Filter images by a user-defined image property. May be used multiple times."),
         arg("--checksum", metavar="<CHECKSUM>", help="Displays images that match the MD5."),
         arg("--hash", dest="os_hash_value", metavar="<HASH_VALUE>",
             help="Displays images that match the os_hash_value."),
         arg("--tag", metavar="<TAG>", action="append", default=None,
             help="Filter images by a user-defined tag. May be used multiple times."),
         arg("--sort-key", action="append", default=[], metavar="<KEY>", help=LIST_SORT_HELP),
         arg("--sort-dir", action="append", default=[], choices=("asc", "desc"),
             metavar="<DIR>", help="Sort direction (asc or desc), one per --sort-key."),
         arg("--sort", metavar="<KEY>[:<DIRECTION>]",
             help="Comma-separated list of sort keys and directions, "
                  "e.g. name:asc,size:desc. Not combined with --sort-key/--sort-dir."),
         arg("--hidden", dest="os_hidden", metavar="[True|False]", type=bool_value,
             default=None, help="Filter by the hidden flag (hidden images are not listed "
                                "unless asked for)."),
         arg("--include-stores", action="store_true", default=False,
             help="Print the stores each image is in."))
def image_list_v2(ctx: Context, args: argparse.Namespace) -> None:
    """List images you can access.

    Every page is fetched (following the server's next links) unless --limit
    caps the count. Sorted by name unless a sort is given. With -f json the
    whole image records are printed.
    """
    if args.sort and (args.sort_key or args.sort_dir):
        raise UsageError("--sort cannot be combined with --sort-key or --sort-dir")
    if len(args.sort_dir) > max(len(args.sort_key), 1):
        raise UsageError("more --sort-dir than --sort-key given")
    filters: dict[str, Any] = {}
    for key in ("visibility", "member_status", "owner", "name", "status", "disk_format",
                "container_format", "size_min", "size_max", "protected", "checksum",
                "os_hash_value", "os_hidden", "tag"):
        value = getattr(args, key)
        if value is not None:
            filters[key] = value
    for key, value in args.property_filter:
        filters[key] = value
    kwargs: dict[str, Any] = {"filters": filters, "limit": args.limit,
                              "page_size": args.page_size}
    if args.sort:
        kwargs["sort"] = args.sort
    elif args.sort_key or args.sort_dir:
        kwargs["sort_key"] = args.sort_key or ["name"]
        kwargs["sort_dir"] = args.sort_dir or None
    else:
        kwargs["sort_key"], kwargs["sort_dir"] = "name", "asc"
    images = ctx.client.images.list(**kwargs)
    columns = ["id", "name"]
    labels = ["ID", "Name"]
    if ctx.verbose:
        columns += ["disk_format", "container_format", "size", "status", "owner"]
        labels += ["Disk_format", "Container_format", "Size", "Status", "Owner"]
    if args.include_stores:
        columns.append("stores")
        labels.append("Stores")
    ctx.printer.records(list(images), columns, labels)


@command(V2, "image-show", IMAGE_ARG, SHOW_ARGS)
def image_show_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific image."""
    ctx.printer.max_width = args.max_column_width
    show_image(ctx, find_image(ctx, args.image), args.human_readable)


def _upload_v2(ctx: Context, image: Any, data: DataInput, stage: bool = False,
               store: str | None = None) -> None:
    try:
        if stage:
            ctx.client.images.stage(image["id"], data.stream, image_size=data.size)
        else:
            ctx.client.images.upload(image, data.stream, image_size=data.size,
                                     filename=data.filename, backend=store)
    finally:
        data.done()


STORE_ARG = arg("--store", metavar="<STORE>", default=os.environ.get("OS_IMAGE_STORE"),
                help="Backend store to upload image to (default env[OS_IMAGE_STORE]; "
                     "see stores-info).")


def _check_stores(ctx: Context, stores: Iterable[str]) -> None:
    """Refuse a store the cloud does not have before anything is created (as glance does)."""
    wanted = [s for s in stores if s]
    if not wanted:
        return
    try:
        known = [s.get("id") for s in ctx.client.info.get_stores_info().get("stores") or []]
    except exc.HTTPNotFound:
        raise CommandError("this cloud has no multiple stores (stores-info is not "
                           "available): leave out --store/--stores") from None
    for store in wanted:
        if store not in known:
            raise CommandError(f"store {store!r} is not one of this cloud's stores "
                               f"({', '.join(str(k) for k in known)}; see stores-info)")


@command(V2, "image-create",
         arg("--id", metavar="<ID>", help="An identifier for the image (a UUID)."),
         FIELDS_V2, DATA_ARGS, STORE_ARG)
def image_create_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Create a new image, and upload its data if given.

    The data comes from --file or from standard input when it is a pipe or a
    file (``glancefs image-create --name x < disk.qcow2``). Missing disk and
    container formats are detected from the data's signature. When the upload
    fails, the image stays queued: retry with image-upload or remove it with
    image-delete.
    """
    fields, props = v2_fields(args)
    with DataInput(ctx, args, required=False) as data:
        if args.store and not data:
            raise UsageError("--store is only used with data (--file or standard input)")
        _check_stores(ctx, [args.store] if args.store else [])
        image = ctx.client.images.create(**fields, **props)
        if data:
            try:
                _upload_v2(ctx, image, data, store=args.store)
            except (exc.ClientException, OSError) as e:
                raise CommandError(f"image {image['id']} was created but the upload failed "
                                   f"and it stays {image.get('status', 'queued')}: "
                                   f"{exc.describe(e)}") from e
            image = ctx.client.images.get(image["id"])
    show_image(ctx, image)


@command(V2, "image-update", IMAGE_ARG, FIELDS_V2,
         arg("--remove-property", metavar="<KEY>", action="append", default=[],
             help="Name of a property to remove. May be used multiple times."))
def image_update_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Change an image's fields and properties (one PATCH request)."""
    fields, props = v2_fields(args)
    both = sorted(set(props) & set(args.remove_property))
    if both:
        raise UsageError(f"property {both[0]!r} is both set and removed")
    image = find_image(ctx, args.image)
    image = ctx.client.images.update(image["id"], remove_props=args.remove_property,
                                     properties=props, **fields)
    show_image(ctx, image)


@command(V2, "image-upload", IMAGE_ARG, DATA_ARGS, STORE_ARG)
def image_upload_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Upload data for a queued image.

    The data comes from --file or standard input; the image's checksum is
    compared with the data sent. --store picks the store on a multi-store cloud.
    """
    with DataInput(ctx, args, required=True) as data:
        _check_stores(ctx, [args.store] if args.store else [])
        image = find_image(ctx, args.image)
        _upload_v2(ctx, image, data, store=args.store)


def _download(ctx: Context, args: argparse.Namespace, image: Any) -> None:
    if args.file is None and ctx.console.stdout_is_tty():
        raise UsageError("refusing to write image data to a terminal: give --file FILE "
                         "or redirect standard output")
    status = image.get("status")
    if status in ("queued", "saving", "uploading", "importing") or (
            status != "active" and not image.get("size")):
        raise CommandError(f"image {image['id']} has no data to download (status {status})")
    progress = Progress(ctx.console.stderr, image.get("size"), "download",
                        enabled=args.progress)
    # v1 servers send the whole image for any Range: one stream (the mount does the same).
    streams = args.streams if ctx.client.version == "2" else 1
    prefer = comma_list(getattr(args, "prefer", None))
    kwargs: dict[str, Any] = {"prefer": prefer} if prefer else {}
    chunks = ctx.client.images.data(image, do_checksum=True, streams=streams, **kwargs)
    try:
        write_download(ctx, progress.wrap_iter(chunks), args.file)
    except exc.HashMismatch as e:
        where = "" if args.file else "; the data written to stdout is NOT the image"
        raise CommandError(f"download of image {image['id']} is corrupt: {e}{where}") from e
    finally:
        progress.finish()


@command(V2, "image-download", IMAGE_ARG, DOWNLOAD_ARGS,
         arg("--prefer", metavar="<STORES>",
             help="Comma-separated stores to try first, in order, when downloading "
                  "(see stores-info)."),
         arg("--allow-md5-fallback", action="store_true",
             help="Check the MD5 checksum when the image's os_hash_algo is unknown here. "
                  "glancefs always does (with a warning), so this is accepted for "
                  "glance's command lines and changes nothing."))
def image_download_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Download the data of an image.

    The data is checked against the image's os_hash_value (or MD5 checksum);
    a mismatch fails the command. A --file is only put in place once its hash
    is right.
    """
    _download(ctx, args, find_image(ctx, args.image))


def _delete_many(ctx: Context, refs: list[str]) -> int:
    failed = 0
    for ref in refs:
        try:
            ctx.client.images.delete(find_image(ctx, ref)["id"])
        except (exc.ClientException, CommandError) as e:
            failed += 1
            ctx.warn(f"image-delete: {ref}: {exc.describe(e)}")
    if failed:
        raise CommandError(f"{failed} of {len(refs)} images could not be deleted")
    return 0


@command(V2, "image-delete",
         arg("images", metavar="<IMAGE>", nargs="+", help="Name or ID of image(s) to delete."))
def image_delete_v2(ctx: Context, args: argparse.Namespace) -> int:
    """Delete one or more images.

    Every image is tried; each failure is reported on its own line and the
    exit status is 1 if any failed.
    """
    return _delete_many(ctx, args.images)


@command(V2, "image-deactivate", IMAGE_ARG)
def image_deactivate_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Deactivate an image (its data cannot be downloaded until reactivated)."""
    ctx.client.images.deactivate(image_id(ctx, args.image))


@command(V2, "image-reactivate", IMAGE_ARG)
def image_reactivate_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Reactivate a deactivated image."""
    ctx.client.images.reactivate(image_id(ctx, args.image))


@command(V2, "image-tag-update", IMAGE_ARG,
         arg("tag_value", metavar="<TAG_VALUE>", help="Value of the tag."))
def image_tag_update_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Add a tag to an image (and print the image)."""
    ident = image_id(ctx, args.image)
    ctx.client.image_tags.update(ident, args.tag_value)
    show_image(ctx, ctx.client.images.get(ident))


@command(V2, "image-tag-delete", IMAGE_ARG,
         arg("tag_value", metavar="<TAG_VALUE>", help="Value of the tag."))
def image_tag_delete_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Remove a tag from an image."""
    ctx.client.image_tags.delete(image_id(ctx, args.image), args.tag_value)


@command(V2, "image-stage", IMAGE_ARG, DATA_ARGS)
def image_stage_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Upload data to the staging area of a queued image (for image-import)."""
    with DataInput(ctx, args, required=True, label="stage") as data:
        _upload_v2(ctx, find_image(ctx, args.image), data, stage=True)


IMPORT_ARGS = [
    arg("--uri", metavar="<IMAGE_URL>", default=None,
        help="URI to download the image from (web-download method)."),
    arg("--store", metavar="<STORE>", default=os.environ.get("OS_IMAGE_STORE"),
        help="Backend store to import the image to (default env[OS_IMAGE_STORE])."),
    arg("--stores", metavar="<STORES>", default=None,
        help="Comma-separated list of stores to import the image to."),
    arg("--all-stores", metavar="[True|False]", type=bool_value, default=None,
        help="Import the image to every store."),
    arg("--allow-failure", metavar="[True|False]", type=bool_value,
        default=parse_bool(os.environ.get("OS_IMAGE_ALLOW_FAILURE", "True")),
        help="With --stores/--all-stores: succeed if at least one store succeeds "
             "(default True, or env[OS_IMAGE_ALLOW_FAILURE])."),
    arg("--remote-region", metavar="<GLANCE_REGION>", default=None,
        help="Region of the remote Glance to download the image from (glance-download)."),
    arg("--remote-image-id", metavar="<REMOTE_IMAGE_ID>", default=None,
        help="ID of the image in the remote Glance (glance-download)."),
    arg("--remote-service-interface", metavar="<REMOTE_SERVICE_INTERFACE>",
        default="public",
        help="Interface of the remote Glance's endpoint (glance-download; default public)."),
]


def _import_kwargs(ctx: Context, args: argparse.Namespace, method: str | None) -> dict[str, Any]:
    """The image_import keywords, after the checks glance makes on them."""
    if sum(bool(x) for x in (args.store, args.stores, args.all_stores)) > 1:
        raise UsageError("only one of --store, --stores and --all-stores can be given")
    stores = comma_list(args.stores) if args.stores else None
    if method == "glance-download":
        if not (args.remote_region and args.remote_image_id):
            raise UsageError("the glance-download method needs --remote-region and "
                             "--remote-image-id")
    elif args.remote_region or args.remote_image_id:
        raise UsageError("--remote-region and --remote-image-id are only used with "
                         "--import-method glance-download")
    if method == "copy-image" and not (stores or args.all_stores):
        raise UsageError("the copy-image method needs --stores or --all-stores")
    _check_stores(ctx, [args.store] if args.store else stores or [])
    kwargs: dict[str, Any] = {"uri": args.uri, "stores": stores, "all_stores": args.all_stores,
                              "allow_failure": args.allow_failure, "backend": args.store}
    if method == "glance-download":
        kwargs.update(remote_region=args.remote_region, remote_image_id=args.remote_image_id,
                      remote_service_interface=args.remote_service_interface)
    return kwargs


def _check_method(ctx: Context, method: str) -> None:
    info = ctx.client.info.get_import_info()
    methods = (info.get("import-methods") or {}).get("value") or []
    if methods and method not in methods:
        raise CommandError(f"import method {method!r} is not enabled on this cloud "
                           f"(enabled: {', '.join(methods)}; see import-info)")


@command(V2, "image-import", IMAGE_ARG,
         arg("--import-method", metavar="<METHOD>", default="glance-direct",
             help="Import method: glance-direct (data staged with image-stage, the default), "
                  "web-download (with --uri), copy-image ..."),
         IMPORT_ARGS)
def image_import_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Start the import of an image's staged data (or of a URI) and print the image.

    The import runs on the server; image-show tells when the image is active.
    """
    if args.import_method == "web-download" and not args.uri:
        raise UsageError("the web-download method needs --uri")
    if args.uri and args.import_method != "web-download":
        raise UsageError("--uri is only used with --import-method web-download")
    ident = image_id(ctx, args.image)
    _check_method(ctx, args.import_method)
    kwargs = _import_kwargs(ctx, args, args.import_method)
    ctx.client.images.image_import(ident, method=args.import_method, **kwargs)
    show_image(ctx, ctx.client.images.get(ident))


@command(V2, "image-create-via-import",
         arg("--id", metavar="<ID>", help="An identifier for the image (a UUID)."),
         FIELDS_V2, DATA_ARGS,
         arg("--import-method", metavar="<METHOD>",
             default=os.environ.get("OS_IMAGE_IMPORT_METHOD"),
             help="Import method (default env[OS_IMAGE_IMPORT_METHOD]; glance-direct when "
                  "data is given)."),
         IMPORT_ARGS)
def image_create_via_import_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Create an image through the interoperable import workflow.

    With --file or data on standard input the method is glance-direct: the
    data is staged, then imported. With --import-method web-download, the
    server fetches --uri. Without data or method only the record is created.
    """
    fields, props = v2_fields(args)
    with DataInput(ctx, args, required=False, label="stage") as data:
        method = args.import_method or ("glance-direct" if data else None)
        if method == "copy-image":
            raise UsageError("import method copy-image cannot create an image")
        if method == "glance-direct" and not data:
            raise UsageError("glance-direct needs data: give --file FILE or pipe it on stdin")
        if method == "web-download":
            if not args.uri:
                raise UsageError("the web-download method needs --uri")
            if data:
                raise UsageError("the web-download method takes --uri, not data")
        elif args.uri:
            raise UsageError("--uri is only used with --import-method web-download")
        if method == "glance-download" and data:
            raise UsageError("the glance-download method takes no data")
        if method:
            _check_method(ctx, method)
        kwargs = _import_kwargs(ctx, args, method)
        image = ctx.client.images.create(**fields, **props)
        step = "staging"
        try:
            if method == "glance-direct":
                _upload_v2(ctx, image, data, stage=True)
            step = "import"
            if method:
                ctx.client.images.image_import(image["id"], method=method, **kwargs)
        except (exc.ClientException, OSError) as e:
            raise CommandError(f"image {image['id']} was created but its {step} failed: "
                               f"{exc.describe(e)}") from e
        image = ctx.client.images.get(image["id"])
    show_image(ctx, image)


# -- members (v2) --------------------------------------------------------------------------

MEMBER_COLUMNS = (["image_id", "member_id", "status"], ["Image ID", "Member ID", "Status"])


@command(V2, "member-list",
         arg("--image-id", metavar="<IMAGE>", required=True,
             help="Image (name or ID) to display members of."))
def member_list_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Describe sharing permissions by image."""
    members = ctx.client.image_members.list(image_id(ctx, args.image_id))
    ctx.printer.records(list(members), *MEMBER_COLUMNS)


@command(V2, "member-get", IMAGE_ARG,
         arg("member_id", metavar="<MEMBER_ID>", help="Project ID of the member."))
def member_get_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Show the status of one member of an image."""
    member = ctx.client.image_members.get(image_id(ctx, args.image), args.member_id)
    ctx.printer.records([member], *MEMBER_COLUMNS)


@command(V2, "member-create", IMAGE_ARG,
         arg("member_id", metavar="<MEMBER_ID>", help="Project ID to share the image with."))
def member_create_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Share an image with a project (the image must have shared visibility)."""
    member = ctx.client.image_members.create(image_id(ctx, args.image), args.member_id)
    ctx.printer.records([member], *MEMBER_COLUMNS)


@command(V2, "member-update", IMAGE_ARG,
         arg("member_id", metavar="<MEMBER_ID>", help="Project ID of the member."),
         arg("member_status", metavar="<MEMBER_STATUS>",
             choices=("accepted", "rejected", "pending"),
             help="New status: accepted, rejected or pending."))
def member_update_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Accept, reject or reset an image shared with a project (as that project)."""
    member = ctx.client.image_members.update(image_id(ctx, args.image), args.member_id,
                                             args.member_status)
    ctx.printer.records([member], *MEMBER_COLUMNS)


@command(V2, "member-delete", IMAGE_ARG,
         arg("member_id", metavar="<MEMBER_ID>", help="Project ID of the member."))
def member_delete_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Stop sharing an image with a project."""
    ctx.client.image_members.delete(image_id(ctx, args.image), args.member_id)


# -- info (v2) -----------------------------------------------------------------------------


@command(V2, "import-info")
def import_info_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Print the import methods the cloud offers."""
    ctx.printer.record(dict(ctx.client.info.get_import_info()))


@command(V2, "stores-info",
         arg("--detail", action="store_true", default=False,
             help="Show each store's type and properties (admin only)."))
def stores_info_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Print the backend stores the cloud offers."""
    try:
        info = dict(ctx.client.info.get_stores_info_detail() if args.detail
                    else ctx.client.info.get_stores_info())
    except exc.HTTPNotFound:
        raise CommandError("multiple stores are not enabled on this cloud") from None
    if ctx.printer.fmt == "json":
        ctx.printer.record(info)
        return
    if args.detail:
        ctx.printer.records(info.get("stores") or [],
                            ["id", "default", "type", "weight", "properties"],
                            ["ID", "Default", "Type", "Weight", "Properties"])
        return
    ctx.printer.records(info.get("stores") or [], ["id", "default", "description"],
                        ["ID", "Default", "Description"])


@command(V2, "stores-delete", IMAGE_ARG,
         arg("--store", metavar="<STORE_ID>", required=True,
             help="Store to delete the image's data from."))
def stores_delete_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Delete an image's data from one store (the image stays in its other stores)."""
    ident = image_id(ctx, args.image)
    try:
        ctx.client.images.delete_from_store(args.store, ident)
    except exc.HTTPNotFound as e:
        raise CommandError(f"multiple stores are not enabled, or image {ident} is not in "
                           f"store {args.store!r}: {exc.describe(e)}") from e
    except exc.ClientException as e:
        raise CommandError(f"unable to delete image {ident} from store {args.store!r}: "
                           f"{exc.describe(e)}") from e


TASK_COLUMNS = ["message", "status", "updated_at"]
TASK_LABELS = ["Message", "Status", "Updated at"]


@command(V2, "image-tasks", IMAGE_ARG)
def image_tasks_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Show the import tasks of an image (a failed one's message says why).

    With --verbose, the task and image ids, user, request, result, owner,
    input and expiry are shown too.
    """
    ident = image_id(ctx, args.image)
    try:
        tasks = ctx.client.images.get_associated_image_tasks(ident).get("tasks") or []
    except exc.HTTPNotFound:
        raise CommandError(f"image {ident} not found") from None
    columns, labels = list(TASK_COLUMNS), list(TASK_LABELS)
    if ctx.verbose:
        columns = ["image_id", "id", *columns, "user_id", "request_id", "result", "owner",
                   "input", "expires_at"]
        labels = ["Image Id", "Task Id", *labels, "User Id", "Request Id", "Result", "Owner",
                  "Input", "Expires at"]
    ctx.printer.records(tasks, columns, labels)


@command(V2, "task-list",
         arg("--sort-key", default="status", choices=("id", "type", "status"),
             help="Sort the task list by this field (default status)."),
         arg("--sort-dir", default="desc", choices=("asc", "desc"),
             help="Sort direction (default desc)."),
         arg("--page-size", metavar="<SIZE>", type=positive, default=None,
             help="Number of tasks to request in each paginated request."),
         arg("--type", metavar="<TYPE>", help="Only tasks of this type."),
         arg("--status", metavar="<STATUS>", help="Only tasks in this status."))
def task_list_v2(ctx: Context, args: argparse.Namespace) -> None:
    """List the tasks you can access."""
    filters = {k: getattr(args, k) for k in ("type", "status") if getattr(args, k)}
    tasks = ctx.client.tasks.list(filters=filters, page_size=args.page_size,
                                  sort_key=args.sort_key, sort_dir=args.sort_dir)
    ctx.printer.records(list(tasks), ["id", "type", "status", "owner"],
                        ["ID", "Type", "Status", "Owner"])


def _show_task(ctx: Context, task: dict[str, Any]) -> None:
    ctx.printer.record({k: v for k, v in task.items() if k not in ("self", "schema")})


@command(V2, "task-show", arg("id", metavar="<TASK_ID>", help="ID of the task to describe."))
def task_show_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a task."""
    _show_task(ctx, ctx.client.tasks.get(args.id))


@command(V2, "task-create",
         arg("--type", metavar="<TYPE>", required=True,
             help="Type of the task (see the task schema, e.g. import)."),
         arg("--input", metavar="<STRING>", default="{}",
             help="The task's parameters, a JSON object."))
def task_create_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Create a new task."""
    try:
        task_input = json.loads(args.input)
    except ValueError:
        raise UsageError('failed to parse --input: it must be a valid JSON object') from None
    if not isinstance(task_input, dict):
        raise UsageError("--input must be a JSON object")
    _show_task(ctx, ctx.client.tasks.create(type=args.type, input=task_input))


@command(V2, "usage")
def usage_v2(ctx: Context, args: argparse.Namespace) -> None:
    """Print quota usage: each quota's limit and what is used."""
    usage = dict(ctx.client.info.get_usage()).get("usage") or {}
    if ctx.printer.fmt == "json":
        ctx.printer.record(usage)
        return
    rows = [{"quota": name, "limit": v.get("limit"), "usage": v.get("usage")}
            for name, v in sorted(usage.items())]
    ctx.printer.records(rows, ["quota", "limit", "usage"], ["Quota", "Limit", "Usage"])


# ===========================================================================================
# Images API v1
# ===========================================================================================

FIELDS_V1 = [
    *FIELDS_COMMON,
    arg("--owner", metavar="<TENANT_ID>", help="Tenant who should own the image."),
    arg("--min-disk", metavar="<DISK_GB>", type=non_negative,
        help="Minimum disk size (GB) needed to boot the image."),
    arg("--min-ram", metavar="<DISK_RAM>", type=non_negative,
        help="Minimum RAM (MB) needed to boot the image."),
    arg("--location", metavar="<IMAGE_URL>",
        help="URL where the data for this image already resides."),
    arg("--copy-from", metavar="<IMAGE_URL>",
        help="Like --location, but the server copies the data from there."),
    arg("--checksum", metavar="<CHECKSUM>", help="MD5 of the data, checked by the server."),
    arg("--is-public", metavar="{True,False}", type=bool_value, default=None,
        help="Make the image accessible to the public."),
    arg("--is-protected", metavar="{True,False}", type=bool_value, default=None,
        help="Prevent the image from being deleted."),
    arg("--visibility", metavar="<VISIBILITY>", choices=("public", "private"),
        help="v2 spelling of --is-public: public or private."),
    arg("--protected", metavar="[True|False]", type=bool_value, default=None,
        help="v2 spelling of --is-protected."),
    arg("--property", metavar="<key=value>", action="append", type=key_value, default=[],
        help="Arbitrary property to associate with the image. May be used multiple times."),
]


def v1_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in ("name", "disk_format", "container_format", "owner", "min_disk", "min_ram",
                "location", "copy_from", "checksum"):
        value = getattr(args, key, None)
        if value is not None:
            fields[key] = value
    public = args.is_public
    if args.visibility is not None:
        if public is not None and public != (args.visibility == "public"):
            raise UsageError("--visibility and --is-public disagree")
        public = args.visibility == "public"
    if public is not None:
        fields["is_public"] = public
    protected = args.is_protected if args.is_protected is not None else args.protected
    if protected is not None:
        fields["protected"] = protected
    if getattr(args, "id", None):
        fields["id"] = args.id
    if getattr(args, "store", None):
        fields["store"] = args.store
    if args.property:
        fields["properties"] = dict(args.property)
    return fields


@command(V1, "image-list",
         arg("--name", metavar="<NAME>", help="Filter images to those that have this name."),
         arg("--status", metavar="<STATUS>", help="Filter images to those with this status."),
         arg("--changes-since", metavar="<CHANGES_SINCE>",
             help="Images changed since this ISO 8601 time (deleted ones too)."),
         arg("--container-format", metavar="<CONTAINER_FORMAT>",
             help="Filter images to those with this container format."),
         arg("--disk-format", metavar="<DISK_FORMAT>",
             help="Filter images to those with this disk format."),
         arg("--size-min", metavar="<SIZE>", type=non_negative,
             help="Filter images to those with a size of at least this."),
         arg("--size-max", metavar="<SIZE>", type=non_negative,
             help="Filter images to those with a size of at most this."),
         arg("--property-filter", metavar="<KEY=VALUE>", action="append", type=key_value,
             default=[], dest="property_filter",
             help="Filter images by a user-defined image property. May be used multiple times."),
         arg("--limit", metavar="<LIMIT>", type=positive, default=None,
             help="Maximum number of images to get."),
         arg("--page-size", metavar="<SIZE>", type=positive, default=None,
             help="Number of images to request in each paginated request."),
         arg("--human-readable", action="store_true", default=False,
             help="Print image sizes in a human-friendly format."),
         arg("--sort-key", default="name",
             choices=("name", "status", "container_format", "disk_format", "size", "id",
                      "created_at", "updated_at"),
             help="Sort image list by this attribute (default name)."),
         arg("--sort-dir", default="asc", choices=("asc", "desc"),
             help="Sort image list in this direction (default asc)."),
         arg("--is-public", metavar="{True,False}", type=bool_value, default=None,
             help="Allows the user to select a listing of public or non public images."),
         arg("--owner", metavar="<TENANT_ID>", default=None,
             help="Display only images owned by this tenant id."),
         arg("--all-tenants", action="store_true", default=False,
             help="Allows the admin user to list all images irrespective of the owner."))
def image_list_v1(ctx: Context, args: argparse.Namespace) -> None:
    """List images you can access."""
    filters: dict[str, Any] = {}
    for key in ("name", "status", "container_format", "disk_format", "size_min", "size_max",
                "is_public", "owner"):
        value = getattr(args, key)
        if value is not None:
            filters[key] = value
    if args.changes_since:
        filters["changes-since"] = args.changes_since
    if args.property_filter:
        filters["properties"] = dict(args.property_filter)
    images = list(ctx.client.images.list(filters=filters, limit=args.limit,
                                         page_size=args.page_size, sort_key=args.sort_key,
                                         sort_dir=args.sort_dir))
    if args.human_readable and ctx.printer.fmt != "json":
        images = [{**i, "size": human_size(i.get("size"))} for i in images]
    ctx.printer.records(images, ["id", "name", "disk_format", "container_format", "size",
                                 "status"],
                        ["ID", "Name", "Disk Format", "Container Format", "Size", "Status"])


@command(V1, "image-show", IMAGE_ARG, SHOW_ARGS)
def image_show_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific image."""
    image_show_v2(ctx, args)


@command(V1, "image-create",
         arg("--id", metavar="<IMAGE_ID>", help="ID of the image to reserve."),
         arg("--store", metavar="<STORE>", help="Store to upload the image to."),
         FIELDS_V1, DATA_ARGS)
def image_create_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Create a new image, with its data if given (one request in v1).

    The data comes from --file or from standard input when it is a pipe or a
    file. Missing disk and container formats are detected from the data.
    """
    fields = v1_fields(args)
    with DataInput(ctx, args, required=False) as data:
        if data and (args.location or args.copy_from):
            raise UsageError("give either data or --location/--copy-from, not both")
        try:
            image = ctx.client.images.create(data=data.stream if data else None,
                                             image_size=data.size, **fields)
        finally:
            data.done()
    show_image(ctx, image)


@command(V1, "image-update", IMAGE_ARG, FIELDS_V1, DATA_ARGS,
         arg("--remove-property", metavar="<KEY>", action="append", default=[],
             help="Name of a property to remove. May be used multiple times."),
         arg("--purge-props", action="store_true", default=False,
             help="Delete every property not given with --property."))
def image_update_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Change an image's fields and properties, and upload data into a queued image."""
    fields = v1_fields(args)
    with DataInput(ctx, args, required=False) as data:
        ident = image_id(ctx, args.image)
        try:
            image = ctx.client.images.update(
                ident, data=data.stream if data else None, image_size=data.size,
                purge_props=args.purge_props, remove_props=args.remove_property or None,
                **fields)
        finally:
            data.done()
    show_image(ctx, ctx.client.images.get(image["id"]))


@command(V1, "image-upload", IMAGE_ARG, DATA_ARGS)
def image_upload_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Upload data for a queued image."""
    with DataInput(ctx, args, required=True) as data:
        ident = image_id(ctx, args.image)
        try:
            ctx.client.images.update(ident, data=data.stream, image_size=data.size)
        finally:
            data.done()


@command(V1, "image-download", IMAGE_ARG, DOWNLOAD_ARGS)
def image_download_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Download the data of an image, checked against its MD5 checksum."""
    _download(ctx, args, find_image(ctx, args.image))


@command(V1, "image-delete",
         arg("images", metavar="<IMAGE>", nargs="+", help="Name or ID of image(s) to delete."))
def image_delete_v1(ctx: Context, args: argparse.Namespace) -> int:
    """Delete one or more images."""
    return _delete_many(ctx, args.images)


@command(V1, "member-list",
         arg("--image-id", metavar="<IMAGE>", help="Filter results by an image (name or ID)."),
         arg("--tenant-id", metavar="<TENANT_ID>", help="Filter results by a tenant ID."))
def member_list_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Describe sharing permissions by image or tenant."""
    if bool(args.image_id) == bool(args.tenant_id):
        raise UsageError("give exactly one of --image-id and --tenant-id")
    if args.image_id:
        members = ctx.client.image_members.list(image=image_id(ctx, args.image_id))
    else:
        members = ctx.client.image_members.list(member=args.tenant_id)
    ctx.printer.records(members, ["image_id", "member_id", "can_share"],
                        ["Image ID", "Member ID", "Can Share"])


@command(V1, "member-create", IMAGE_ARG,
         arg("tenant_id", metavar="<TENANT_ID>", help="Tenant to add as member."),
         arg("--can-share", action="store_true", default=False,
             help="Allow the specified tenant to share this image."))
def member_create_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Share a specific image with a tenant."""
    ctx.client.image_members.create(image_id(ctx, args.image), args.tenant_id,
                                    can_share=args.can_share)


@command(V1, "member-delete", IMAGE_ARG,
         arg("tenant_id", metavar="<TENANT_ID>", help="Tenant to remove as member."))
def member_delete_v1(ctx: Context, args: argparse.Namespace) -> None:
    """Remove a shared image from a tenant."""
    ctx.client.image_members.delete(image_id(ctx, args.image), args.tenant_id)


# -- helpers ---------------------------------------------------------------------------------


def commands_for(version: str) -> dict[str, Command]:
    return V1 if version == "1" else V2
