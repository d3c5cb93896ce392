"""Image locations, the image cache and ``explain``: the operator's ``glance`` commands.

Registered in :data:`glancefs.cli.commands.V2` when this module is imported (main does).

Where glancefs differs from ``glance`` on purpose (README.rst, "Commands"): a cache command
given several images tries each, reports each failure on its own line and exits 1 if any
failed (glance prints the error and exits 0, which a script cannot tell from success).
"""
from __future__ import annotations

import argparse
import datetime
from typing import Any

from glancefs.api import exceptions as exc
from glancefs.cli.commands import (
    V2,
    CommandError,
    Context,
    arg,
    command,
    show_image,
)
from glancefs.cli.commands_metadefs import json_object

HASH_ALGORITHMS = ("sha512", "sha256", "sha1", "md5")

# -- locations -------------------------------------------------------------------------------

IMAGE_ID_ARG = arg("id", metavar="<IMAGE_ID>", help="ID of the image.")


@command(V2, "location-add",
         arg("id", metavar="<IMAGE_ID>",
             help="ID of image to which the location is to be added."),
         arg("--url", metavar="<URL>", required=True, help="URL of location to add."),
         arg("--metadata", metavar="<STRING>", default="{}",
             help="Metadata associated with the location. Must be a valid JSON object "
                  "(default: {})"),
         arg("--checksum", metavar="<STRING>", help="md5 checksum of image contents"),
         arg("--hash-algo", metavar="<STRING>", help="Multihash algorithm"),
         arg("--hash-value", metavar="<STRING>", help="Multihash value"))
def location_add(ctx: Context, args: argparse.Namespace) -> None:
    """Add a location (and related metadata) to an image.

    Needs a Glance that shows image locations (show_multiple_locations).
    """
    validation: dict[str, Any] = {}
    for key, value in (("checksum", args.checksum), ("os_hash_algo", args.hash_algo),
                       ("os_hash_value", args.hash_value)):
        if value:
            validation[key] = value
    metadata = json_object(args.metadata, "Metadata")
    image = ctx.client.images.add_location(args.id, args.url, metadata,
                                           validation_data=validation)
    show_image(ctx, image)


@command(V2, "location-delete",
         arg("id", metavar="<IMAGE_ID>",
             help="ID of image whose locations are to be removed."),
         arg("--url", metavar="<URL>", action="append", required=True,
             help="URL of location to remove. May be used multiple times."))
def location_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Remove locations (and related metadata) from an image."""
    ctx.client.images.delete_locations(args.id, set(args.url))


@command(V2, "location-update",
         arg("id", metavar="<IMAGE_ID>",
             help="ID of image whose location is to be updated."),
         arg("--url", metavar="<URL>", required=True, help="URL of location to update."),
         arg("--metadata", metavar="<STRING>", default="{}",
             help="Metadata associated with the location. Must be a valid JSON object "
                  "(default: {})"))
def location_update(ctx: Context, args: argparse.Namespace) -> None:
    """Update metadata of an image's location."""
    metadata = json_object(args.metadata, "Metadata")
    if metadata == {}:
        ctx.warn("WARNING -- The location's metadata will be updated to an empty JSON "
                 "object.")
    show_image(ctx, ctx.client.images.update_location(args.id, args.url, metadata))


@command(V2, "add-location",
         arg("id", metavar="<IMAGE_ID>", help="ID of image whose location is to be added."),
         arg("--url", metavar="<URL>", required=True, help="URL of location to add."),
         arg("--validation-data", metavar="<STRING>", default="{}",
             help="Validation data containing os_hash_algo and os_hash_value only "
                  "associated to the image. Must be a valid JSON object (default: {})"))
def add_location(ctx: Context, args: argparse.Namespace) -> None:
    """Add location to an image which is in `queued` state only.

    Images API 2.17 (POST /v2/images/ID/locations): the image gets its data from the URL.
    """
    validation = json_object(args.validation_data, "validation-data")
    unknown = sorted(set(validation) - {"os_hash_algo", "os_hash_value"})
    if unknown:
        raise CommandError(f"Validation Data should contain only os_hash_algo and "
                           f"os_hash_value. `{unknown[0]}` is not allowed")
    if validation and validation.get("os_hash_algo") not in HASH_ALGORITHMS:
        raise CommandError(f"os_hash_algo: `{validation.get('os_hash_algo')}` is incorrect, "
                           f"allowed hashing algorithms: {list(HASH_ALGORITHMS)}")
    show_image(ctx, ctx.client.images.add_image_location(args.id, args.url,
                                                         validation_data=validation))


# -- the image cache -------------------------------------------------------------------------

DIRECT_ENDPOINT = ("Direct server endpoint needs to be provided. Do not use loadbalanced or "
                   "catalog endpoints.")


def _direct(ctx: Context, args: argparse.Namespace) -> Any:
    """The cache of one Glance node: only an endpoint given by the user names one (a catalog
    endpoint is usually a load balancer, and each request may reach another node)."""
    options = getattr(args, "auth_options", None)
    if options is not None and not getattr(options, "image_url", None):
        raise CommandError(DIRECT_ENDPOINT)
    return ctx.client.cache


