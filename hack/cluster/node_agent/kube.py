"""API access: plain JSON dicts (camelCase, as in manifests) over the kubernetes client's
transport, so the agent handles objects exactly as the API server sends them."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .common import log


def api_error(resp, data: bytes) -> ApiException:
    """The client's own exception type, so callers can test e.status as usual."""
    return ApiException(status=resp.status, reason=resp.reason,
                        body=data.decode("utf-8", "replace"))


class Kube:
    """A minimal JSON client: call/get/watch on raw API paths."""

    def __init__(self, kubeconfig: str):
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        self.api = client.ApiClient(cfg)
        self.server = cfg.host
        self.ca_pem = Path(cfg.ssl_ca_cert).read_bytes()

    def _send(self, method, path, body=None, query=None, content_type="application/json",
              timeout=30):
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        req = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"])
        return self.api.call_api(*req, _request_timeout=timeout)

    def call(self, method, path, body=None, query=None, content_type="application/json"):
        resp = self._send(method, path, body, query, content_type)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise api_error(resp, data)
        return json.loads(data) if data else {}

    def get(self, path, **query):
        return self.call("GET", path, query=query or None)

    def get_or_none(self, path):
        try:
            return self.get(path)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def watch(self, path, query, timeout_s=300):
        """Yields watch events ({"type", "object"}) until the server ends the watch."""
        q = dict(query, watch="true", timeoutSeconds=str(timeout_s), allowWatchBookmarks="true")
        resp = self._send("GET", path, query=q, timeout=(10, timeout_s + 30))
        if resp.status != 200:
            raise api_error(resp, resp.read())
        raw = resp.response
        try:
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()


def watch_forever(kube: Kube, path: str, query: dict, on_list, on_event, stop: threading.Event,
                  what: str):
    """List then watch `path`, re-listing whenever the watch breaks (410 Gone, errors).

    on_list(items) gets every full listing; on_event(type, obj) every later change."""
    rv = None
    while not stop.is_set():
        try:
            if rv is None:
                listing = kube.get(path, **query)
                rv = listing["metadata"]["resourceVersion"]
                on_list(listing.get("items") or [])
            for ev in kube.watch(path, dict(query, resourceVersion=rv)):
                if stop.is_set():
                    return
                obj = ev.get("object") or {}
                if ev["type"] == "ERROR":  # usually 410 Gone: our resourceVersion is too old
                    log.info("%s watch: %s; re-listing", what, obj.get("message"))
                    rv = None
                    break
                rv = obj["metadata"]["resourceVersion"]
                if ev["type"] != "BOOKMARK":
                    on_event(ev["type"], obj)
        except Exception as e:  # noqa: BLE001 - the loop must survive anything
            if not stop.is_set():
                log.warning("%s watch failed (%s); re-listing", what, e)
                rv = None
                stop.wait(1)
