"""``Client(version, endpoint=None, token=None, session=None, ...)``: the
entry point shaped like python-glanceclient's."""
from __future__ import annotations

from typing import Any, Literal, overload

from keystoneauth1 import session as ks_session

from glancefs.api import exceptions as exc
from glancefs.api import v1, v2
from glancefs.api.http import HTTPClient
from glancefs.api.values import major_version


# Type checkers see which client a literal version gives (``Client("2", ...)`` is a
# v2 client); any other spelling of a version (``"v2.16"``) gives either.
@overload
def Client(version: Literal["2", "v2", 2] = "2", endpoint: str | None = None,
           token: str | None = None, session: ks_session.Session | None = None,
           **kwargs: Any) -> v2.Client: ...


@overload
def Client(version: Literal["1", "v1", 1], endpoint: str | None = None,
           token: str | None = None, session: ks_session.Session | None = None,
           **kwargs: Any) -> v1.Client: ...


@overload
def Client(version: str | int | float, endpoint: str | None = None,
           token: str | None = None, session: ks_session.Session | None = None,
           **kwargs: Any) -> v1.Client | v2.Client: ...


def Client(version: str | int | float = "2", endpoint: str | None = None,
           token: str | None = None, session: ks_session.Session | None = None,
           **kwargs: Any) -> v1.Client | v2.Client:
    """An Images API client for version ``'1'`` or ``'2'``.

    Give ``endpoint`` and ``token`` to talk to Glance directly (no Keystone),
    or a keystoneauth1 ``session`` (see glancefs.auth) to have the token
    renewed and the endpoint found in the catalog. Other keyword arguments
    (``insecure``, ``cacert``, ``timeout``, ``retries``, ``interface``,
    ``region_name``) go to :class:`glancefs.api.http.HTTPClient`.
    """
    try:
        major = major_version(version)
    except ValueError as error:
        raise exc.UnsupportedVersion(str(error)) from None
    http = HTTPClient(endpoint, token=token, session=session, **kwargs)
    return v2.Client(http) if major == "2" else v1.Client(http)
