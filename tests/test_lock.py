"""The lock (requirements/*.txt, written by hack/lock.sh) is the only source of versions:
it agrees with pyproject.toml, its files agree with each other, and the venvs that
`make install` built hold exactly what it says. The images' install lines are checked in
tests/images (they install these same files)."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lockdeps", ROOT / "hack" / "deps.py")
deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(deps)

LOCK_FILES = sorted(deps.LOCK.glob("*.txt"))
DEV = deps.read_lock(deps.LOCK / "dev.txt")


def test_every_lock_file_was_made_from_the_current_inputs():
    digest = deps.inputs_digest()
    stale = [p.name for p in LOCK_FILES if digest not in p.read_text().split("\n", 1)[0]]
    assert not stale, f"{stale} were locked from other requirements than pyproject.toml's: run `make lock`"


def test_every_locked_version_carries_hashes():
    for path in LOCK_FILES:
        pins = deps.read_lock(path)
        assert pins, f"{path.name} pins nothing"
        assert all(hashes for _, hashes in pins.values()), f"{path.name}: a pin without --hash"


@pytest.mark.parametrize("requirement", deps.direct_dependencies(), ids=str)
def test_each_direct_dependency_is_locked_within_its_range(requirement):
    name = deps.normalize(requirement.name)
    assert name in DEV, f"{requirement} is not in requirements/dev.txt: run `make lock`"
    version = Version(DEV[name][0])
    # The CPU wheel's local label (+cpu) is not part of the range pyproject states.
    assert requirement.specifier.contains(version.public, prereleases=True), \
        f"the lock has {name}=={version}, outside pyproject's {requirement}: run `make lock`"


def test_every_direct_dependency_has_a_proven_range():
    """Lower bound: the lowest version make test-deps-lowest passed on; upper: the newest it passed on."""
    for requirement in deps.direct_dependencies():
        operators = {s.operator for s in requirement.specifier}
        assert operators == {"=="} or ({">=", "<="} <= operators), \
            f"{requirement}: state both ends of the range (>=lowest proven,<=newest proven) or pin it"


# services.txt is resolved on its own: the MLflow server and KServe pin what the product has outgrown.
@pytest.mark.parametrize("path", [p for p in LOCK_FILES if p.name not in ("dev.txt", "services.txt")], ids=lambda p: p.name)
def test_the_other_lock_files_are_cut_from_the_same_resolution(path):
    differ = {name: (version, DEV[name][0]) for name, (version, _) in deps.read_lock(path).items()
              if name in DEV and DEV[name][0] != version}
    assert not differ, f"{path.name} disagrees with dev.txt (name: (its version, dev.txt's)): {differ}"


def test_the_trainer_image_lock_is_the_trainer_extra_of_the_dev_lock():
    trainer = deps.read_lock(deps.LOCK / "trainer.txt") | deps.read_lock(deps.LOCK / "torch-cpu.txt")
    assert set(trainer) <= set(DEV)
    for name in ("torch", "transformers", "peft", "accelerate", "kubernetes"):
        assert trainer[name] == DEV[name], name
    for name in ("kopf", "pytest", "trl"):  # operator, test and bench extras are not in the image
        assert name not in trainer, name


def installed(python: str | Path) -> dict[str, str]:
    probe = "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return {deps.normalize(name): version for name, version in json.loads(result.stdout).items()}


def assert_venv_is_the_lock(python: str | Path, *lock_files: str) -> None:
    locked = {}
    for name in lock_files:
        locked |= {k: v for k, (v, _) in deps.read_lock(deps.LOCK / name).items()}
    have = installed(python)
    have.pop("kubetune", None)  # the project itself, installed from this tree (not in the tool venvs)
    for bootstrap in ("pip", "setuptools"):  # what `python -m venv` puts in, unless the lock pins it
        if bootstrap not in locked:
            have.pop(bootstrap, None)
    assert have == locked, {n: (have.get(n), locked.get(n)) for n in set(have) | set(locked) if have.get(n) != locked.get(n)}


def test_the_dev_venv_holds_exactly_the_lock():
    assert_venv_is_the_lock(sys.executable, "dev.txt", "demo.txt")


@pytest.mark.parametrize("venv, lock_files", [(".venv-operator", ("operator.txt",)), (".venv-helm", ("helm.txt",)),
                                              (".venv-services", ("services.txt",)),
                                              (".venv-tools", ("tools.txt",))])
def test_the_other_venvs_hold_exactly_their_lock(venv, lock_files):
    python = ROOT / venv / "bin" / "python"
    assert python.exists(), f"{venv} is missing: make install builds it"
    assert_venv_is_the_lock(python, *lock_files)


def test_the_makefile_installs_every_venv_from_the_lock_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    assert re.findall(r"^LOCKED_INSTALL := (.*)$", makefile, flags=re.M) == ["-m pip install -q --require-hashes --no-deps"]
    assert re.findall(r"^PROJECT_INSTALL := (.*)$", makefile, flags=re.M) == ["-m pip install -q --no-deps --no-build-isolation -e ."]
    recipes = [line for line in makefile.splitlines() if line.startswith("\t")]
    assert not [line for line in recipes if "pip install" in line], "install through LOCKED_INSTALL / PROJECT_INSTALL"
    assert re.findall(r"^LOCK_DIR \?= (.*)$", makefile, flags=re.M) == ["requirements"]
    used = set(re.findall(r"\$\(LOCKED_INSTALL\)((?: -r \$\(LOCK_DIR\)/[\w-]+\.txt)+)", makefile))
    files = {name for group in used for name in re.findall(r"\$\(LOCK_DIR\)/([\w-]+\.txt)", group)}
    assert files == {p.name for p in LOCK_FILES} - {"trainer.txt", "torch-cpu.txt"}  # those two are the images'


def test_unbounded_inputs_lift_upper_bounds_and_keep_exact_pins():
    direct = {r.name: str(r.specifier) for r in deps.direct_dependencies()}
    lifted = {r.name: r.specifier for r in map(deps.unbounded, deps.direct_dependencies())}
    assert str(lifted["torch"]) == direct["torch"] and direct["torch"].startswith("==")
    assert all(s.operator not in ("<", "<=") for specifier in lifted.values() for s in specifier)
    assert all({s.operator for s in spec} in ({">="}, {"=="}) for spec in lifted.values())
    assert all(lifted[name] == spec for name, spec in ((r.name, r.specifier) for r in deps.direct_dependencies())
               if {s.operator for s in spec} == {"=="})
