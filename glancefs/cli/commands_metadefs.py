"""The ``md-*`` commands (Images API v2 metadata definitions), as ``glance`` has them.

Registered in :data:`glancefs.cli.commands.V2` when this module is imported (main does).
Tables are glance's: a Property/Value table for one object (nested lists shown by name, as
glance flattens them), one column per field for lists. With ``-f json`` the whole server
record is printed instead, nested parts included.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from glancefs.cli.commands import (
    V2,
    CommandError,
    Context,
    arg,
    bool_value,
    command,
    positive,
)

NAMESPACE_VISIBILITIES = ("public", "private")
MAX_WIDTH_ARG = arg("--max-column-width", metavar="<integer>", type=positive, default=80,
                    help="The max column width of the printed table.")


def json_object(text: str, what: str = "Schema") -> dict[str, Any]:
    """A JSON object given on the command line, or exit 1 as glance does."""
    try:
        value = json.loads(text)
    except ValueError:
        raise CommandError(f"{what} is not a valid JSON object.") from None
    if not isinstance(value, dict):
        raise CommandError(f"{what} is not a valid JSON object.")
    return value


def _show(ctx: Context, record: dict[str, Any], flatten: tuple[str, ...] = (),
          max_width: int | None = None) -> None:
    """One record; in a table, the nested lists named in ``flatten`` become lists of names."""
    if ctx.printer.fmt == "json":
        ctx.printer.record(record)
        return
    fields = dict(record)
    for key in flatten:
        value = fields.get(key)
        if isinstance(value, dict):
            fields[key] = sorted(value)
        elif isinstance(value, list):
            fields[key] = [v.get("name") if isinstance(v, dict) else v for v in value]
    if max_width:
        ctx.printer.max_width = max_width
    ctx.printer.record(fields)


NAMESPACE_FLAT = ("properties", "resource_type_associations", "objects", "tags")


def show_namespace(ctx: Context, namespace: dict[str, Any], max_width: int | None = None) -> None:
    _show(ctx, namespace, NAMESPACE_FLAT, max_width)


NAMESPACE_FIELDS = [
    arg("--owner", metavar="<OWNER>", help="Owner of the namespace."),
    arg("--protected", metavar="[True|False]", type=bool_value, default=None,
        help="If true, namespace will not be deletable."),
    arg("--visibility", metavar="<VISIBILITY>", choices=NAMESPACE_VISIBILITIES,
        help="Scope of namespace accessibility. Valid values: public, private"),
    arg("--description", metavar="<DESCRIPTION>",
        help="Provides a user friendly description of the namespace."),
    arg("--display-name", metavar="<DISPLAY_NAME>",
        help="The user friendly name for the namespace. Used by UI if available."),
]


def _namespace_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("owner", "protected", "visibility", "description",
                                          "display_name", "new_namespace")
            if getattr(args, k, None) is not None}


# -- namespaces ------------------------------------------------------------------------------


@command(V2, "md-namespace-create",
         arg("namespace", metavar="<NAMESPACE>", help="Name of the namespace."),
         arg("--resource-type-associations", metavar="<RESOURCE_TYPE_ASSOCIATIONS>",
             nargs="+", default=None,
             help="Names of resource types to associate the namespace with."),
         NAMESPACE_FIELDS)
def md_namespace_create(ctx: Context, args: argparse.Namespace) -> None:
    """Create a new metadata definitions namespace."""
    fields = _namespace_fields(args)
    if args.resource_type_associations:
        fields["resource_type_associations"] = [
            {"name": name} for name in args.resource_type_associations]
    show_namespace(ctx, ctx.client.metadefs_namespace.create(namespace=args.namespace,
                                                              **fields))


@command(V2, "md-namespace-import",
         arg("--file", metavar="<FILEPATH>",
             help="Path to file with namespace schema to import. Alternatively, namespaces "
                  "schema can be passed to the client via stdin."))
def md_namespace_import(ctx: Context, args: argparse.Namespace) -> None:
    """Import a metadata definitions namespace from file or standard input."""
    if args.file:
        try:
            with open(args.file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise CommandError(f"cannot read {args.file}: {e.strerror}") from None
    elif ctx.console.stdin_has_data():
        raw = ctx.console.stdin.read()
    else:
        raise CommandError("No metadata definition namespace passed via stdin or --file "
                         "argument.")
    try:
        document = json.loads(raw)
    except ValueError:
        raise CommandError("Schema is not a valid JSON object.") from None
    if not isinstance(document, dict):
        raise CommandError("Schema is not a valid JSON object.")
    show_namespace(ctx, ctx.client.metadefs_namespace.create(**document))


@command(V2, "md-namespace-update",
         arg("id", metavar="<NAMESPACE>", help="Name of namespace to update."),
         NAMESPACE_FIELDS,
         arg("--namespace", dest="new_namespace", metavar="<NAMESPACE>",
             help="The unique namespace text (a new name)."))
def md_namespace_update(ctx: Context, args: argparse.Namespace) -> None:
    """Update an existing metadata definitions namespace."""
    fields = _namespace_fields(args)
    if "new_namespace" in fields:
        fields["namespace"] = fields.pop("new_namespace")
    show_namespace(ctx, ctx.client.metadefs_namespace.update(args.id, **fields))


@command(V2, "md-namespace-show",
         arg("namespace", metavar="<NAMESPACE>", help="Name of namespace to describe."),
         arg("--resource-type", metavar="<RESOURCE_TYPE>", default=None,
             help="Applies prefix of given resource type associated to a namespace to all "
                  "properties of a namespace."),
         MAX_WIDTH_ARG)
def md_namespace_show(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific metadata definitions namespace.

    Lists also the namespace properties, objects and resource type associations.
    """
    namespace = ctx.client.metadefs_namespace.get(args.namespace,
                                                  resource_type=args.resource_type)
    show_namespace(ctx, namespace, args.max_column_width)


