"""Reliability of the embedded client: faults, malformed answers, TLS, secrets.

Every test talks to the real v2 Glance, through the fault-injecting proxy
(glancefs.testing.faultproxy) or a local TLS-terminating proxy, and checks
what the caller gets: the right bytes, or an exception of the documented tree
in bounded time; never wrong bytes, never a hang, never a token in a log.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glancefs import Client
from glancefs.api import exceptions as exc
from glancefs.api import v2
from glancefs.api.buffers import BufferPool
from glancefs.testing.faultproxy import Fault, FaultProxy, http_response
from glancefs.testing.glance_server import GlanceServer
from tests.conftest import fresh_glance

MiB = 1024 * 1024
TOKEN = "SeCrEtToKeN123"


@pytest.fixture(scope="module")
def image(client: v2.Client) -> Iterator[tuple[str, bytes]]:
    data = os.urandom(4 * MiB + 123)
    made = client.images.create(name="rel-client", disk_format="raw",
                                container_format="bare", data=data)
    yield made.id, data
    client.images.delete(made.id)


@pytest.fixture
def proxy(glance_v2: GlanceServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", glance_v2.port) as p:
        yield p


def file_gets(proxy: FaultProxy) -> list[str]:
    return [r for r in proxy.stats.requests if r.startswith("GET") and "/file " in r]


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("cuts", [1, 4])
def test_reset_mid_download_resumes_to_the_right_bytes(proxy, image, cuts: int) -> None:
    image_id, data = image
    proxy.add(Fault(match="/file ", cut_after=700_000, times=cuts))
    got = b"".join(Client("2", endpoint=proxy.endpoint).images.data(image_id))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    gets = file_gets(proxy)
    assert len(gets) == cuts + 1
    # Each resumed GET asked for the rest only, not the whole image again.
    assert proxy.stats.bytes_from_server < len(data) + (cuts + 1) * 700_000 + 64 * 1024


def test_reset_every_time_fails_with_communication_error(proxy, image) -> None:
    image_id, _ = image
    proxy.add(Fault(match="/file ", cut_after=0, times=100))
    start = time.monotonic()
    with pytest.raises(exc.CommunicationError):
        b"".join(Client("2", endpoint=proxy.endpoint, retries=2).images.data(image_id))
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("status,reason", [(503, "Service Unavailable"),
                                           (429, "Too Many Requests")])
@pytest.mark.parametrize("retry_after", [None, "1", "0"])
def test_503_and_429_on_reads_are_retried(proxy, image, status: int, reason: str,
                                          retry_after: str | None) -> None:
    image_id, data = image
    headers = {"Retry-After": retry_after} if retry_after else {}
    proxy.add(Fault(match="/file ", respond=http_response(status, reason, b"busy", headers),
                    times=2))
    start = time.monotonic()
    got = b"".join(Client("2", endpoint=proxy.endpoint).images.data(image_id))
    elapsed = time.monotonic() - start
    assert got == data
    assert len(file_gets(proxy)) == 3
    if retry_after == "1":
        assert elapsed >= 2.0        # the server's word was honoured, twice
    assert elapsed < 10


@pytest.mark.parametrize("status,cls", [(503, exc.HTTPServiceUnavailable),
                                        (429, exc.HTTPTooManyRequests)])
def test_503_and_429_that_persist_raise_after_bounded_retries(
        proxy: FaultProxy, image: tuple[str, bytes], status: int,
        cls: type[exc.ClientException]) -> None:
    image_id, _ = image
    proxy.add(Fault(match="/file ", respond=http_response(
        status, "busy", b"try later", {"Retry-After": "3600"}), times=100))
    start = time.monotonic()
    with pytest.raises(cls) as raised:
        b"".join(Client("2", endpoint=proxy.endpoint, retries=2, max_backoff=0.5)
                 .images.data(image_id))
    # Retry-After is capped by max_backoff: an hour from the server is no hang.
    assert time.monotonic() - start < 10
    assert raised.value.details == "try later"
    assert len(file_gets(proxy)) == 3


def test_stall_longer_than_read_timeout_errors_in_bounded_time(proxy, image) -> None:
    """A server that sends nothing for longer than the read timeout: the read
    fails with CommunicationError after the client's retries, not after
    retries squared (each resumed attempt used to retry on its own)."""
    image_id, _ = image
    proxy.add(Fault(match="/file ", stall=30, times=100))
    glance = Client("2", endpoint=proxy.endpoint, timeout=1.0, retries=2, max_backoff=0.5)
    start = time.monotonic()
    with pytest.raises(exc.CommunicationError):
        b"".join(glance.images.data(image_id))
    elapsed = time.monotonic() - start
    # (retries + 1) timeouts plus backoff; retries squared would be ~9 s.
    assert elapsed < 6, elapsed
    assert len(file_gets(proxy)) <= 3


@pytest.mark.parametrize("kind", ["stall", "hold", "refused"])
def test_the_deadline_covers_the_retries(proxy, kind: str) -> None:
    """With ``deadline``, a request is answered or fails within it, however
    many retries it had left: the retries happen inside it."""
    if kind == "refused":
        endpoint = f"http://127.0.0.1:{free_closed_port()}"
    else:
        endpoint = proxy.endpoint
        proxy.add(Fault(match="GET /v2/images", stall=60, times=100) if kind == "stall"
                  else Fault(hold=True, times=100))
    glance = Client("2", endpoint=endpoint, timeout=30, deadline=2.5, retries=4)
    start = time.monotonic()
    with pytest.raises(exc.CommunicationError) as failed:
        list(glance.images.list())
    elapsed = time.monotonic() - start
    proxy.clear()
    assert elapsed < 2.5 + 1.5, elapsed
    if kind != "refused":
        assert isinstance(failed.value, exc.DeadlineExceeded)
        assert "no answer within 2.5 s" in str(failed.value)
    else:
        assert "refused" in str(failed.value)


def free_closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["stall", "reset"])
def test_a_body_received_into_pooled_buffers_is_resumed_after_a_break(
        proxy, image, fault: str) -> None:
    """The mount's way of receiving (whole chunks into reused buffers) meets a body
    that stops for longer than the read timeout, or is reset, part-way into a
    chunk: the rest is asked for again and the bytes come back whole."""
    image_id, data = image
    proxy.add(Fault(match="/file ", stall=30, stall_after=1_500_000) if fault == "stall"
              else Fault(match="/file ", cut_after=1_500_000))
    glance = Client("2", endpoint=proxy.endpoint, timeout=1.0, retries=2)
    pool = BufferPool(MiB, capacity=4)
    got = b"".join(bytes(chunk) for chunk in glance.images.data(image_id, buffers=pool))
    proxy.clear()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert len(file_gets(proxy)) == 2
    assert pool.made + pool.reused >= 3      # received into the pool's buffers


def test_stall_shorter_than_read_timeout_is_waited_for(proxy, image) -> None:
    image_id, data = image
    proxy.add(Fault(match="/file ", stall=1.5))
    got = b"".join(Client("2", endpoint=proxy.endpoint, timeout=5).images.data(image_id))
    assert got == data


# -- malformed answers ------------------------------------------------------------------


def raw_answer(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_truncated_body_every_time_is_an_error_never_short_bytes(proxy, image) -> None:
    image_id, data = image
    answer = raw_answer("200 OK", {"Content-Length": str(len(data)),
                                   "Content-Type": "application/octet-stream"}, data[:1000])
    proxy.add(Fault(match="/file ", respond=answer, times=100))
    with pytest.raises((exc.CommunicationError, exc.InvalidResponse)):
        b"".join(Client("2", endpoint=proxy.endpoint, retries=1).images.data(image_id))


def test_truncated_body_once_is_resumed(proxy, image) -> None:
    image_id, data = image
    proxy.add(Fault(match="/file ", respond=raw_answer(
        "200 OK", {"Content-Length": str(len(data))}, data[:1000])))
    assert b"".join(Client("2", endpoint=proxy.endpoint).images.data(image_id)) == data


def test_wrong_content_length_with_wrong_bytes_fails_the_hash(proxy, image) -> None:
    """A short Content-Length and garbage: the resumed rest comes from the real
    server, but the hash of the whole read catches the garbage."""
    image_id, _ = image
    proxy.add(Fault(match="/file ", respond=raw_answer(
        "200 OK", {"Content-Length": "100"}, b"\xff" * 100)))
    with pytest.raises(exc.HashMismatch):
        b"".join(Client("2", endpoint=proxy.endpoint).images.data(image_id))


def test_longer_body_than_the_image_is_cut_at_the_image_size(proxy, image) -> None:
    """Bytes past the image's size are never handed out."""
    image_id, data = image
    body = data + b"EXTRA-BYTES"
    proxy.add(Fault(match="/file ", respond=raw_answer(
        "200 OK", {"Content-Length": str(len(body))}, body)))
    assert b"".join(Client("2", endpoint=proxy.endpoint).images.data(image_id)) == data


