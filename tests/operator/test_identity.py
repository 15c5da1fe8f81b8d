"""identity.py: the operator's own username (the status webhook's only permitted writer), from
the flag, or from the credentials it loaded: a ServiceAccount token or a client certificate,
made here and loaded through the kubernetes client's own kubeconfig and in-cluster loaders."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import kubernetes
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubetune_operator import identity
from kubetune_operator.main import parse_args, resolve_identity
from kubetune_operator.settings import OperatorSettings

SA = "system:serviceaccount:kubetune-system:kubetune-operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(claims: dict) -> str:
    """A token shaped like the API server's (the signature is never checked here)."""
    header = {"alg": "RS256", "kid": "k"}
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(b"signature")])


def client_certificate(common_name: str | None, organization: str = "system:masters") -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if common_name is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(x509.Name(attrs))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


SA_TOKEN = jwt({"iss": "https://kubernetes.default.svc", "sub": SA, "aud": ["https://kubernetes.default.svc"],
                "kubernetes.io": {"namespace": "kubetune-system", "serviceaccount": {"name": "kubetune-operator"}}})


def test_a_serviceaccount_token_names_its_serviceaccount():
    assert identity.username_from_token(SA_TOKEN) == SA
    assert identity.username_from_token(f"Bearer {SA_TOKEN}") == SA
    assert identity.username_from_token(f"bearer {SA_TOKEN}\n") == SA  # the in-cluster loader's form


@pytest.mark.parametrize("token", [
    "0123456789abcdef",  # a static token (--token-auth-file)
    jwt({"sub": "1234-5678", "iss": "https://accounts.example"}),  # OIDC: the username is the API server's mapping
    jwt({"iss": "x"}),  # no sub
    "a.!!!.c", "a.b.c", "",
], ids=["static", "oidc", "no-sub", "bad-base64", "not-json", "empty"])
def test_other_tokens_say_nothing(token):
    assert identity.username_from_token(token) == ""


def test_a_client_certificate_names_its_common_name():
    cert, _ = client_certificate("kubetune-operator")
    assert identity.username_from_certificate(cert) == "kubetune-operator"
    assert identity.username_from_certificate(client_certificate(None)[0]) == ""
    assert identity.username_from_certificate(b"not a certificate") == ""


def _kubeconfig(tmp_path, user: dict) -> str:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
              "users": [{"name": "u", "user": user}],
              "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def loaded(kubeconfig: str) -> kubernetes.client.Configuration:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def test_from_a_kubeconfig_with_a_serviceaccount_token(tmp_path):
    configuration = loaded(_kubeconfig(tmp_path, {"token": SA_TOKEN}))
    assert identity.username_from_configuration(configuration) == SA


def test_from_a_kubeconfig_with_a_client_certificate(tmp_path):
    cert, key = client_certificate("kubetune-operator-dev")
    user = {"client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode()}
    assert identity.username_from_configuration(loaded(_kubeconfig(tmp_path, user))) == "kubetune-operator-dev"


def test_from_a_kubeconfig_with_a_static_token_nothing(tmp_path):
    assert identity.username_from_configuration(loaded(_kubeconfig(tmp_path, {"token": "abc123"}))) == ""


def test_from_in_cluster_credentials(tmp_path):
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text(SA_TOKEN)
    ca.write_bytes(client_certificate("ca")[0])
    configuration = kubernetes.client.Configuration()
    kubernetes.config.incluster_config.InClusterConfigLoader(
        token_filename=str(token), cert_filename=str(ca),
        environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
    ).load_and_set(configuration)
    assert identity.username_from_configuration(configuration) == SA


def test_the_flag_wins_and_is_not_derived(monkeypatch):
    monkeypatch.setattr(identity, "_loaded_configuration", lambda: pytest.fail("credentials read"))
    settings = parse_args(["--operator-username", "system:serviceaccount:ops:kt"])
    assert identity.operator_username(settings) == "system:serviceaccount:ops:kt"
    monkeypatch.setenv("KUBETUNE_OPERATOR_USERNAME", "from-env")
    assert parse_args([]).operator_username == "from-env"


def test_startup_fills_the_username_from_the_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBETUNE_OPERATOR_USERNAME", raising=False)
    monkeypatch.setattr(identity, "_loaded_configuration",
                        lambda: loaded(_kubeconfig(tmp_path, {"token": SA_TOKEN})))
    settings = resolve_identity(OperatorSettings())
    assert isinstance(settings, OperatorSettings) and settings.operator_username == SA


def test_startup_with_the_webhook_on_and_no_username_stops(tmp_path, monkeypatch):
    """An empty username would have the status webhook refuse the operator's own status writes."""
    monkeypatch.delenv("KUBETUNE_OPERATOR_USERNAME", raising=False)
    monkeypatch.setattr(identity, "_loaded_configuration", lambda: loaded(_kubeconfig(tmp_path, {"token": "static"})))
    with pytest.raises(SystemExit, match="--operator-username"):
        resolve_identity(OperatorSettings(webhook_port=9443))
    assert resolve_identity(OperatorSettings(webhook_port=0)).operator_username == ""  # no webhook: unused


def test_no_credentials_at_all_is_unknown(monkeypatch):
    def fail():
        raise kubernetes.config.ConfigException("no configuration")
    monkeypatch.setattr(identity, "_loaded_configuration", fail)
    assert identity.operator_username(OperatorSettings(operator_username="")) == ""
