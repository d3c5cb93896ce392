"""The embedded Images API client (v1 and v2). Never imports pyfuse3 or trio."""
from __future__ import annotations

from glancefs.api import exceptions as exc
from glancefs.api.client import Client

__all__ = ["Client", "exc"]
