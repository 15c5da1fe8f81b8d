"""The admission webhook's endpoint: kopf's HTTPS server with a certificate from a CA the
operator makes at startup, and the ValidatingWebhookConfiguration that points the API server
at it (rules, failurePolicy, timeout and the CA bundle), kept while the operator runs.

The operator patches the configuration's `webhooks` when it starts serving and empties them
when it stops, so a stopped operator leaves no webhook behind for the API server to call. The
object itself belongs to the chart (`helm uninstall` deletes it); when absent, the operator
creates it (with credentials that may). The CA's key lives only in memory, for one signature:
nothing can issue another certificate the webhook would accept, and a restart makes new ones.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import kopf
import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client.rest import ApiException

import kubetune_api as api

log = logging.getLogger("kubetune.operator")
FAILURE_POLICIES = ("Fail", "Ignore")
CERT_DAYS = 3650  # one certificate per operator process; it ends with the process anyway
MERGE_PATCH = "application/merge-patch+json"  # replaces the webhooks list as a whole


@dataclass(frozen=True)
class Target:
    """How the API server reaches the webhook: through a Service (in the cluster) or at
    https://host:port (an operator outside the cluster or on the host's network)."""

    port: int
    host: str = ""
    service_namespace: str = ""
    service_name: str = ""
    service_port: int = 443

    @classmethod
    def parse(cls, port: int, host: str = "", service: str = "") -> "Target":
        """`service` is NAMESPACE/NAME[:PORT]; exactly one of host and service is needed."""
        if bool(host) == bool(service):
            raise ValueError("the webhook needs exactly one of --webhook-host and --webhook-service")
        if not service:
            return cls(port=port, host=host)
        namespace, _, rest = service.partition("/")
        name, _, service_port = rest.partition(":")
        if not namespace or not name:
            raise ValueError(f"--webhook-service {service!r}: expected NAMESPACE/NAME[:PORT]")
        return cls(port=port, service_namespace=namespace, service_name=name, service_port=int(service_port or 443))

    def hostnames(self) -> list[str]:
        """The names the API server may call: the serving certificate's SANs."""
        if self.host:
            return [self.host]
        name, namespace = self.service_name, self.service_namespace
        return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}", name]

    def client_config(self, path: str, ca_bundle: bytes) -> dict[str, Any]:
        config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode("ascii")}
        if self.host:
            host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
            config["url"] = f"https://{host}:{self.port}{path}"
        else:
            config["service"] = {"namespace": self.service_namespace, "name": self.service_name,
                                 "port": self.service_port, "path": path}
        return config


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def certificates(hostnames: Collection[str], password: Optional[str] = None) -> tuple[bytes, bytes, bytes]:
    """A new CA and a serving certificate it signed for `hostnames` (IPs or DNS names; the
    unspecified 0.0.0.0 and :: are left out). Returns (certificate PEM, its key PEM, CA PEM)."""
    names = list(dict.fromkeys(h for h in hostnames if h and h not in ("0.0.0.0", "::")))
    if not names:
        raise ValueError("no hostname to make the webhook's certificate for")
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kubetune-operator webhook CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CERT_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    pem = serialization.Encoding.PEM
    return cert.public_bytes(pem), key_pem, ca.public_bytes(pem)


def webhooks(target: Target, handler_ids: dict[str, str], ca_bundle: bytes, failure_policy: str,
             timeout_seconds: int) -> list[dict[str, Any]]:
    """One webhook per plural: CREATE and UPDATE of the main resource only (never its status
    subresource, which the operator and the pods write), answered by the handler of that id."""
    return [{
        "name": f"{plural}.{api.GROUP}",
        "rules": [{"apiGroups": [api.GROUP], "apiVersions": [api.VERSION], "resources": [plural],
                   "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
        "clientConfig": target.client_config(f"/{handler_id}", ca_bundle),
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
        "admissionReviewVersions": ["v1"],
    } for plural, handler_id in handler_ids.items()]


def apply_configuration(name: str, hooks: list[dict[str, Any]]) -> None:
    """Sets the webhooks of ValidatingWebhookConfiguration `name`, creating it when absent."""
    client = kubernetes.client.AdmissionregistrationV1Api()
    try:
        client.patch_validating_webhook_configuration(name, {"webhooks": hooks}, _content_type=MERGE_PATCH)
        return
    except ApiException as exc:
        if exc.status != 404:
            raise
    client.create_validating_webhook_configuration({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubetune-operator"}},
        "webhooks": hooks})


def clear_configuration(name: str) -> None:
    """Removes the webhooks (keeps the object, which may belong to the chart)."""
    try:
        kubernetes.client.AdmissionregistrationV1Api().patch_validating_webhook_configuration(
            name, {"webhooks": []}, _content_type=MERGE_PATCH, _request_timeout=10)
    except Exception as exc:  # noqa: BLE001 - at shutdown: say so and go on stopping
        log.warning(f"could not remove the webhooks of ValidatingWebhookConfiguration {name}: {exc}")


class ManagedWebhookServer(kopf.WebhookServer):
    """kopf's webhook server, with a certificate from its own CA, that keeps the
    ValidatingWebhookConfiguration `configuration` pointing at itself while it serves."""

    def __init__(self, *, target: Target, configuration: str, handler_ids: dict[str, str], failure_policy: str,
                 timeout_seconds: int, addr: str) -> None:
        names = target.hostnames()
        super().__init__(addr=addr, port=target.port, host=names[0], extra_sans=names[1:])
        self.target, self.configuration, self.handler_ids = target, configuration, handler_ids
        self.failure_policy, self.timeout_seconds = failure_policy, timeout_seconds
        self.ca_pem: Optional[bytes] = None

    def build_certificate(self, hostnames: Collection[str], password: Optional[str] = None) -> tuple[bytes, bytes]:
        # kopf calls this for a server without certfile/pkeyfile; its own needs certbuilder.
        cert, key, self.ca_pem = certificates(hostnames, password)
        return cert, key

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        applied = False
        try:
            async for client_config in super().__call__(fn):
                assert self.ca_pem is not None, "the server made no certificate"
                hooks = webhooks(self.target, self.handler_ids, self.ca_pem, self.failure_policy, self.timeout_seconds)
                await asyncio.to_thread(apply_configuration, self.configuration, hooks)
                applied = True
                log.info(f"validating webhook at {hooks[0]['clientConfig'].get('url') or self.target.service_name} "
                         f"(ValidatingWebhookConfiguration {self.configuration}, failurePolicy {self.failure_policy})")
                yield client_config
        finally:
            if applied:
                clear_configuration(self.configuration)  # blocking, once, at shutdown
                log.info(f"removed the webhooks of ValidatingWebhookConfiguration {self.configuration}")