def test_content_range_not_matching_the_request_is_invalid_response(proxy, image) -> None:
    image_id, data = image
    proxy.add(Fault(match="/file ", respond=raw_answer(
        "206 Partial Content", {"Content-Range": f"bytes 0-99/{len(data)}",
                                "Content-Length": "100"}, data[:100])))
    with pytest.raises(exc.InvalidResponse):
        b"".join(Client("2", endpoint=proxy.endpoint).images.data(
            image_id, offset=5000, length=100))


def test_invalid_json_on_list_is_invalid_response(proxy) -> None:
    proxy.add(Fault(match="GET /v2/images", respond=raw_answer(
        "200 OK", {"Content-Type": "application/json", "Content-Length": "9"}, b"{not json")))
    with pytest.raises(exc.InvalidResponse):
        list(Client("2", endpoint=proxy.endpoint).images.list())


def test_html_page_with_200_on_list_is_invalid_response(proxy) -> None:
    page = b"<html><body><h1>Welcome to the captive portal</h1></body></html>"
    proxy.add(Fault(match="GET /v2/images", respond=raw_answer(
        "200 OK", {"Content-Type": "text/html", "Content-Length": str(len(page))}, page)))
    with pytest.raises(exc.InvalidResponse) as raised:
        list(Client("2", endpoint=proxy.endpoint).images.list())
    assert "text/html" in str(raised.value)


