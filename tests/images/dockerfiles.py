"""Reading the Dockerfiles under images/ and replaying a stage's install steps without a
container engine.

No engine builds the images here, so the tests replay the builder stage instruction by
instruction on this machine: ARG/ENV become the environment, WORKDIR and COPY act on a
temporary directory that stands in for the image's filesystem (absolute paths are mapped
into it), and each RUN line runs as written under /bin/sh, as `docker build` would run it.
The base image's only contribution is `python3.11` on PATH. So whatever the Dockerfile's
install lines say is what gets installed and tested.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
OPERATOR_DOCKERFILE = IMAGES / "operator" / "Dockerfile"
TRAINER_DOCKERFILE = IMAGES / "trainer" / "Dockerfile"
TRAINER_CUDA_DOCKERFILE = IMAGES / "trainer" / "Dockerfile.cuda"
REF_LABEL = "org.opencontainers.image.ref.name"
VERSION_LABEL = "org.opencontainers.image.version"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def torch_pin() -> str:
    """The torch version pyproject's trainer extra pins."""
    pins = [re.fullmatch(r"torch==([\w.]+)", r.replace(" ", "")) for r in pyproject()["project"]["optional-dependencies"]["trainer"]]
    found = [pin.group(1) for pin in pins if pin]
    assert len(found) == 1, "pyproject's trainer extra must pin torch exactly once"
    return found[0]


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # the rest of the (joined) line
    line: int  # where it starts, 1-based

    def exec_form(self) -> list[str] | None:
        """The JSON array of RUN/CMD/ENTRYPOINT ["a", "b"], or None for the shell form."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                return None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def pairs(self, keyword: str) -> dict[str, str]:
        """ENV or LABEL key=value pairs of this stage, later ones winning (values unexpanded)."""
        out: dict[str, str] = {}
        for instruction in self.all(keyword):
            out.update(parse_pairs(instruction.args))
        return out

    def arg_defaults(self) -> dict[str, str]:
        out = {}
        for instruction in self.all("ARG"):
            name, _, default = instruction.args.strip().partition("=")
            out[name] = _unquote(default)
        return out


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"{self.path}: no stage named {name!r}")

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def base_image(self, stage: Stage) -> str:
        """A stage's base with global ARGs expanded, following FROM <earlier stage>."""
        base = expand(stage.base, self.global_args)
        names = {s.name for s in self.stages}
        while base in names:
            base = expand(self.stage(base).base, self.global_args)
        return base


def _logical_lines(text: str):
    """(line number, text) of each instruction, continuation lines joined and comment lines
    (also those inside a continuation, which Docker drops) removed."""
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if not current:
            start = number
        if raw.rstrip().endswith("\\"):
            current.append(raw.rstrip()[:-1])
            continue
        current.append(raw)
        yield start, " ".join(part.strip() for part in current if part.strip())
        current = []
    if current:
        yield start, " ".join(part.strip() for part in current if part.strip())


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"{path}:{number}: only ARG may precede the first FROM"
            name, _, default = instruction.args.partition("=")
            global_args[name.strip()] = _unquote(default)
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, global_args, stages)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_pairs(args: str) -> dict[str, str]:
    """ENV/LABEL arguments: key=value pairs with shell-like quoting (legacy `ENV key value`
    too). Values keep their $VARIABLES for expand()."""
    if "=" not in args.split(None, 1)[0]:
        key, value = args.split(None, 1)
        return {key: _unquote(value)}
    out, position = {}, 0
    while position < len(args.rstrip()):
        match = _PAIR.match(args, position)
        assert match, f"not key=value pairs: {args[position:]!r}"
        out[match.group(1)] = _unquote(match.group(2)).replace('\\"', '"')
        position = match.end()
    return out


_PAIR = re.compile(r"""\s*([^\s=]+)=("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"']*)""")


_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<mod>:[-+][^}]*)?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def expand(value: str, env: dict[str, str]) -> str:
    """Docker's substitution in ENV/WORKDIR/COPY/FROM/LABEL: $X, ${X}, ${X:-word}, ${X:+word}."""
    def one(match: re.Match) -> str:
        name = match.group("braced") or match.group("bare")
        current = env.get(name, "")
        mod = match.group("mod")
        if mod and mod.startswith(":-"):
            return current or mod[2:]
        if mod and mod.startswith(":+"):
            return mod[2:] if current else ""
        return current

    return _VARIABLE.sub(one, value)


# --- .dockerignore -------------------------------------------------------------------------

