"""The operator's own username, as the API server names it in admission reviews' `userInfo`:
the status webhook (admission.py) lets only this user write a job's status.

`--operator-username` / `KUBETUNE_OPERATOR_USERNAME` says it (the chart sets
`system:serviceaccount:<namespace>:<service account>`). Unset, it comes from the credentials
the operator loaded (in-cluster or kubeconfig): a ServiceAccount token's JWT `sub` claim (the
payload is decoded, not verified: it is the operator's own credential, and the API server
decides anyway), or a client certificate's subject CN (the x509 authenticator's username).
Other credentials (a static token, an exec plugin's or OIDC token whose username depends on
the API server's claim mapping) say nothing reliable: then the flag is needed.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
from typing import Any, Optional

from cryptography import x509
from cryptography.x509.oid import NameOID

from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")
SERVICEACCOUNT_PREFIX = "system:serviceaccount:"


def username_from_token(token: str) -> str:
    """A ServiceAccount token's `sub` (system:serviceaccount:NS:NAME); "" for anything else."""
    token = token.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return ""  # not a JWT (e.g. a static token)
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return ""
    subject = payload.get("sub") if isinstance(payload, dict) else None
    # Only a ServiceAccount's `sub` is its username; an OIDC token's depends on the API server.
    return subject if isinstance(subject, str) and subject.startswith(SERVICEACCOUNT_PREFIX) else ""


def username_from_certificate(pem: bytes) -> str:
    """A client certificate's subject CN (the x509 authenticator's username); "" without one."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return ""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def username_from_configuration(configuration: Any) -> str:
    """From a kubernetes.client.Configuration: its bearer token, else its client certificate."""
    for value in (getattr(configuration, "api_key", None) or {}).values():
        name = username_from_token(str(value or ""))
        if name:
            return name
    cert_file: Optional[str] = getattr(configuration, "cert_file", None)
    if cert_file:
        try:
            with open(cert_file, "rb") as handle:
                return username_from_certificate(handle.read())
        except OSError:
            return ""
    return ""


def _loaded_configuration() -> Any:
    """The credentials the operator runs with (kube.load_config's: in-cluster, else kubeconfig)."""
    import kubernetes

    kubernetes.config.load_config()
    return kubernetes.client.Configuration.get_default_copy()


def operator_username(settings: OperatorSettings) -> str:
    """The configured username, else the one the loaded credentials say; "" when unknown."""
    if settings.operator_username:
        return settings.operator_username
    try:
        configuration = _loaded_configuration()
    except Exception as exc:  # noqa: BLE001 - no credentials: kopf says so when it starts
        log.warning(f"could not load the Kubernetes credentials to learn the operator's username: {exc}")
        return ""
    return username_from_configuration(configuration)


def with_username(settings: OperatorSettings) -> OperatorSettings:
    """settings with operator_username filled in (settings is frozen: a copy)."""
    return dataclasses.replace(settings, operator_username=operator_username(settings))
