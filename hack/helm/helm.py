"""A small `helm` CLI on helm-sdkpy (the Helm v4 Go library), for the Makefile and the tests.

Runs under .venv-helm (Python >= 3.12; `make helm` builds it). Subcommands:

  lint CHART
  template NAME CHART [-n NS] [-f VALUES.json|yaml ...] [--set-json KEY=JSON ...] [--api-versions G/V ...]
  install NAME CHART [-n NS] [values] [--create-namespace] [--take-ownership] [--no-wait] [--timeout S]
  upgrade NAME CHART [-n NS] [values] [--no-wait] [--timeout S]
  uninstall NAME [-n NS] [--no-wait]
  status NAME [-n NS]

install/upgrade/uninstall/status act on the cluster of $KUBECONFIG (or --kubeconfig) and print
the release as JSON. Errors go to stderr with exit status 1 (schema errors name the field).

helm-sdkpy has no `helm template`: `template` runs a real Helm install, with the in-memory
release store (HELM_DRIVER=memory), against a stand-in API server in this process that only
answers discovery (the default Kubernetes kinds plus --api-versions, like `helm template
--api-versions`) and accepts every object, keeping only what a list needs (Helm waits on hooks
by listing them; it validates them against an empty OpenAPI document). The manifest Helm
rendered, and would have applied, is printed, hooks last; nothing reaches a cluster.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KUBE_VERSION = "v1.30.0"  # what `.Capabilities.KubeVersion` is when templating

# (group/version, kind, plural, namespaced) that the stand-in API server serves.
BUILTIN = [
    ("v1", "Namespace", "namespaces", False),
    ("v1", "ServiceAccount", "serviceaccounts", True),
    ("v1", "Service", "services", True),
    ("v1", "ConfigMap", "configmaps", True),
    ("v1", "Secret", "secrets", True),
    ("v1", "Pod", "pods", True),
    ("apps/v1", "Deployment", "deployments", True),
    ("batch/v1", "Job", "jobs", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", False),
]
# Kinds of the API versions --api-versions may add.
OPTIONAL = {
    "monitoring.coreos.com/v1": [("ServiceMonitor", "servicemonitors", True), ("PodMonitor", "podmonitors", True),
                                 ("PrometheusRule", "prometheusrules", True)],
    "kubetune.io/v1alpha1": [("FineTuneJob", "finetunejobs", True), ("EvalJob", "evaljobs", True),
                             ("ClusterTrainingRuntime", "clustertrainingruntimes", False), ("TrainingRuntime", "trainingruntimes", True)],
    "cert-manager.io/v1": [("Certificate", "certificates", True), ("Issuer", "issuers", True),
                           ("ClusterIssuer", "clusterissuers", False)],
}


def _load_values(files: list[str], set_json: list[str]) -> dict:
    values: dict = {}
    for name in files:
        text = Path(name).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            import yaml  # only for YAML values files; .venv-helm has PyYAML

            data = yaml.safe_load(text)
        _merge(values, data or {})
    for item in set_json:
        key, _, raw = item.partition("=")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = json.loads(raw)
    return values


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class _StandIn(BaseHTTPRequestHandler):
    """Discovery for the kinds above; accepts any write, finds nothing on reads."""

    groups: dict[str, list[tuple[str, str, bool]]] = {}
    created: dict[str, dict[str, dict]] = {}  # collection path -> name -> object (lists only)

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _resources(self, gv: str) -> dict:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
            for kind, plural, namespaced in self.groups[gv]]}

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path == "/version":
            major, minor = KUBE_VERSION[1:].split(".")[:2]
            return self._send(200, {"major": major, "minor": minor, "gitVersion": KUBE_VERSION,
                                    "platform": "linux/amd64"})
        if path == "/openapi/v2":  # an empty OpenAPI document (protobuf): Helm validates hooks against no schema
            self.send_response(200)
            self.send_header("Content-Type", "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            groups = {}
            for gv in self.groups:
                if "/" in gv:
                    group, version = gv.split("/")
                    groups.setdefault(group, []).append({"groupVersion": gv, "version": version})
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": vs, "preferredVersion": vs[0]} for g, vs in groups.items()]})
        gv = path[len("/api/"):] if path.startswith("/api/") else path[len("/apis/"):]
        if gv in self.groups:
            return self._send(200, self._resources(gv))
        plurals = {plural: (gv, kind) for gv, kinds in self.groups.items() for kind, plural, _ in kinds}
        if path.rsplit("/", 1)[-1] in plurals:  # a collection: what a hook created in it (Helm waits on hooks)
            if "watch=" in self.path:
                return self._send(200, {})
            gv, kind = plurals[path.rsplit("/", 1)[-1]]
            return self._send(200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": {"resourceVersion": "1"},
                                    "items": list(self.created.get(path, {}).values())})
        return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": f"{path} not found"})

    def _write(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b"{}"
        ctype = self.headers.get("Content-Type", "application/json")
        if "json" not in ctype or "patch" in ctype:  # protobuf or a patch: echo it
            self.send_response(201 if self.command == "POST" else 200)
            self.send_header("Content-Type", "application/json" if "patch" in ctype else ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        obj = json.loads(body)
        obj.setdefault("metadata", {}).setdefault("uid", "00000000-0000-0000-0000-000000000000")
        obj["metadata"].setdefault("resourceVersion", "1")
        if self.command == "POST":
            self.created.setdefault(self.path.split("?")[0].rstrip("/"), {})[obj["metadata"].get("name")] = obj
        self._send(201 if self.command == "POST" else 200, obj)

    do_POST = do_PUT = do_PATCH = _write

    def do_DELETE(self):
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def _standin_kubeconfig(port: int, directory: str) -> str:
    path = os.path.join(directory, "kubeconfig")
    Path(path).write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "template",
        "clusters": [{"name": "template", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "template", "user": {"token": "template"}}],
        "contexts": [{"name": "template", "context": {"cluster": "template", "user": "template"}}],
    }))
    return path


def template(args, values: dict) -> dict:
    groups: dict[str, list[tuple[str, str, bool]]] = {}
    created: dict[str, dict[str, dict]] = {}  # collection path -> name -> object (lists only)
    for gv, kind, plural, namespaced in BUILTIN:
        groups.setdefault(gv, []).append((kind, plural, namespaced))
    for gv in args.api_versions:
        if gv not in OPTIONAL:
            raise SystemExit(f"--api-versions {gv}: known here are {', '.join(OPTIONAL)}")
        groups.setdefault(gv, []).extend(OPTIONAL[gv])
    handler = type("Handler", (_StandIn,), {"groups": groups, "created": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = _standin_kubeconfig(server.server_address[1], tmp)
            import helm_sdkpy

            config = helm_sdkpy.Configuration(namespace=args.namespace, kubeconfig=kubeconfig)
            return asyncio.run(helm_sdkpy.Install(config).run(
                args.name, args.chart, values=values, wait=False, timeout=60))
    finally:
        server.shutdown()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helm.py", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    sub = parser.add_subparsers(dest="cmd", required=True)

    def release(name: str, chart: bool = True, values: bool = True):
        p = sub.add_parser(name)
        p.add_argument("name")
        if chart:
            p.add_argument("chart")
        p.add_argument("-n", "--namespace", default="default")
        if values:
            p.add_argument("-f", "--values", action="append", default=[], help="values file (JSON or YAML)")
            p.add_argument("--set-json", action="append", default=[], help="KEY.PATH=JSON")
        return p

    lint = sub.add_parser("lint")
    lint.add_argument("chart")
    t = release("template")
    t.add_argument("--api-versions", action="append", default=[])
    t.add_argument("--notes", action="store_true", help="print the rendered NOTES.txt instead")
    for name in ("install", "upgrade"):
        p = release(name)
        p.add_argument("--no-wait", action="store_true")
        p.add_argument("--timeout", type=int, default=300)
        if name == "install":
            p.add_argument("--create-namespace", action="store_true")
            p.add_argument("--take-ownership", action="store_true",
                           help="adopt objects that exist without Helm's ownership (e.g. kubectl-applied CRDs)")
    u = release("uninstall", chart=False, values=False)
    u.add_argument("--no-wait", action="store_true")
    u.add_argument("--timeout", type=int, default=300)
    release("status", chart=False, values=False)
    return parser


def _run(helm_sdkpy, args, values: dict) -> dict:
    """A release action against the cluster; returns the release."""
    config = helm_sdkpy.Configuration(namespace=args.namespace, kubeconfig=args.kubeconfig)
    if args.cmd == "install":
        return asyncio.run(helm_sdkpy.Install(config).run(
            args.name, args.chart, values=values, create_namespace=args.create_namespace,
            wait=not args.no_wait, timeout=args.timeout, take_ownership=args.take_ownership))
    if args.cmd == "upgrade":
        return asyncio.run(helm_sdkpy.Upgrade(config).run(
            args.name, args.chart, values=values, wait=not args.no_wait, timeout=args.timeout))
    if args.cmd == "uninstall":
        return asyncio.run(helm_sdkpy.Uninstall(config).run(args.name, wait=not args.no_wait, timeout=args.timeout))
    return asyncio.run(helm_sdkpy.Status(config).run(args.name))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "template":
        # The release record stays in memory. Go reads the environment when the library loads.
        os.environ["HELM_DRIVER"] = "memory"
    import helm_sdkpy
    from helm_sdkpy.exceptions import HelmError

    try:
        if args.cmd == "lint":
            result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(args.chart))
            print(json.dumps(result, indent=2))
            # Severity: 1 info, 2 warning, 4 error; like `helm lint --strict`, warnings fail too.
            return 1 if result.get("Errors") or any(m.get("Severity", 0) >= 2 for m in result.get("Messages") or []) else 0
        values = _load_values(args.values, args.set_json) if hasattr(args, "values") else {}
        if args.cmd == "template":
            rel = template(args, values)
            # Hooks after the manifest, as `helm template` prints them.
            hooks = "".join(f"\n---\n# Source: {hook['path']}\n{hook['manifest']}" for hook in rel.get("hooks") or [])
            print(rel.get("info", {}).get("notes", "") if args.notes else rel.get("manifest", "") + hooks)
            return 0
        print(json.dumps(_run(helm_sdkpy, args, values), indent=2, default=str))
        return 0
    except HelmError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