def _glob_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i:end + 1]
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    """The root .dockerignore with Docker's rules: patterns in order, the last match wins, a
    `!` pattern re-includes, and a pattern matching a parent directory matches its files."""

    def __init__(self, root: Path = ROOT):
        self.rules: list[tuple[bool, re.Pattern]] = []
        path = root / ".dockerignore"
        for line in path.read_text().splitlines() if path.exists() else []:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((negate, _glob_regex(pattern)))

    def excluded(self, relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negate, regex in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negate
        return result


# --- replay --------------------------------------------------------------------------------

@dataclass
class Replay:
    """The outcome of replaying one stage: its environment (host paths) and the log."""
    env: dict[str, str]
    workdir: Path
    log: Path

    def path_of(self, variable: str) -> Path:
        return Path(self.env[variable])

    def command(self, name: str) -> str:
        """Where `name` resolves on the image's PATH; it must be the image's venv's own."""
        found = shutil.which(name, path=self.env["PATH"])
        assert found, f"{name} is not on the image's PATH"
        assert Path(found).is_relative_to(self.path_of("VIRTUAL_ENV")), f"{name} resolves outside the image's venv: {found}"
        return found


def replay_stage(dockerfile: Dockerfile, stage_name: str, filesystem: Path, python: str,
                 arg_overrides: dict[str, str] | None = None, timeout: float = 900) -> Replay:
    """Run stage `stage_name` of `dockerfile` on this machine with `filesystem` standing in
    for the image's root. `python` is the interpreter the base image provides as python3.11.

    The stage may hold ARG, ENV, WORKDIR, COPY (from the build context) and RUN; its RUN
    lines must reach image paths through the environment or the working directory (a
    literal absolute path in a RUN line would escape the stand-in filesystem)."""
    stage = dockerfile.stage(stage_name)
    filesystem.mkdir(parents=True, exist_ok=True)
    base_bin = filesystem / "base-image-bin"
    base_bin.mkdir(exist_ok=True)
    launcher = base_bin / "python3.11"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
    launcher.chmod(0o755)

    def image_path(value: str) -> str:
        """An absolute image path mapped into the stand-in root."""
        return str(filesystem / value.lstrip("/")) if value.startswith("/") else value

    def env_value(key: str, value: str, before: dict[str, str]) -> str:
        """Literal image paths in an ENV value mapped (each entry of a PATH-like list), then
        $VARIABLES expanded as Docker does."""
        if key.endswith("PATH"):
            return expand(":".join(image_path(part) for part in value.split(":")), before)
        return expand(image_path(value), before)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(base_bin), env.get("PATH", "")])
    overrides = arg_overrides or {}
    workdir = filesystem
    ignore = DockerIgnore()
    log = filesystem / f"{stage_name}.log"
    with log.open("w") as out:
        for instruction in stage.instructions:
            where = f"{dockerfile.path.relative_to(ROOT)}:{instruction.line}"
            if instruction.keyword == "ARG":
                name, _, default = instruction.args.partition("=")
                env[name.strip()] = overrides.get(name.strip(), _unquote(default))
            elif instruction.keyword == "ENV":
                # Docker expands every pair against the environment before this instruction.
                before = dict(env)
                for key, value in parse_pairs(instruction.args).items():
                    env[key] = env_value(key, value, before)
            elif instruction.keyword == "WORKDIR":
                target = expand(instruction.args, env)
                workdir = Path(image_path(target)) if target.startswith("/") else workdir / target
                workdir.mkdir(parents=True, exist_ok=True)
            elif instruction.keyword == "COPY":
                words = shlex.split(instruction.args)
                assert not any(w.startswith("--") for w in words), f"{where}: the builder copies from the context only"
                *sources, destination = [expand(w, env) for w in words]
                target = Path(image_path(destination)) if destination.startswith("/") else workdir / destination
                for source in sources:
                    assert not ignore.excluded(source), f"{where}: {source} is excluded by .dockerignore"
                    _copy_from_context(ROOT / source, source, target, destination.endswith("/") or len(sources) > 1, ignore)
            elif instruction.keyword == "RUN":
                command = instruction.exec_form() or ["/bin/sh", "-c", instruction.args]
                for prefix in ("/opt/", "/src", "/usr/", "/home/", "/workspace"):
                    assert prefix not in " ".join(command[2:] if command[0] == "/bin/sh" else command), (
                        f"{where}: RUN uses a literal image path ({prefix}...); use the environment or WORKDIR")
                out.write(f"### {where}: RUN {instruction.args}\n")
                out.flush()
                result = subprocess.run(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
                if result.returncode:
                    tail = log.read_text()[-4000:]
                    raise AssertionError(f"{where}: RUN {instruction.args} exited {result.returncode}\n{tail}")
            else:
                raise AssertionError(f"{where}: {instruction.keyword} has no place in stage {stage_name!r} (replay knows "
                                     "ARG, ENV, WORKDIR, COPY, RUN)")
    return Replay(env, workdir, log)


def _copy_from_context(source: Path, relative: str, target: Path, into_directory: bool, ignore: DockerIgnore) -> None:
    assert source.exists(), f"COPY source {relative} is not in the build context"
    if source.is_dir():
        # COPY dir dest copies the directory's contents, minus what .dockerignore excludes.
        for path in sorted(source.rglob("*")):
            inner = path.relative_to(source)
            if path.is_dir() or ignore.excluded(f"{relative.rstrip('/')}/{inner.as_posix()}"):
                continue
            (target / inner).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / inner)
    else:
        destination = target / source.name if into_directory or target.is_dir() else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


IMAGE_REFERENCE = re.compile(r"ghcr\.io/kubetune/[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)?")
