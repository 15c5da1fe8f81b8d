"""The admission webhook's endpoint: kopf's HTTPS server, and how the API server is told of it.

Two modes:

- **In a cluster (the chart)**: the chart owns the whole ValidatingWebhookConfiguration (rules,
  failurePolicy, timeout, caBundle) and the serving certificate (a Secret it generates, or
  cert-manager's), mounted into the pod; the operator serves with that certificate and key
  (`--webhook-cert-file`, `--webhook-key-file`; kopf re-reads them when they change) and never
  reads, patches or clears any webhook configuration. It needs no RBAC on them at all, and a
  restart or an upgrade leaves the webhooks registered: while no operator answers, the API
  server applies failurePolicy (with Fail, the chart's default, creates and updates of jobs
  and every status write wait for the operator to be back; that is the point).
- **Self-managed (development, tests: an operator outside the cluster, `--webhook-host`)**:
  the operator makes a CA and a serving certificate at startup and patches the webhooks into
  the configuration (creating it when absent). The CA's key lives only in memory, for one
  signature. It does not clear them when it stops either: a stopped operator with
  failurePolicy Fail refuses applies until it is back, as in the cluster.
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
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")
STATUS_HANDLER_ID = "validate-status"  # admission.py's handler of the status subresources (its URL path)
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


def _hook(name: str, rule: dict[str, Any], client_config: dict[str, Any], failure_policy: str,
          timeout_seconds: int) -> dict[str, Any]:
    return {"name": name, "rules": [rule], "clientConfig": client_config, "failurePolicy": failure_policy,
            "matchPolicy": "Equivalent", "sideEffects": "None", "timeoutSeconds": timeout_seconds,
            "admissionReviewVersions": ["v1"]}


def webhooks(target: Target, handler_ids: dict[str, str], ca_bundle: bytes, failure_policy: str,
             timeout_seconds: int, status_handler_id: str = "") -> list[dict[str, Any]]:
    """One webhook per plural: CREATE and UPDATE of the main resource, answered by the handler
    of that id; with `status_handler_id`, one more (`status.kubetune.io`) for UPDATE of every
    plural's status subresource, which only the operator may write. The chart renders the same
    (charts/kubetune/templates/webhook.yaml; tests/chart compares them)."""
    def rule(resources: list[str], operations: list[str]) -> dict[str, Any]:
        return {"apiGroups": [api.GROUP], "apiVersions": [api.VERSION], "resources": resources,
                "operations": operations, "scope": "Namespaced"}

    hooks = [_hook(f"{plural}.{api.GROUP}", rule([plural], ["CREATE", "UPDATE"]),
                   target.client_config(f"/{handler_id}", ca_bundle), failure_policy, timeout_seconds)
             for plural, handler_id in handler_ids.items()]
    if status_handler_id:
        hooks.append(_hook(f"status.{api.GROUP}", rule([f"{plural}/status" for plural in handler_ids], ["UPDATE"]),
                           target.client_config(f"/{status_handler_id}", ca_bundle), failure_policy, timeout_seconds))
    return hooks


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


class ManagedWebhookServer(kopf.WebhookServer):
    """Self-managed (development): kopf's webhook server, with a certificate from its own CA,
    that points the ValidatingWebhookConfiguration `configuration` at itself when it starts
    serving, and leaves it so when it stops."""

    def __init__(self, *, target: Target, configuration: str, handler_ids: dict[str, str], failure_policy: str,
                 timeout_seconds: int, addr: str, status_handler_id: str = STATUS_HANDLER_ID) -> None:
        names = target.hostnames()
        super().__init__(addr=addr, port=target.port, host=names[0], extra_sans=names[1:])
        self.target, self.configuration, self.handler_ids = target, configuration, handler_ids
        self.status_handler_id = status_handler_id
        self.failure_policy, self.timeout_seconds = failure_policy, timeout_seconds
        self.ca_pem: Optional[bytes] = None

    def build_certificate(self, hostnames: Collection[str], password: Optional[str] = None) -> tuple[bytes, bytes]:
        # kopf calls this for a server without certfile/pkeyfile; its own needs certbuilder.
        cert, key, self.ca_pem = certificates(hostnames, password)
        return cert, key

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            assert self.ca_pem is not None, "the server made no certificate"
            hooks = webhooks(self.target, self.handler_ids, self.ca_pem, self.failure_policy, self.timeout_seconds,
                             self.status_handler_id)
            await asyncio.to_thread(apply_configuration, self.configuration, hooks)
            log.info(f"validating webhook at {hooks[0]['clientConfig'].get('url') or self.target.service_name} "
                     f"(ValidatingWebhookConfiguration {self.configuration}, failurePolicy {self.failure_policy}; "
                     f"kept when the operator stops)")
            yield client_config


def server(config: OperatorSettings, handler_ids: dict[str, str],
           status_handler_id: str = STATUS_HANDLER_ID) -> kopf.WebhookServer:
    """The webhook server for these settings: with a certificate and key (the chart's), kopf's
    own server on them and nothing else; without, the self-managed ManagedWebhookServer."""
    if config.webhook_cert_file and config.webhook_key_file:
        log.info(f"validating webhook on port {config.webhook_port} with the certificate {config.webhook_cert_file}; "
                 f"its ValidatingWebhookConfiguration is the installer's (the operator leaves it alone)")
        return kopf.WebhookServer(addr=config.webhook_address, port=config.webhook_port,
                                  certfile=config.webhook_cert_file, pkeyfile=config.webhook_key_file)
    target = Target.parse(config.webhook_port, config.webhook_host, config.webhook_service)
    return ManagedWebhookServer(target=target, configuration=config.webhook_configuration, handler_ids=handler_ids,
                                failure_policy=config.webhook_failure_policy, timeout_seconds=config.webhook_timeout,
                                addr=config.webhook_address, status_handler_id=status_handler_id)
