"""TagResource, UntagResource, ListTagsForResource on runtime and endpoint ARNs of this installation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from hangar.control.commands import ListTags, TagResource, UntagResource
from hangar.control.context import Context
from hangar.domain.arns import ResourceRef, parse_resource_arn
from hangar.domain.errors import NotFoundError, ValidationError
from hangar.domain.runtime import Status
from hangar.domain.tags import MAX_TAGS
from hangar.store import endpoints as endpoint_rows
from hangar.store import runtimes as runtime_rows
from hangar.store import tags as rows


def _resource(ctx: Context, conn: Connection, arn: str, *, for_update: bool = False) -> ResourceRef:
    """The runtime or endpoint an ARN names; NotFound when it is not one of ours or does not exist."""
    ref = parse_resource_arn(arn)
    if ref is None or ref.account_id != ctx.place.account_id or ref.region != ctx.place.region:
        raise NotFoundError(f"No taggable resource {arn}")
    runtime = runtime_rows.get_runtime(conn, ref.runtime_id, for_update=for_update)
    if runtime is None or runtime.status == Status.DELETING:
        raise NotFoundError(f"No taggable resource {arn}")
    if ref.endpoint_name is not None:
        endpoint = endpoint_rows.get_endpoint(conn, ref.runtime_id, ref.endpoint_name)
        if endpoint is None or endpoint.status == Status.DELETING:
            raise NotFoundError(f"No taggable resource {arn}")
    return ref


def tag_resource(ctx: Context, command: TagResource) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        ref = _resource(ctx, conn, command.resource_arn, for_update=True)
        merged = {**rows.get_tags(conn, ref.runtime_id, ref.endpoint_name), **command.tags}
        if len(merged) > MAX_TAGS:
            raise ValidationError(f"A resource has at most {MAX_TAGS} tags", reason="FieldValidationFailed")
        rows.put_tags(conn, ref.runtime_id, ref.endpoint_name, command.tags)
        return {}

    return ctx.store.write(write)


def untag_resource(ctx: Context, command: UntagResource) -> dict[str, Any]:
    def write(conn: Connection) -> dict[str, Any]:
        ref = _resource(ctx, conn, command.resource_arn, for_update=True)
        rows.remove_tags(conn, ref.runtime_id, ref.endpoint_name, list(command.keys))
        return {}

    return ctx.store.write(write)


def list_tags(ctx: Context, command: ListTags) -> dict[str, Any]:
    def read(conn: Connection) -> dict[str, Any]:
        ref = _resource(ctx, conn, command.resource_arn)
        return {"tags": rows.get_tags(conn, ref.runtime_id, ref.endpoint_name)}

    return ctx.store.read(read)
