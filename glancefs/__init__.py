"""glancefs: OpenStack Images (Glance) as a filesystem, and the Images API
client it is built on (``from glancefs import Client``)."""
from __future__ import annotations

from glancefs.api import Client, exc

__version__ = "0.1.0"
__all__ = ["Client", "exc", "__version__"]
