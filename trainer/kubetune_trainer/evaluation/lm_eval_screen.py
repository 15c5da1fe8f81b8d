"""Task lm-eval: the task YAML of lmEval.includePath, copied into a private temporary directory
and screened THERE; lm-eval is given only the copy (TaskManager include_path, in the check phase
and in the run), so a file swapped on the volume after the screen (another pod on the same PVC)
never reaches lm-eval's loader.

The copy keeps each include path's layout (relative `include:` resolves as before); an
`include:` that leaves its include path (absolute, or '..' out of it) is refused, except one into
lm-eval's own task registry (installed with lm-eval, not chosen by the tenant). Included files
that are not *.yaml (lm-eval's `_default_template_yaml` habit) are copied and screened as they
are reached. Every copy is data, not code:
- a `!function` tag (lm-eval imports the Python file it names) is refused, naming the file;
- so are `hf_evaluate` and metric names lm-eval does not register (they would load a script
  through the evaluate package), in the task and in any inline task of a group's list;
- so is a `use_prompt` that is not a name of lm-eval's prompt registry (promptsource:...,
  qa-basic:...): 'file.yaml:name' makes lm-eval read that file with yaml.full_load.
Messages name the original file (on the volume), not its copy. Light at import: lm_eval is
imported when used.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml

from kubetune_api.errors import ConfigError

MAX_YAML_FILES = 10_000  # under all include paths together
MAX_YAML_BYTES = 1_000_000  # one task YAML
_IGNORE_DIRS = {"__pycache__", ".ipynb_checkpoints"}
_REFUSED = "lmEval.includePath"


class _Refused(Exception):
    pass


class _ScreeningLoader(yaml.SafeLoader):
    """YAML as data: a `!function` tag stops the load (no other custom tag loads either)."""


def _refuse_function(loader: yaml.SafeLoader, node: yaml.Node):
    raise _Refused(f"'!function {loader.construct_scalar(node)}' (lm-eval would import Python from the task directory)")


_ScreeningLoader.add_constructor("!function", _refuse_function)


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _screen_metrics(name: Path, config: dict[str, Any]) -> None:
    """Metrics lm-eval registers only: any other name would load a script through `evaluate`."""
    from lm_eval.api.registry import METRIC_REGISTRY

    entries = config.get("metric_list")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        if entry.get("hf_evaluate"):
            raise ConfigError(f"{_REFUSED}: {name}: metric_list hf_evaluate loads a metric script: refused")
        metric = entry.get("metric")
        if isinstance(metric, str) and metric not in METRIC_REGISTRY:
            raise ConfigError(f"{_REFUSED}: {name}: metric {metric!r} is not one lm-eval registers "
                              f"(it would load a script through the evaluate package): refused")


def _screen_prompt(name: Path, config: dict[str, Any]) -> None:
    """use_prompt from lm-eval's prompt registry only (lm_eval.prompts.get_prompt reads any
    'file.yaml:name' with yaml.full_load, unscreened)."""
    if "use_prompt" not in config or config["use_prompt"] is None:
        return
    from lm_eval.prompts import PROMPT_REGISTRY

    value = config["use_prompt"]
    category = value.split(":")[0] if isinstance(value, str) and value.count(":") == 1 else None
    if category != "promptsource" and category not in PROMPT_REGISTRY:
        raise ConfigError(f"{_REFUSED}: {name}: use_prompt {str(value)[:200]!r} is not a name of lm-eval's prompt "
                          f"registry (promptsource:<name> or one of {sorted(PROMPT_REGISTRY)}:<name>); "
                          f"a prompt file is read unscreened: refused")


def _screen_config(name: Path, config: Any) -> None:
    """Every mapping of the YAML (the task, and inline tasks in a group's `task:` list)."""
    pending = [config]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            _screen_metrics(name, value)
            _screen_prompt(name, value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


class ScreenedCopy:
    """The include paths' task YAML, copied (same layout) into a private temporary directory
    (removed with this object) and screened; `roots` are what lm-eval may read."""

    def __init__(self, directories: list[Path]):
        self._temporary = tempfile.TemporaryDirectory(prefix="kubetune-lm-eval-")
        top = Path(self._temporary.name).resolve()
        self.roots = [top / str(number) for number in range(len(directories))]
        self._sources = dict(zip(self.roots, directories))
        self.originals: dict[Path, Path] = {}  # copy -> the file it was copied from (for messages)
        self._trusted, self._seen = lm_eval_tasks_dir(), set()
        files = [(root, directory, path.relative_to(directory)) for root, directory in self._sources.items()
                 for path in sorted(directory.glob("**/*.yaml")) if not _IGNORE_DIRS & set(path.parts)]
        if len(files) > MAX_YAML_FILES:
            raise ConfigError(f"{_REFUSED}: {len(files)} YAML files, more than {MAX_YAML_FILES}")
        for root, _, relative in files:
            self._copy(root, relative)
        for root, _, relative in files:
            self._screen(root / relative, root)

    def _copy(self, root: Path, relative: Path) -> Path:
        """Reads the original once (bounded) and writes the copy lm-eval will read."""
        original, copy = self._sources[root] / relative, root / relative
        if len(self.originals) >= MAX_YAML_FILES:
            raise ConfigError(f"{_REFUSED}: more than {MAX_YAML_FILES} YAML files")
        try:
            with original.open("rb") as file:
                data = file.read(MAX_YAML_BYTES + 1)
        except OSError as error:
            raise ConfigError(f"{_REFUSED}: {original}: not a readable task YAML: {str(error)[:300]}") from None
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError(f"{_REFUSED}: {original}: larger than {MAX_YAML_BYTES} bytes: refused")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
        self.originals[copy] = original
        return copy

    def _screen(self, copy: Path, root: Path) -> None:
        """ConfigError unless the copy (and every file it includes) is plain data."""
        if copy in self._seen:
            return
        self._seen.add(copy)
        name = self.originals[copy]
        try:
            config = yaml.load(copy.read_text(encoding="utf-8"), Loader=_ScreeningLoader)  # noqa: S506 (a SafeLoader)
        except _Refused as error:
            raise ConfigError(f"{_REFUSED}: {name}: {error}: refused") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"{_REFUSED}: {name}: not a readable task YAML: {str(error)[:300]}") from None
        if not isinstance(config, dict):
            return  # lm-eval skips it too
        _screen_config(name, config)
        includes = config.get("include") or []
        for include in includes if isinstance(includes, list) else [includes]:
            target = self._included(copy, root, str(include), name)
            if target is not None:
                self._screen(target, root)

    def _included(self, copy: Path, root: Path, include: str, name: Path) -> Optional[Path]:
        """The copy an `include:` resolves to (copied now if not yet); None for lm-eval's own YAML."""
        target = Path(include)
        if target.is_absolute() and target.resolve().is_relative_to(self._trusted):
            return None  # lm-eval's own registry YAML: installed code, not the tenant's
        resolved = (copy.parent / target).resolve()
        if target.is_absolute() or not resolved.is_relative_to(root) or resolved == root:
            raise ConfigError(f"{_REFUSED}: {name}: include {include[:200]!r} is outside the include path "
                              f"{self._sources[root]} (only task YAML under lmEval.includePath is read): refused")
        return resolved if resolved in self.originals else self._copy(root, resolved.relative_to(root))

    def cleanup(self) -> None:
        self._temporary.cleanup()


def screened_copy(directories: list[Path]) -> Optional[ScreenedCopy]:
    """The screened private copy of `directories`' task YAML; None when there are none."""
    return ScreenedCopy(directories) if directories else None
