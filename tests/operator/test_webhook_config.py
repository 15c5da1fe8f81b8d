"""The webhook's certificate (a CA of its own, checked by a real TLS handshake), the
ValidatingWebhookConfiguration it keeps, and the operator's webhook flags."""
import asyncio
import socket
import ssl
import threading

import kopf
import pytest

from kubetune_operator import webhook
from kubetune_operator.main import parse_args


def _handshake(cert, key, ca, server_name, tmp_path):
    """A TLS server with cert/key, and a client trusting only `ca` that checks `server_name`."""
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cadata=ca.decode())
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except ssl.SSLError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                return tls.recv(2)
    finally:
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("names, server_name", [
    (["127.0.0.1", "0.0.0.0"], "127.0.0.1"),
    (webhook.Target.parse(9443, service="kubetune-system/kubetune-operator-webhook").hostnames(),
     "kubetune-operator-webhook.kubetune-system.svc"),
])
def test_certificate_from_its_own_ca_passes_a_strict_tls_client(names, server_name, tmp_path):
    cert, key, ca = webhook.certificates(names)
    assert cert != ca and b"PRIVATE KEY" in key
    assert _handshake(cert, key, ca, server_name, tmp_path) == b"ok"


def test_certificate_is_refused_for_other_names_and_by_other_cas(tmp_path):
    cert, key, ca = webhook.certificates(["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cert, key, ca, "evil.example", tmp_path)
    _, _, other_ca = webhook.certificates(["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cert, key, other_ca, "127.0.0.1", tmp_path)


def test_configuration_covers_create_and_update_of_the_main_resources_only():
    target = webhook.Target.parse(19443, host="127.0.0.1")
    hooks = webhook.webhooks(target, {"finetunejobs": "validate-finetunejob", "evaljobs": "validate-evaljob"},
                             b"CA", "Ignore", 5)
    assert [h["name"] for h in hooks] == ["finetunejobs.kubetune.io", "evaljobs.kubetune.io"]
    ftj = hooks[0]
    assert ftj["rules"] == [{"apiGroups": ["kubetune.io"], "apiVersions": ["v1alpha1"], "resources": ["finetunejobs"],
                             "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}]  # not finetunejobs/status
    assert ftj["clientConfig"] == {"url": "https://127.0.0.1:19443/validate-finetunejob", "caBundle": "Q0E="}
    assert (ftj["failurePolicy"], ftj["timeoutSeconds"], ftj["sideEffects"]) == ("Ignore", 5, "None")


def test_in_cluster_the_api_server_calls_through_the_service():
    target = webhook.Target.parse(9443, service="kubetune-system/kubetune-operator-webhook")
    (hook,) = webhook.webhooks(target, {"evaljobs": "validate-evaljob"}, b"CA", "Fail", 10)
    assert hook["clientConfig"]["service"] == {"namespace": "kubetune-system", "name": "kubetune-operator-webhook",
                                               "port": 443, "path": "/validate-evaljob"}
    assert webhook.Target.parse(9443, service="ns/svc:8443").service_port == 8443


def test_webhook_flags():
    assert parse_args([]).webhook_port == 0  # off unless asked for
    settings = parse_args(["--webhook-port", "19443", "--webhook-host", "127.0.0.1",
                           "--webhook-failure-policy", "Ignore", "--webhook-timeout", "5"])
    assert (settings.webhook_port, settings.webhook_host, settings.webhook_failure_policy,
            settings.webhook_timeout) == (19443, "127.0.0.1", "Ignore", 5)
    for bad in (["--webhook-port", "9443"],  # neither host nor service
                ["--webhook-port", "9443", "--webhook-host", "h", "--webhook-service", "ns/s"],
                ["--webhook-port", "9443", "--webhook-service", "no-namespace"],
                ["--webhook-port", "9443", "--webhook-host", "h", "--webhook-timeout", "31"],
                ["--webhook-failure-policy", "Sometimes"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_the_status_webhook_guards_status_updates_of_both_kinds():
    target = webhook.Target.parse(9443, service="kubetune-system/kubetune-operator-webhook")
    ids = {"finetunejobs": "validate-finetunejob", "evaljobs": "validate-evaljob"}
    *_, status = webhook.webhooks(target, ids, b"CA", "Fail", 10, status_handler_id=webhook.STATUS_HANDLER_ID)
    assert status["name"] == "status.kubetune.io"
    assert status["rules"] == [{"apiGroups": ["kubetune.io"], "apiVersions": ["v1alpha1"],
                                "resources": ["finetunejobs/status", "evaljobs/status"], "operations": ["UPDATE"],
                                "scope": "Namespaced"}]
    assert status["clientConfig"]["service"]["path"] == "/validate-status"
    assert (status["failurePolicy"], status["sideEffects"]) == ("Fail", "None")


def test_webhook_cert_flags():
    settings = parse_args(["--webhook-port", "9443", "--webhook-cert-file", "/certs/tls.crt",
                           "--webhook-key-file", "/certs/tls.key"])  # no host or service: the chart's configuration
    assert (settings.webhook_cert_file, settings.webhook_key_file) == ("/certs/tls.crt", "/certs/tls.key")
    for bad in (["--webhook-port", "9443", "--webhook-cert-file", "/c"],  # a key too
                ["--webhook-port", "9443", "--webhook-key-file", "/k", "--webhook-host", "h"],
                ["--webhook-port", "9443", "--webhook-cert-file", "/c", "--webhook-key-file", "/k",
                 "--webhook-service", "ns/s"]):  # the service is the chart's to name
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_with_a_certificate_the_server_is_kopfs_own_and_touches_no_configuration():
    ids = {"finetunejobs": "validate-finetunejob"}
    mounted = parse_args(["--webhook-port", "9443", "--webhook-cert-file", "/c", "--webhook-key-file", "/k"])
    server = webhook.server(mounted, ids)
    assert type(server) is kopf.WebhookServer
    assert (server.certfile, server.pkeyfile, server.port) == ("/c", "/k", 9443)
    managed = webhook.server(parse_args(["--webhook-port", "19443", "--webhook-host", "127.0.0.1"]), ids)
    assert isinstance(managed, webhook.ManagedWebhookServer)
    assert managed.status_handler_id == "validate-status" and managed.configuration == "kubetune-operator"


def test_self_managed_sets_its_webhooks_and_leaves_them_when_it_stops(monkeypatch):
    """A stopped operator's webhooks stay (with failurePolicy Fail, applies wait for it)."""
    applied = []

    async def serving(self, fn):
        self.build_certificate(["127.0.0.1"])
        yield {"url": "https://127.0.0.1:19443"}

    monkeypatch.setattr(kopf.WebhookServer, "__call__", serving)
    monkeypatch.setattr(webhook, "apply_configuration", lambda name, hooks: applied.append((name, hooks)))
    monkeypatch.setattr(webhook.kubernetes.client, "AdmissionregistrationV1Api",
                        lambda: pytest.fail("the operator touched the configuration beyond setting it"))
    server = webhook.ManagedWebhookServer(
        target=webhook.Target.parse(19443, host="127.0.0.1"), configuration="kubetune-operator",
        handler_ids={"finetunejobs": "validate-finetunejob", "evaljobs": "validate-evaljob"},
        failure_policy="Ignore", timeout_seconds=5, addr="127.0.0.1")

    async def run():
        return [config async for config in server(None)]

    assert asyncio.run(run()) == [{"url": "https://127.0.0.1:19443"}]
    ((name, hooks),) = applied  # set once; nothing cleared when serving ended
    assert name == "kubetune-operator"
    assert [h["name"] for h in hooks] == ["finetunejobs.kubetune.io", "evaljobs.kubetune.io", "status.kubetune.io"]
    assert hooks[2]["clientConfig"]["url"] == "https://127.0.0.1:19443/validate-status"


def test_the_mounted_certificate_serves_reviews_to_a_client_trusting_the_installers_ca(tmp_path):
    """The chart's mode end to end: kopf's server on a certificate and key from files (as the
    Secret is mounted), a strict TLS client trusting only the CA, a review answered."""
    names = webhook.Target.parse(9443, service="kubetune-system/kubetune-operator-webhook").hostnames()
    cert, key, ca = webhook.certificates(names + ["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = parse_args(["--webhook-port", str(port), "--webhook-address", "127.0.0.1",
                           "--webhook-cert-file", str(tmp_path / "tls.crt"),
                           "--webhook-key-file", str(tmp_path / "tls.key")])
    seen = []

    async def fn(request, *, webhook=None, **_):
        seen.append(webhook)
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": request["request"]["uid"], "allowed": True}}

    async def run():
        import aiohttp

        serving = webhook.server(settings, {"finetunejobs": "validate-finetunejob"})(fn)
        await serving.__anext__()
        try:
            client_ssl = ssl.create_default_context(cadata=ca.decode())
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u1"}}
            async with aiohttp.ClientSession() as session:
                async with session.post(f"https://127.0.0.1:{port}/validate-status", json=review,
                                        ssl=client_ssl) as response:
                    return await response.json()
        finally:
            await serving.aclose()

    answer = asyncio.run(run())
    assert answer["response"] == {"uid": "u1", "allowed": True} and seen == ["validate-status"]