@command(V2, "md-namespace-list",
         arg("--resource-types", metavar="<RESOURCE_TYPES>", action="append", default=None,
             help="Resource type to filter namespaces."),
         arg("--visibility", metavar="<VISIBILITY>",
             help="Visibility parameter to filter namespaces."),
         arg("--page-size", metavar="<SIZE>", type=positive, default=None,
             help="Number of namespaces to request in each paginated request."))
def md_namespace_list(ctx: Context, args: argparse.Namespace) -> None:
    """List metadata definitions namespaces."""
    filters = {k: getattr(args, k) for k in ("resource_types", "visibility")
               if getattr(args, k) is not None}
    namespaces = ctx.client.metadefs_namespace.list(filters=filters, page_size=args.page_size)
    ctx.printer.records(list(namespaces), ["namespace"], ["namespace"])


@command(V2, "md-namespace-delete",
         arg("namespace", metavar="<NAMESPACE>", help="Name of namespace to delete."))
def md_namespace_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete specified metadata definitions namespace with its contents."""
    ctx.client.metadefs_namespace.delete(args.namespace)


NAMESPACE_ARG = arg("namespace", metavar="<NAMESPACE>", help="Name of namespace.")


@command(V2, "md-namespace-properties-delete", NAMESPACE_ARG)
def md_namespace_properties_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete all metadata definitions property inside a specific namespace."""
    ctx.client.metadefs_property.delete_all(args.namespace)


@command(V2, "md-namespace-objects-delete", NAMESPACE_ARG)
def md_namespace_objects_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete all metadata definitions objects inside a specific namespace."""
    ctx.client.metadefs_object.delete_all(args.namespace)


@command(V2, "md-namespace-tags-delete", NAMESPACE_ARG)
def md_namespace_tags_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete all metadata definitions tags inside a specific namespace."""
    ctx.client.metadefs_tag.delete_all(args.namespace)


# -- resource types --------------------------------------------------------------------------


@command(V2, "md-resource-type-associate", NAMESPACE_ARG,
         arg("--properties-target", metavar="<PROPERTIES_TARGET>",
             help="Some resource types allow more than one key / value pair per instance "
                  "(Cinder: user and image metadata on volumes); this names the one the "
                  "namespace's properties apply to."),
         arg("--prefix", metavar="<PREFIX>",
             help="Prefix of the namespace's properties for this resource type, separator "
                  "included (e.g. a colon :)."),
         arg("--name", metavar="<NAME>", help="Name of the resource type (e.g. "
                                              "OS::Glance::Image)."))
def md_resource_type_associate(ctx: Context, args: argparse.Namespace) -> None:
    """Associate resource type with a metadata definitions namespace."""
    fields = {k: getattr(args, k) for k in ("name", "prefix", "properties_target")
              if getattr(args, k) is not None}
    _show(ctx, ctx.client.metadefs_resource_type.associate(args.namespace, **fields))


@command(V2, "md-resource-type-deassociate", NAMESPACE_ARG,
         arg("resource_type", metavar="<RESOURCE_TYPE>", help="Name of resource type."))
def md_resource_type_deassociate(ctx: Context, args: argparse.Namespace) -> None:
    """Deassociate resource type with a metadata definitions namespace."""
    ctx.client.metadefs_resource_type.deassociate(args.namespace, args.resource_type)


@command(V2, "md-resource-type-list")
def md_resource_type_list(ctx: Context, args: argparse.Namespace) -> None:
    """List available resource type names."""
    ctx.printer.records(list(ctx.client.metadefs_resource_type.list()), ["name"], ["name"])


