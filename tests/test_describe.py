"""The one describer: the command line, the mount helper and the mount's log
say a failure the same way (pure logic, no server)."""
from __future__ import annotations

import errno

from glancefs.api import exceptions as exc
from glancefs.auth import AuthConfigError
from glancefs.cli.main import failure_line
from glancefs.cli.mount import failure_text
from glancefs.fs.errors import describe as fs_describe


def test_an_api_error_reads_the_same_in_the_cli_the_mount_and_the_log() -> None:
    error = exc.from_status(409, "Image status transition from active to active is not "
                            "allowed", request_id="req-1", method="PUT", url="http://g/v2/x")
    line = "HTTP 409: Image status transition from active to active is not allowed " \
           "(request req-1)"
    assert exc.describe(error) == line
    assert fs_describe(error) == line
    assert failure_text(error) == line
    assert failure_line("image-upload", error) == f"glancefs: image-upload: {line}"


def test_a_refused_connection_names_the_server_and_the_cause() -> None:
    error = exc.CommunicationError(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
        "(Caused by NewConnectionError('[Errno 111] Connection refused'))",
        method="GET", url="http://127.0.0.1:9/v2/images")
    assert exc.describe(error) == "cannot reach http://127.0.0.1:9 (Connection refused)"


def test_a_users_mistake_is_said_without_unexpected() -> None:
    error = AuthConfigError("--os-username is missing")
    assert failure_line("image-list", error) == \
        "glancefs: image-list: cannot authenticate: --os-username is missing"
    assert failure_line(None, OSError(errno.ENOENT, "No such file or directory", "x.img")) \
        == "glancefs: No such file or directory: x.img"


def test_a_bug_says_unexpected_and_points_at_debug() -> None:
    line = failure_line("image-list", KeyError("id"))
    assert line == "glancefs: image-list: unexpected KeyError: 'id' (run with --debug for details)"
    assert failure_line("image-list", KeyError("id"), debug=True).endswith("KeyError: 'id'")
