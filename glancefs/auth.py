"""Credentials -> a keystoneauth1 session, the way the ``glance`` command
takes them: ``--os-*`` options, ``OS_*`` variables, ``--os-cloud`` with
clouds.yaml, or ``OS_IMAGE_URL`` + ``OS_AUTH_TOKEN`` to skip Keystone.

Secrets only ever come from the environment, a file or a prompt the caller
handles; nothing here logs them, and errors name the missing option, never
its value.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from glancefs.api.values import is_true

LOG = logging.getLogger(__name__)


class AuthConfigError(Exception):
    """The credentials given are incomplete; the message says which option."""

    summary = "cannot authenticate"   # read by api.exceptions.describe


@dataclass
class AuthOptions:
    auth_url: str | None = None
    username: str | None = None
    user_id: str | None = None
    password: str | None = field(default=None, repr=False)
    project_id: str | None = None
    project_name: str | None = None
    user_domain_id: str | None = None
    user_domain_name: str | None = None
    project_domain_id: str | None = None
    project_domain_name: str | None = None
    application_credential_id: str | None = None
    application_credential_name: str | None = None
    application_credential_secret: str | None = field(default=None, repr=False)
    auth_token: str | None = field(default=None, repr=False)
    image_url: str | None = None
    region_name: str | None = None
    interface: str = "public"
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    cloud: str | None = None
    image_api_version: str | None = None

    # Older names the glance command still accepts.
    _ALIASES = {"tenant_id": "project_id", "tenant_name": "project_name",
                "endpoint_type": "interface", "endpoint": "image_url", "token": "auth_token"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthOptions:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for key, value in env.items():
            if not key.startswith("OS_") or value == "":
                continue
            name = key[3:].lower()
            name = cls._ALIASES.get(name, name)
            if name in names and name not in values:
                values[name] = value
        if "insecure" in values:
            values["insecure"] = is_true(values["insecure"])
        return cls(**values)

    def merged(self, overrides: Mapping[str, Any]) -> AuthOptions:
        """These options with the non-empty ``overrides`` (command line) on top."""
        names = {f.name for f in fields(self)}
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in overrides.items():
            key = self._ALIASES.get(key, key)
            if key in names and value not in (None, ""):
                current[key] = value
        return AuthOptions(**current)

    def with_cloud(self) -> AuthOptions:
        """Fill what is missing from the named clouds.yaml entry."""
        if not self.cloud:
            return self
        cloud = load_cloud(self.cloud)
        auth = dict(cloud.get("auth", {}))
        extra = {k: v for k, v in cloud.items() if k != "auth"}
        if "verify" in extra:
            extra["insecure"] = not extra.pop("verify")
        values = {**auth, **{k: v for k, v in extra.items() if k in {
            "region_name", "interface", "cacert", "insecure", "image_api_version"}}}
        mine = {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) not in (None, "", False, "public")}
        return AuthOptions().merged(values).merged(mine)


def clouds_yaml_paths() -> list[Path]:
    paths = []
    if os.environ.get("OS_CLIENT_CONFIG_FILE"):
        paths.append(Path(os.environ["OS_CLIENT_CONFIG_FILE"]))
    paths += [Path.cwd() / "clouds.yaml", Path.home() / ".config/openstack/clouds.yaml",
              Path("/etc/openstack/clouds.yaml")]
    return paths


def load_cloud(name: str) -> dict[str, Any]:
    import yaml  # only needed for --os-cloud

    for path in clouds_yaml_paths():
        if path.is_file():
            doc = yaml.safe_load(path.read_text()) or {}
            clouds = doc.get("clouds", {})
            if name in clouds:
                cloud = dict(clouds[name])
                secure = path.with_name("secure.yaml")
                if secure.is_file():
                    secure_yaml = yaml.safe_load(secure.read_text()) or {}
                    extra = secure_yaml.get("clouds", {}).get(name, {})
                    cloud.setdefault("auth", {}).update(extra.get("auth", {}))
                return cloud
    raise AuthConfigError(f"cloud {name!r} is not in any clouds.yaml "
                          f"({', '.join(str(p) for p in clouds_yaml_paths())})")


def make_session(options: AuthOptions) -> tuple[ks_session.Session | None, str | None, str | None]:
    """(session, endpoint, token) for glancefs.api.Client.

    A token with an image URL skips Keystone: (None, url, token). Otherwise
    a session with a password or application-credential plugin, which fetches
    a token once, renews it before it expires and finds the endpoint.
    """
    options = options.with_cloud()
    if options.auth_token and options.image_url:
        return None, options.image_url, options.auth_token
    if options.image_url and not options.auth_url and not options.auth_token:
        # A Glance without authentication (a local test server).
        return None, options.image_url, None
    if not options.auth_url:
        raise AuthConfigError(
            "no credentials: set --os-auth-url (OS_AUTH_URL) with a user and password, "
            "--os-cloud (OS_CLOUD), or --os-image-url with --os-auth-token "
            "(OS_IMAGE_URL, OS_AUTH_TOKEN)")
    auth_url = options.auth_url.rstrip("/")
    if not auth_url.endswith("/v3"):
        # Keystone v2.0 is gone; the glance command also falls back to v3.
        auth_url = auth_url.rsplit("/v2.0", 1)[0] + "/v3"
    plugin: Any
    if options.application_credential_id or options.application_credential_name:
        if not options.application_credential_secret:
            raise AuthConfigError("--os-application-credential-secret "
                                  "(OS_APPLICATION_CREDENTIAL_SECRET) is missing")
        plugin = v3.ApplicationCredential(
            auth_url=auth_url,
            application_credential_id=options.application_credential_id,
            application_credential_name=options.application_credential_name,
            application_credential_secret=options.application_credential_secret,
            username=options.username, user_id=options.user_id,
            user_domain_id=options.user_domain_id, user_domain_name=options.user_domain_name)
    elif options.auth_token:
        plugin = v3.Token(auth_url=auth_url, token=options.auth_token,
                          project_id=options.project_id, project_name=options.project_name,
                          project_domain_id=options.project_domain_id,
                          project_domain_name=options.project_domain_name)
    else:
        if not (options.username or options.user_id):
            raise AuthConfigError("--os-username (OS_USERNAME) is missing")
        if not options.password:
            raise AuthConfigError("--os-password (OS_PASSWORD) is missing")
        user_domain_id = options.user_domain_id
        if not user_domain_id and not options.user_domain_name and not options.user_id:
            user_domain_id = "default"
        project_domain_id = options.project_domain_id
        if (options.project_name and not project_domain_id
                and not options.project_domain_name):
            project_domain_id = "default"
        plugin = v3.Password(
            auth_url=auth_url, username=options.username, user_id=options.user_id,
            password=options.password, project_id=options.project_id,
            project_name=options.project_name, user_domain_id=user_domain_id,
            user_domain_name=options.user_domain_name, project_domain_id=project_domain_id,
            project_domain_name=options.project_domain_name)
    verify: bool | str = False if options.insecure else (options.cacert or True)
    cert = (options.cert, options.key) if options.cert and options.key else options.cert
    session = ks_session.Session(auth=plugin, verify=verify, cert=cert, user_agent="glancefs")
    return session, options.image_url, None


def client_from_options(options: AuthOptions, version: str | None = None, **kwargs: Any) -> Any:
    """A glancefs.api client from these options (CLI and mount share this)."""
    from glancefs.api import Client

    session, endpoint, token = make_session(options)
    api_version = version or options.image_api_version or "2"
    return Client(api_version, endpoint=endpoint, token=token, session=session,
                  insecure=options.insecure, cacert=options.cacert, cert=options.cert,
                  key=options.key, interface=options.interface,
                  region_name=options.region_name, **kwargs)
