"""The webhook's certificate (a CA of its own, checked by a real TLS handshake), the
ValidatingWebhookConfiguration it keeps, and the operator's webhook flags."""
import socket
import ssl
import threading

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