def test_html_error_page_is_an_http_error_with_a_clean_message(proxy, image) -> None:
    image_id, _ = image
    page = (b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway"
            b"</h1>The proxy could not reach the upstream.</body></html>")
    proxy.add(Fault(match="/file ", respond=http_response(
        502, "Bad Gateway", page, {"Content-Type": "text/html"})))
    with pytest.raises(exc.HTTPBadGateway) as raised:
        b"".join(Client("2", endpoint=proxy.endpoint).images.data(image_id))
    assert raised.value.details == "The proxy could not reach the upstream."


def test_list_json_of_the_wrong_shape_is_a_client_error(proxy) -> None:
    body = b'["not", "an", "object"]'
    proxy.add(Fault(match="GET /v2/images", respond=raw_answer(
        "200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)))
    with pytest.raises(exc.ClientException):
        list(Client("2", endpoint=proxy.endpoint).images.list())


# -- connections a gateway closes when idle ---------------------------------------------


IDLE_CLOSE = 1.5   # the gateway's idle timeout here; longer than connections.STALE_AFTER


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    """A Glance that keeps idle connections 75 s (nginx's default), so that the
    gateway in front of it, with its shorter timeout, is what closes them."""
    with fresh_glance(tmp_path_factory, "glance-keepalive", keep_alive=75) as server:
        yield server


@pytest.mark.parametrize("request_of", ["create", "delete"])
def test_a_request_unsafe_to_repeat_after_a_pause_gets_a_new_connection(
        backend: GlanceServer, request_of: str) -> None:
    """A gateway closes a keep-alive connection idle for 1.5 s just as the next request
    arrives on it, a race no client can see coming. A create or a delete after a pause
    is not safe to send twice, so it goes on a new connection: it succeeds, once. (An
    update reads the image first, a GET, which is sent again on a new connection.)"""
    direct = Client("2", endpoint=backend.endpoint)
    with FaultProxy("127.0.0.1", backend.port) as gateway:
        gc = Client("2", endpoint=gateway.endpoint)
        made = gc.images.create(name="rel-idle", disk_format="raw", container_format="bare")
        gateway.add(Fault(respond=b"", idle_for=IDLE_CLOSE, times=10 ** 6))
        list(gc.images.list(limit=1))       # the pooled connection's last use
        connections = gateway.stats.connections
        time.sleep(IDLE_CLOSE + 0.5)        # the condition itself: a connection that idled
        if request_of == "create":
            again = gc.images.create(name="rel-idle-2", disk_format="raw",
                                     container_format="bare")
            assert [i.id for i in direct.images.list(filters={"name": "rel-idle-2"})] == \
                [again.id]
            direct.images.delete(again.id)
        else:
            gc.images.delete(made.id)
            with pytest.raises(exc.HTTPNotFound):
                direct.images.get(made.id)
        assert gateway.stats.connections > connections
    if request_of != "delete":
        direct.images.delete(made.id)


# -- TLS --------------------------------------------------------------------------------


def make_ca_and_cert(where: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "glancefs test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = where / "ca.pem", where / "server.pem", where / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


class TLSProxy:
    """Terminates TLS on 127.0.0.1 and forwards plain HTTP to ``upstream_port``."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(10)
            client = self.context.wrap_socket(raw, server_side=True)
            client.settimeout(None)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def tls(glance_v2: GlanceServer, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[TLSProxy, Path]]:
    ca, cert, key = make_ca_and_cert(tmp_path_factory.mktemp("tls"))
    proxy = TLSProxy(glance_v2.port, cert, key)
    yield proxy, ca
    proxy.stop()


def test_tls_unknown_ca_is_refused_at_once_with_a_clear_communication_error(
        tls, monkeypatch, caplog) -> None:
    """A certificate that fails verification fails the same way again: not retried."""
    proxy, _ = tls
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    with caplog.at_level("WARNING", logger="glancefs"), \
            pytest.raises(exc.CommunicationError) as raised:
        list(Client("2", endpoint=proxy.endpoint).images.list(limit=1))
    assert not [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    text = str(raised.value).lower()
    assert "certificate" in text or "ssl" in text, text


def test_tls_with_cacert_works(tls, image) -> None:
    proxy, ca = tls
    image_id, data = image
    glance = Client("2", endpoint=proxy.endpoint, cacert=str(ca))
    assert glance.images.get(image_id).id == image_id
    assert b"".join(glance.images.data(image_id)) == data


def test_tls_insecure_works(tls, image) -> None:
    proxy, _ = tls
    image_id, _ = image
    assert Client("2", endpoint=proxy.endpoint, insecure=True).images.get(image_id).id == image_id


def test_tls_cacert_of_another_ca_is_refused(tls, tmp_path: Path) -> None:
    proxy, _ = tls
    other_ca, _, _ = make_ca_and_cert(tmp_path)
    with pytest.raises(exc.CommunicationError):
        Client("2", endpoint=proxy.endpoint, cacert=str(other_ca), retries=0).images.get("x")


# -- secrets ----------------------------------------------------------------------------


def test_token_never_in_logs_or_errors(proxy, image, caplog) -> None:
    """The whole client at DEBUG, every logger: requests, retries, resumes,
    errors. The token must appear nowhere."""
    image_id, data = image
    caplog.set_level(logging.DEBUG)
    for name in ("keystoneauth", "keystoneauth.session", "urllib3", "glancefs"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    glance = Client("2", endpoint=proxy.endpoint, token=TOKEN)
    errors: list[str] = []
    proxy.add(Fault(match="/file ", cut_after=500_000))
    proxy.add(Fault(match="GET /v2/images/" + image_id + " ", respond=http_response(
        503, "Service Unavailable", b"busy")))
    assert glance.images.get(image_id).id == image_id
    assert b"".join(glance.images.data(image_id)) == data
    made = glance.images.create(name="rel-token", disk_format="raw", container_format="bare")
    glance.images.upload(made.id, b"x" * 1000)
    glance.images.update(made.id, os_distro="debian")
    list(glance.images.list(page_size=5, limit=12))
    for call in (lambda: glance.images.get("00000000-0000-0000-0000-000000000000"),
                 lambda: glance.images.update(made.id, id="nope")):
        try:
            call()
        except exc.ClientException as error:
            errors.append(str(error))
            errors.append(repr(error))
    proxy.add(Fault(match="DELETE", respond=http_response(500, "Internal Server Error",
                                                          b"<html>oops</html>")))
    try:
        glance.images.delete(made.id)
    except exc.ClientException as error:
        errors.append(str(error))
    glance.images.delete(made.id)
    assert len(errors) >= 3
    text = caplog.text + "\n".join(errors)
    assert "X-Auth-Token" in caplog.text or "x-auth-token" in caplog.text.lower(), \
        "keystoneauth's debug log of headers was expected (masked)"
    assert TOKEN not in text
    assert TOKEN.lower() not in text.lower()
