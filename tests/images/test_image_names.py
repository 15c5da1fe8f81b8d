"""One set of image names everywhere: the Dockerfiles' labels, the contract's default trainer
image (and so the operator's --trainer-image default and the CRD descriptions), the Helm
chart's values, the plain manifests and the docs, all at pyproject's version."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

import dockerfiles
from dockerfiles import IMAGE_REFERENCE, ROOT, pyproject
from kubetune_api import wire

VERSION = pyproject()["project"]["version"]
OPERATOR = f"ghcr.io/kubetune/operator:{VERSION}"
TRAINER = f"ghcr.io/kubetune/trainer:{VERSION}"
TRAINER_CUDA = f"{TRAINER}-cuda"
KNOWN = {OPERATOR, TRAINER, TRAINER_CUDA}
# Where a repository is named without its tag (the chart's image.repository, for one).
REPOSITORIES = {name.split(":")[0] for name in KNOWN}
CHART = ROOT / "charts" / "kubetune"


def references(path: Path) -> set[str]:
    return set(IMAGE_REFERENCE.findall(path.read_text()))


def unknown_references(*paths: Path) -> dict[str, set[str]]:
    found = {str(p.relative_to(ROOT)): references(p) - KNOWN - REPOSITORIES for p in paths}
    return {path: refs for path, refs in found.items() if refs}


def test_contract_default_is_the_cpu_trainer_image():
    assert wire.DEFAULT_IMAGE == TRAINER


@pytest.mark.parametrize("path, name", [(dockerfiles.OPERATOR_DOCKERFILE, OPERATOR),
                                        (dockerfiles.TRAINER_DOCKERFILE, TRAINER),
                                        (dockerfiles.TRAINER_CUDA_DOCKERFILE, TRAINER_CUDA)],
                         ids=["operator", "trainer", "trainer-cuda"])
def test_dockerfile_labels_name_the_image(path, name):
    labels = dockerfiles.parse(path).final.pairs("LABEL")
    assert labels.get(dockerfiles.REF_LABEL) == name
    assert labels.get(dockerfiles.VERSION_LABEL) == VERSION
    # The build command in the file's header tags what the label says.
    assert f"docker build -f {path.relative_to(ROOT)} -t {name} ." in path.read_text()


def test_operator_trainer_image_setting_defaults_to_the_contract(monkeypatch):
    monkeypatch.delenv("KUBETUNE_TRAINER_IMAGE", raising=False)
    from kubetune_operator.main import parse_args

    assert parse_args([]).trainer_image == wire.DEFAULT_IMAGE


def test_crds_name_the_default_trainer_image():
    crds = sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
    assert crds
    for crd in crds:
        assert references(crd) == {TRAINER}, f"{crd.relative_to(ROOT)} names {references(crd)}"


def test_operator_manifest_runs_the_operator_image():
    deployment = ROOT / "manifests" / "operator" / "deployment.yaml"
    images = [c["image"] for doc in yaml.safe_load_all(deployment.read_text()) if doc and doc["kind"] == "Deployment"
              for c in doc["spec"]["template"]["spec"]["containers"]]
    assert images == [OPERATOR], f"{deployment.relative_to(ROOT)} runs {images}"
    assert not unknown_references(*sorted((ROOT / "manifests").rglob("*.yaml")))


def test_chart_values_name_the_images():
    values_file = CHART / "values.yaml"
    if not values_file.exists():
        pytest.skip(f"{values_file.relative_to(ROOT)} does not exist yet (the chart is being written)")
    values = yaml.safe_load(values_file.read_text())
    assert values["image"]["repository"] == OPERATOR.split(":")[0]
    tag = values["image"].get("tag") or yaml.safe_load((CHART / "Chart.yaml").read_text()).get("appVersion")
    assert str(tag) == VERSION, f"the chart's operator tag is {tag!r} (image.tag, else appVersion)"
    assert values.get("trainerImage") == TRAINER
    assert not unknown_references(*sorted(p for p in CHART.rglob("*") if p.is_file()))


def test_readme_and_docs_name_the_images():
    readme = ROOT / "README.md"
    pages = [readme, *sorted((ROOT / "docs").rglob("*.md"))]
    assert not unknown_references(*pages), (f"README.md or docs/ names images that are not built: "
                                            f"{unknown_references(*pages)}; the images are {sorted(KNOWN)} (images/README.md)")
    mentioned = references(readme)
    assert OPERATOR in mentioned, f"README.md does not name the operator image {OPERATOR}"
    assert TRAINER in mentioned, f"README.md does not name the trainer image {TRAINER}"


def test_images_readme_builds_each_image_under_its_name():
    readme = dockerfiles.IMAGES / "README.md"
    text = readme.read_text()
    assert references(readme) >= KNOWN and not unknown_references(readme)
    builds = re.findall(r"docker build -f (\S+) -t (\S+) \.", text)
    assert sorted(builds) == sorted([(str(dockerfiles.OPERATOR_DOCKERFILE.relative_to(ROOT)), OPERATOR),
                                     (str(dockerfiles.TRAINER_DOCKERFILE.relative_to(ROOT)), TRAINER),
                                     (str(dockerfiles.TRAINER_CUDA_DOCKERFILE.relative_to(ROOT)), TRAINER_CUDA)])


def test_no_other_image_names_anywhere():
    """No file in the tree (tracked or new, as git lists them; tests, which try overrides,
    aside) names a kubetune image that is not built."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode:
        pytest.skip(f"git ls-files failed: {listed.stderr.strip()}")
    paths = [ROOT / name for name in listed.stdout.splitlines() if not name.startswith("tests/")]
    texts = [p for p in paths if p.is_file() and (p.suffix in {".md", ".yaml", ".yml", ".json", ".py", ".tpl", ".txt", ".sh"}
                                                   or p.name.startswith("Dockerfile") or p.name == "Makefile")]
    found = unknown_references(*texts)
    assert not found, f"names of images that are not built ({sorted(KNOWN)} are): {found}"
