"""pyproject.toml's direct dependencies, for hack/lock.sh's ends of the range.

  python hack/deps.py unbounded   every dependency of the base and the locked extras with its
                                  upper bound lifted (the newest the registry serves), one a line;
                                  exact pins (==) stay, as they name a file on this machine (torch)
  python hack/deps.py build       pyproject's build-system requirements, locked with the rest so
                                  the project installs without build isolation
  python hack/deps.py digest      a digest of every input of the lock (the requirement lists of
                                  pyproject.toml and of hack/helm/requirements.in), which each lock
                                  file's first line records: tests/test_lock.py compares them
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
HELM_INPUT = ROOT / "hack" / "helm" / "requirements.in"
LOCK = ROOT / "requirements"
LOCKED_EXTRAS = ("operator", "trainer", "test", "bench")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def direct_dependencies() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + [r for e in LOCKED_EXTRAS for r in extras[e]]]


def inputs_digest() -> str:
    """Changes when a requirement of pyproject.toml or of the Helm tool's input changes (not comments)."""
    toml = tomllib.loads(PYPROJECT.read_text())
    helm = [line.strip() for line in HELM_INPUT.read_text().splitlines() if line.strip() and not line.startswith("#")]
    inputs = {"build": toml["build-system"]["requires"], "dependencies": toml["project"]["dependencies"],
              "extras": toml["project"]["optional-dependencies"], "helm": helm}
    return "sha256:" + hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def read_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """{normalized name: (version, hashes)} of a requirements file written by hack/lock.sh."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        match = PIN.match(entry)
        if match:
            pins[normalize(match.group(1))] = (match.group(2), frozenset(HASH.findall(entry)))
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def unbounded(requirement: Requirement) -> Requirement:
    if any(s.operator == "==" for s in requirement.specifier):
        return requirement
    requirement.specifier = SpecifierSet(",".join(str(s) for s in requirement.specifier if s.operator not in ("<", "<=")))
    return requirement


def main(argv: list[str]) -> int:
    if argv == ["unbounded"]:
        print("\n".join(str(unbounded(r)) for r in direct_dependencies()))
    elif argv == ["digest"]:
        print(inputs_digest())
    elif argv == ["build"]:
        print("\n".join(tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
