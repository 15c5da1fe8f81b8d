"""pyproject.toml's direct dependencies, for hack/lock.sh's ends of the range.

  python hack/deps.py unbounded   every dependency of the base and the locked extras with its
                                  upper bound lifted (the newest the registry serves), one a line;
                                  exact pins (==) stay, as they name a file on this machine (torch)
  python hack/deps.py build       pyproject's build-system requirements, locked with the rest so
                                  the project installs without build isolation
  python hack/deps.py lowest FILE every direct dependency whose version in FILE (a lowest-end lock)
                                  is not its stated lower bound, and exit 1 if any: a bound the
                                  resolver cannot reach is not the version the tests ran on
  python hack/deps.py digest      a digest of every input of the lock (the requirement lists of
                                  pyproject.toml, hack/helm/ and hack/services/requirements.in), which each lock
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
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
HELM_INPUT = ROOT / "hack" / "helm" / "requirements.in"
SERVICES_INPUT = ROOT / "hack" / "services" / "requirements.in"
LOCK = ROOT / "requirements"
LOCKED_EXTRAS = ("operator", "trainer", "test", "bench")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def direct_dependencies() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + [r for e in LOCKED_EXTRAS for r in extras[e]]]


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def inputs_digest() -> str:
    """Changes when a requirement of pyproject.toml or of the tool venvs' inputs changes (not comments)."""
    toml = tomllib.loads(PYPROJECT.read_text())
    helm, services = (requirement_lines(path) for path in (HELM_INPUT, SERVICES_INPUT))
    inputs = {"build": toml["build-system"]["requires"], "dependencies": toml["project"]["dependencies"],
              "extras": toml["project"]["optional-dependencies"], "helm": helm, "services": services}
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


def unreached_lower_bounds(lock: Path) -> list[str]:
    pins = read_lock(lock)
    out = []
    for requirement in direct_dependencies():
        lower = [s.version for s in requirement.specifier if s.operator in (">=", "==")]
        locked = pins[normalize(requirement.name)][0]
        if lower and Version(Version(locked).public) != Version(lower[0]):
            out.append(f"{requirement.name}: pyproject says >={lower[0]}, the lowest resolution has {locked}")
    return out


def main(argv: list[str]) -> int:
    if argv == ["unbounded"]:
        print("\n".join(str(unbounded(r)) for r in direct_dependencies()))
    elif len(argv) == 2 and argv[0] == "lowest":
        unreached = unreached_lower_bounds(Path(argv[1]))
        print("\n".join(unreached or ["every lower bound is the version resolved"]))
        return 1 if unreached else 0
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