@command(V2, "md-namespace-resource-type-list", NAMESPACE_ARG)
def md_namespace_resource_type_list(ctx: Context, args: argparse.Namespace) -> None:
    """List resource types associated to specific namespace."""
    columns = ["name", "prefix", "properties_target"]
    ctx.printer.records(list(ctx.client.metadefs_resource_type.get(args.namespace)),
                        columns, columns)


# -- properties ------------------------------------------------------------------------------


@command(V2, "md-property-create",
         arg("namespace", metavar="<NAMESPACE>",
             help="Name of namespace the property will belong."),
         arg("--name", metavar="<NAME>", required=True, help="Internal name of a property."),
         arg("--title", metavar="<TITLE>", required=True,
             help="Property name displayed to the user."),
         arg("--schema", metavar="<SCHEMA>", required=True,
             help="Valid JSON schema of a property."),
         arg("--type", metavar="<TYPE>", required=True, help="Type of the property"))
def md_property_create(ctx: Context, args: argparse.Namespace) -> None:
    """Create a new metadata definitions property inside a namespace."""
    fields: dict[str, Any] = {"name": args.name, "title": args.title, "type": args.type}
    fields.update(json_object(args.schema))
    _show(ctx, ctx.client.metadefs_property.create(args.namespace, **fields))


PROPERTY_ARGS = [
    arg("namespace", metavar="<NAMESPACE>", help="Name of namespace the property belongs."),
    arg("property", metavar="<PROPERTY>", help="Name of a property."),
]


@command(V2, "md-property-update", PROPERTY_ARGS,
         arg("--name", metavar="<NAME>", default=None, help="New name of a property."),
         arg("--title", metavar="<TITLE>", default=None,
             help="Property name displayed to the user."),
         arg("--schema", metavar="<SCHEMA>", default=None,
             help="Valid JSON schema of a property."))
def md_property_update(ctx: Context, args: argparse.Namespace) -> None:
    """Update metadata definitions property inside a namespace."""
    fields: dict[str, Any] = {k: getattr(args, k) for k in ("name", "title")
                              if getattr(args, k)}
    if args.schema:
        fields.update(json_object(args.schema))
    _show(ctx, ctx.client.metadefs_property.update(args.namespace, args.property, **fields))