def _utc(stamp: Any) -> str:
    if not stamp:
        return "N/A"
    return datetime.datetime.fromtimestamp(float(stamp), tz=datetime.timezone.utc).replace(
        tzinfo=None).isoformat()


@command(V2, "cache-list")
def cache_list(ctx: Context, args: argparse.Namespace) -> None:
    """Get cache state.

    One row per image: cached (with its last access, last change, size and hits) or queued
    for caching.
    """
    state = _direct(ctx, args).list()
    if ctx.printer.fmt == "json":
        ctx.printer.record(state)
        return
    rows = [{"id": c.get("image_id"), "state": "cached",
             "last_accessed": _utc(c.get("last_accessed")),
             "last_modified": _utc(c.get("last_modified")), "size": c.get("size"),
             "hits": c.get("hits")} for c in state.get("cached_images") or []]
    rows += [{"id": i, "state": "queued", "last_accessed": "N/A", "last_modified": "N/A",
              "size": "N/A", "hits": "N/A"} for i in state.get("queued_images") or []]
    ctx.printer.records(rows, ["id", "state", "last_accessed", "last_modified", "size", "hits"],
                        ["ID", "State", "Last Accessed (UTC)", "Last Modified (UTC)", "Size",
                         "Hits"])


def _each(ctx: Context, name: str, ids: list[str], action: Any, verb: str) -> None:
    failed = 0
    for image_id in ids:
        try:
            action(image_id)
        except exc.HTTPForbidden:
            failed += 1
            ctx.warn(f"{name}: You are not permitted to {verb} the image '{image_id}'.")
        except exc.ClientException as e:
            failed += 1
            ctx.warn(f"{name}: {image_id}: {exc.describe(e)}")
    if failed:
        raise CommandError(f"{failed} of {len(ids)} images failed")


@command(V2, "cache-queue",
         arg("id", metavar="<IMAGE_ID>", nargs="+", help="ID of image(s) to queue for caching."))
def cache_queue(ctx: Context, args: argparse.Namespace) -> None:
    """Queue image(s) for caching."""
    cache = _direct(ctx, args)
    _each(ctx, "cache-queue", args.id, cache.queue, "queue for caching")


@command(V2, "cache-delete",
         arg("id", metavar="<IMAGE_ID>", nargs="+",
             help="ID of image(s) to delete from cache/queue."))
def cache_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete image from cache/caching queue."""
    cache = _direct(ctx, args)
    _each(ctx, "cache-delete", args.id, cache.delete, "delete from cache")


@command(V2, "cache-clear",
         arg("--target", default="both", choices=("both", "cache", "queue"),
             help="Specify which target you want to clear"))
def cache_clear(ctx: Context, args: argparse.Namespace) -> None:
    """Clear all images from cache, queue or both"""
    _direct(ctx, args).clear(args.target)


@command(V2, "cache-clean")
def cache_clean(ctx: Context, args: argparse.Namespace) -> None:
    """Clean invalid and stalled cached images.

    Needs Images API 2.18 (Glance with an image cache).
    """
    result = _direct(ctx, args).clean()
    if ctx.printer.fmt == "json":
        ctx.printer.record(result)


@command(V2, "cache-prune")
def cache_prune(ctx: Context, args: argparse.Namespace) -> None:
    """Prune cached images to reduce cache size.

    Removes the least recently used images until the cache is below the server's
    image_cache_max_size. Needs Images API 2.18.
    """
    result = _direct(ctx, args).prune()
    if ctx.printer.fmt == "json":
        ctx.printer.record(result)
    elif result:
        ctx.printer.message(f"Pruned {int(result.get('total_files_pruned', 0))} file(s), "
                            f"{int(result.get('total_bytes_pruned', 0))} byte(s).")


@command(V2, "cache-nodes-list", IMAGE_ID_ARG)
def cache_nodes_list(ctx: Context, args: argparse.Namespace) -> None:
    """List node reference URLs where an image is cached."""
    nodes = _direct(ctx, args).list_cached_nodes(args.id)
    ctx.printer.records([{"node_reference_url": url} for url in nodes],
                        ["node_reference_url"], ["Node Reference URL"])


# -- schemas ---------------------------------------------------------------------------------


@command(V2, "explain", arg("model", metavar="<MODEL>", help="Name of model to describe."))
def explain(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific model.

    A model is a schema of the server: image, images, member, members, metadefs/namespace,
    metadefs/property, metadefs/object, metadefs/tag, metadefs/resource_type, task ...
    """
    try:
        schema = ctx.client.schemas.get(args.model)
    except exc.HTTPNotFound:
        raise CommandError(f"Unable to find requested model '{args.model}'") from None
    rows = [{"attribute": name, "description": (info or {}).get("description")}
            for name, info in (schema.get("properties") or {}).items()]
    ctx.printer.records(rows, ["attribute", "description"], ["Attribute", "Description"])
