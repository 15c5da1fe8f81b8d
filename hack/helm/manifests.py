"""Renders charts/kubetune into manifests/, the kustomize base (`make manifests`).

The chart is the one source of truth: `helm template kubetune charts/kubetune -n kubetune-system`
with default values but one (through hack/helm/helm.py, i.e. helm-sdkpy), split into one file
per CRD and per chart template, plus the kubetune-system Namespace and kustomization.yaml. The
one: the webhook's certificate comes from cert-manager (webhook.certManager.enabled), since the
chart's own (genCA) would be a new CA at every render and a private key in Git.
`--check` exits 1 when manifests/ differs from what the chart renders (tests/chart checks
it too). Runs under .venv (PyYAML); helm.py runs under .venv-helm.
"""
from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
OUT = ROOT / "manifests"
HELM_PYTHON = Path(os.environ.get("KUBETUNE_HELM_PYTHON", ROOT / ".venv-helm" / "bin" / "python"))
RELEASE, NAMESPACE = "kubetune", "kubetune-system"
# The webhook's certificate from cert-manager (which must be installed): deterministic, no key in Git.
VALUES = ["--set-json", "webhook.certManager.enabled=true", "--api-versions", "cert-manager.io/v1"]
HEADER = ("# Generated from charts/kubetune by `make manifests` (helm template {release} -n {namespace},\n"
          "# default values but webhook.certManager.enabled=true: cert-manager issues the webhook's\n"
          "# certificate). Do not edit: change the chart and run `make manifests`.\n")

NAMESPACE_DOC = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/name": "kubetune"}}}


def helm(*args: str) -> str:
    result = subprocess.run([str(HELM_PYTHON), str(ROOT / "hack" / "helm" / "helm.py"), *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"helm.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def split_sources(manifest: str) -> list[tuple[str, str]]:
    """(template path, document text) for each document of a rendered manifest, in order."""
    docs = []
    for chunk in manifest.split("\n---\n"):
        lines = chunk.strip("\n").splitlines()
        if lines and lines[0] == "---":
            lines = lines[1:]
        source = next((l.split(": ", 1)[1] for l in lines if l.startswith("# Source: ")), None)
        body = "\n".join(l for l in lines if not l.startswith("# Source: ")).strip("\n")
        if source and yaml.safe_load(body):
            docs.append((source, body + "\n"))
    return docs


def rendered() -> dict[str, str]:
    """Relative path under manifests/ -> file text."""
    header = HEADER.format(release=RELEASE, namespace=NAMESPACE)
    files: dict[str, list[str]] = {}
    for source, body in split_sources(helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *VALUES)):
        obj = yaml.safe_load(body)
        if obj["kind"] == "CustomResourceDefinition":
            path = f"crds/{obj['metadata']['name']}.yaml"
        else:
            path = f"operator/{Path(source).name}"
        files.setdefault(path, []).append(body)
    out = {"namespace.yaml": header + yaml.safe_dump(NAMESPACE_DOC, sort_keys=False)}
    out.update({path: header + "---\n".join(bodies) for path, bodies in sorted(files.items())})
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": list(out)}
    out["kustomization.yaml"] = (header + "# `kubectl apply -k manifests/` installs the CRDs, the namespace, RBAC,\n"
                                 "# the operator Deployment, its Services, the webhook configuration and\n"
                                 "# its cert-manager Certificate and Issuer (cert-manager must be installed).\n"
                                 + yaml.safe_dump(kustomization, sort_keys=False))
    return out


def on_disk() -> dict[str, str]:
    return {str(p.relative_to(OUT)): p.read_text() for p in sorted(OUT.rglob("*")) if p.is_file()}


def stale(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    problems = []
    for path in sorted(set(expected) | set(actual)):
        if path not in actual:
            problems.append(f"manifests/{path} is missing")
        elif path not in expected:
            problems.append(f"manifests/{path} is not rendered from the chart")
        elif expected[path] != actual[path]:
            diff = difflib.unified_diff(actual[path].splitlines(), expected[path].splitlines(),
                                        f"manifests/{path}", "rendered", lineterm="", n=1)
            problems.append("\n".join(list(diff)[:40]))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether manifests/ is stale")
    args = parser.parse_args(argv)
    expected = rendered()
    if args.check:
        problems = stale(expected, on_disk())
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("manifests/ is stale: run `make manifests`", file=sys.stderr)
        return 1 if problems else 0
    for path in on_disk():
        if path not in expected:
            (OUT / path).unlink()
    for path, text in expected.items():
        (OUT / path).parent.mkdir(parents=True, exist_ok=True)
        (OUT / path).write_text(text)
        print(f"wrote manifests/{path}", file=sys.stderr)
    for directory in sorted((p for p in OUT.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