@command(V2, "md-property-show", PROPERTY_ARGS, MAX_WIDTH_ARG)
def md_property_show(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific metadata definitions property inside a namespace."""
    _show(ctx, ctx.client.metadefs_property.get(args.namespace, args.property),
          max_width=args.max_column_width)


@command(V2, "md-property-delete", PROPERTY_ARGS)
def md_property_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete a specific metadata definitions property inside a namespace."""
    ctx.client.metadefs_property.delete(args.namespace, args.property)


@command(V2, "md-property-list", NAMESPACE_ARG)
def md_property_list(ctx: Context, args: argparse.Namespace) -> None:
    """List metadata definitions properties inside a specific namespace."""
    columns = ["name", "title", "type"]
    ctx.printer.records(list(ctx.client.metadefs_property.list(args.namespace)),
                        columns, columns)


# -- objects ---------------------------------------------------------------------------------

OBJECT_ARGS = [
    arg("namespace", metavar="<NAMESPACE>", help="Name of namespace the object belongs."),
    arg("object", metavar="<OBJECT>", help="Name of an object."),
]


def show_object(ctx: Context, obj: dict[str, Any], max_width: int | None = None) -> None:
    _show(ctx, obj, ("properties",), max_width)


@command(V2, "md-object-create",
         arg("namespace", metavar="<NAMESPACE>",
             help="Name of namespace the object will belong."),
         arg("--name", metavar="<NAME>", required=True, help="Internal name of an object."),
         arg("--schema", metavar="<SCHEMA>", required=True,
             help="Valid JSON schema of an object."))
def md_object_create(ctx: Context, args: argparse.Namespace) -> None:
    """Create a new metadata definitions object inside a namespace."""
    fields: dict[str, Any] = {"name": args.name}
    fields.update(json_object(args.schema))
    show_object(ctx, ctx.client.metadefs_object.create(args.namespace, **fields))


@command(V2, "md-object-update", OBJECT_ARGS,
         arg("--name", metavar="<NAME>", default=None, help="New name of an object."),
         arg("--schema", metavar="<SCHEMA>", default=None,
             help="Valid JSON schema of an object."))
def md_object_update(ctx: Context, args: argparse.Namespace) -> None:
    """Update metadata definitions object inside a namespace."""
    fields: dict[str, Any] = {"name": args.name} if args.name else {}
    if args.schema:
        fields.update(json_object(args.schema))
    show_object(ctx, ctx.client.metadefs_object.update(args.namespace, args.object, **fields))


@command(V2, "md-object-show", OBJECT_ARGS, MAX_WIDTH_ARG)
def md_object_show(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific metadata definitions object inside a namespace."""
    show_object(ctx, ctx.client.metadefs_object.get(args.namespace, args.object),
                args.max_column_width)


@command(V2, "md-object-property-show", OBJECT_ARGS,
         arg("property", metavar="<PROPERTY>", help="Name of a property."), MAX_WIDTH_ARG)
def md_object_property_show(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific metadata definitions property inside an object."""
    obj = ctx.client.metadefs_object.get(args.namespace, args.object)
    prop = (obj.get("properties") or {}).get(args.property)
    if prop is None:
        raise CommandError(f"Property {args.property} not found in object {args.object}.")
    _show(ctx, {**prop, "name": args.property}, max_width=args.max_column_width)


@command(V2, "md-object-delete", OBJECT_ARGS)
def md_object_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete a specific metadata definitions object inside a namespace."""
    ctx.client.metadefs_object.delete(args.namespace, args.object)


@command(V2, "md-object-list", NAMESPACE_ARG)
def md_object_list(ctx: Context, args: argparse.Namespace) -> None:
    """List metadata definitions objects inside a specific namespace."""
    ctx.printer.records(list(ctx.client.metadefs_object.list(args.namespace)),
                        ["name", "description"], ["name", "description"])


# -- tags ------------------------------------------------------------------------------------

TAG_ARGS = [
    arg("namespace", metavar="<NAMESPACE>",
        help="Name of the namespace to which the tag belongs."),
    arg("tag", metavar="<TAG>", help="Name of the tag."),
]


@command(V2, "md-tag-create",
         arg("namespace", metavar="<NAMESPACE>",
             help="Name of the namespace the tag will belong to."),
         arg("--name", metavar="<NAME>", required=True, help="The name of the new tag to add."))
def md_tag_create(ctx: Context, args: argparse.Namespace) -> None:
    """Add a new metadata definitions tag inside a namespace."""
    name = args.name.strip()
    if not name:
        raise CommandError("Please supply at least one non-blank tag name.")
    _show(ctx, ctx.client.metadefs_tag.create(args.namespace, name))


@command(V2, "md-tag-create-multiple",
         arg("namespace", metavar="<NAMESPACE>",
             help="Name of the namespace the tags will belong to."),
         arg("--names", metavar="<NAMES>", required=True,
             help="A comma separated list of tag names."),
         arg("--delim", metavar="<DELIM>", default=None,
             help="The delimiter used to separate the names (if none is provided then the "
                  "default is a comma)."),
         arg("--append", action="store_true", default=False,
             help="Append the new tags to the existing ones instead of overwriting them."))
def md_tag_create_multiple(ctx: Context, args: argparse.Namespace) -> None:
    """Create new metadata definitions tags inside a namespace.

    Without --append, the namespace's tags are replaced by these.
    """
    tags = [n.strip() for n in args.names.split(args.delim or ",") if n.strip()]
    if not tags:
        raise CommandError("Please supply at least one tag name. For example: --names Tag1")
    created = ctx.client.metadefs_tag.create_multiple(args.namespace, tags=tags,
                                                      append=args.append)
    ctx.printer.records(list(created), ["name"], ["name"])


@command(V2, "md-tag-update", TAG_ARGS,
         arg("--name", metavar="<NAME>", required=True, help="New name of the new tag."))
def md_tag_update(ctx: Context, args: argparse.Namespace) -> None:
    """Rename a metadata definitions tag inside a namespace."""
    name = args.name.strip()
    if not name:
        raise CommandError("Please supply at least one non-blank tag name.")
    _show(ctx, ctx.client.metadefs_tag.update(args.namespace, args.tag, name=name))


@command(V2, "md-tag-show", TAG_ARGS)
def md_tag_show(ctx: Context, args: argparse.Namespace) -> None:
    """Describe a specific metadata definitions tag inside a namespace."""
    _show(ctx, ctx.client.metadefs_tag.get(args.namespace, args.tag))


@command(V2, "md-tag-delete", TAG_ARGS)
def md_tag_delete(ctx: Context, args: argparse.Namespace) -> None:
    """Delete a specific metadata definitions tag inside a namespace."""
    ctx.client.metadefs_tag.delete(args.namespace, args.tag)


@command(V2, "md-tag-list", NAMESPACE_ARG)
def md_tag_list(ctx: Context, args: argparse.Namespace) -> None:
    """List metadata definitions tags inside a specific namespace."""
    ctx.printer.records(list(ctx.client.metadefs_tag.list(args.namespace)), ["name"], ["name"])
