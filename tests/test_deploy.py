"""The Docker deployment, tested without a Docker engine.

Linters and schema checks of Dockerfile, compose files and nginx.conf run in `.ci/check-deploy`.
Here: what those files promise at run time. The image's own command, with the environment its
Dockerfile gives it, must start a ready server outside Docker; the health check must tell ready
from not ready; nginx, configured from deploy/nginx.conf, must carry HTTP and WebSocket traffic to
replicas; and the build context must hold everything the Dockerfile copies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import yaml

from service.process import LOADING
from service.settings import Settings

from .conftest import make_test_store

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
# Generous bounds on a loaded 2-core machine, not speed assertions. A replica must be alive (/healthz)
# within the first; it may then take up to the second to load, as long as /readyz says it is loading.
ALIVE_DEADLINE_S = 120
LOAD_DEADLINE_S = 900



def deploy_script(name: str) -> ModuleType:
    """A script of deploy/ (not a package: scripts live next to the configs they serve), imported."""
    spec = importlib.util.spec_from_file_location(f"vsod_deploy_{name}", REPO / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nginx_local = deploy_script("nginx_local")
ComposeLoader = deploy_script("validate_compose").ComposeLoader

SETTINGS_ENV = {f"VSOD_{name.upper()}" for name in Settings.model_fields}


# ------------------------------------------------------------------ Dockerfile, read as Docker does


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[list[str], str, str | None]] = field(default_factory=list)  # sources, dest, --from
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    healthcheck: list[str] | None = None
    user: str | None = None


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    joined: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # comment lines inside a continuation
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        joined.append((keyword.upper(), rest.strip()))
        current = ""
    return joined


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"use the exec (JSON) form so signals reach the process: {arguments}"
    return json.loads(arguments)


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for keyword, rest in instructions(text):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = expand(parts[0], args)
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stage = Stage(name, base)
            parent = next((s for s in stages if s.name == base), None)
            if parent:  # a stage built on another stage inherits its files and image config
                stage.env, stage.copies = dict(parent.env), list(parent.copies)
                stage.cmd, stage.entrypoint = parent.cmd, parent.entrypoint
                stage.healthcheck, stage.user = parent.healthcheck, parent.user
            stages.append(stage)
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stages[-1].env[key] = expand(value, stages[-1].env)
        elif keyword in ("COPY", "ADD"):
            words = shlex.split(rest)
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            stages[-1].copies.append((paths[:-1], paths[-1], flags.get("from")))
        elif keyword == "CMD":
            stages[-1].cmd = exec_form(rest)
        elif keyword == "ENTRYPOINT":
            stages[-1].entrypoint = exec_form(rest)
            stages[-1].cmd = None  # Docker resets an inherited CMD when ENTRYPOINT is set
        elif keyword == "HEALTHCHECK":
            stages[-1].healthcheck = exec_form(rest[rest.index("CMD") + 3 :].strip())
        elif keyword == "USER":
            stages[-1].user = rest
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def image(stages: list[Stage]) -> Stage:
    """The default target: the last stage, the one `docker build .` produces."""
    return stages[-1]


def test_targets_gpu_by_default_and_cpu(stages: list[Stage]) -> None:
    names = [stage.name for stage in stages]
    assert names[-1] == "gpu", "gpu must be the last stage, so that a plain `docker build .` builds it"
    cpu, gpu = (next(s for s in stages if s.name == name) for name in ("cpu", "gpu"))
    for stage in (cpu, gpu):
        assert stage.base == "runtime"
        assert stage.user and stage.user.split(":")[0] not in ("0", "root"), "the service must not run as root"
        assert stage.healthcheck == ["vsod-healthcheck"]
        assert (stage.entrypoint or []) + (stage.cmd or []) == ["vsod", "serve"]
        assert stage.env["VSOD_HOST"] == "0.0.0.0", "inside a container the server must listen on every interface"
        (venv_from,) = [source for _, dest, source in stage.copies if dest == "/opt/venv"]
        assert venv_from == f"venv-{stage.name}", f"{stage.name} copies the wrong virtual environment"
    runtime_base = next(s for s in stages if s.name == "runtime").base
    assert runtime_base == next(s for s in stages if s.name == "wheel").base, "every stage builds on one Python image"


def test_environment_names_are_settings(image: Stage) -> None:
    """Every VSOD_* given to the service exists in service/settings.py; compose's own knobs do not.

    A typo (VSOD_REDIS_URI) would otherwise be ignored silently, and a compose variable that is
    also a setting name would confuse what configures what.
    """
    compose = yaml.load((REPO / "docker-compose.yml").read_text(), Loader=ComposeLoader)
    given = {key for key in image.env if key.startswith("VSOD_")}
    for name in ("api", "train"):
        given |= {key for key in compose["services"][name].get("environment", {}) if key.startswith("VSOD_")}
    for override in ("compose.cpu.yml", "compose.gpu1.yml"):
        text = (REPO / "deploy" / override).read_text()
        for service in yaml.load(text, Loader=ComposeLoader)["services"].values():
            given |= {key for key in service.get("environment", {}) if key.startswith("VSOD_")}
    assert given <= SETTINGS_ENV, f"not settings of the service: {sorted(given - SETTINGS_ENV)}"

    compose_text = "".join(
        path.read_text() for path in (REPO / "docker-compose.yml", *sorted((REPO / "deploy").glob("compose.*.yml")))
    )
    knobs = set(re.findall(r"\$\{(VSOD_\w+?)(?::?-[^}]*)?\}", compose_text))
    assert knobs, "expected the compose files to read VSOD_* variables on the host"
    assert not knobs & SETTINGS_ENV, f"compose variables named like service settings: {sorted(knobs & SETTINGS_ENV)}"
    # The service's settings are listed once, in the README's generated table (tests/test_docs.py);
    # the compose files' own knobs and every setting the image or compose sets are described here.
    docs = (REPO / "docs" / "deployment.md").read_text()
    undocumented = sorted(name for name in knobs | given if f"`{name}`" not in docs)
    assert not undocumented, f"docs/deployment.md does not describe {undocumented}"


# ------------------------------------------------------------------ build context


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            patterns.append((keep, line.lstrip("!").strip("/")))
    return patterns


def glob_regex(pattern: str) -> str:
    """Docker's .dockerignore glob (Go's filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for keep, pattern in patterns:
        if any(re.fullmatch(glob_regex(pattern), prefix) for prefix in prefixes):
            verdict = not keep
    return verdict


def test_build_context_holds_every_copied_file(stages: list[Stage]) -> None:
    """What the Dockerfile copies from the context is tracked by git and not excluded by .dockerignore.

    A clean clone is what CI and users build from: an untracked or ignored source breaks
    `docker build` (or bakes in an empty model store) even where a developer's tree has the files.
    """
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    patterns = dockerignore_patterns()
    sent = [path for path in tracked if not ignored(path, patterns)]
    for stage in stages:
        for sources, _, from_stage in stage.copies:
            if from_stage:
                continue
            for source in sources:
                prefix = source.rstrip("/")
                if prefix == "model_store":  # its content is checked by test_image_bakes_its_default_model
                    continue
                matched = [path for path in sent if path == prefix or path.startswith(prefix + "/")]
                assert matched, f"COPY {source}: nothing tracked by git reaches the build context"
    assert ignored(".git/config", patterns) and ignored("service/__pycache__/x.pyc", patterns)
    assert not ignored("service/settings.py", patterns)


def test_image_bakes_its_default_model(stages: list[Stage]) -> None:
    """`COPY model_store/` must carry the model the image serves when VSOD_MODEL is not given."""
    tracked = subprocess.run(
        ["git", "ls-files", "model_store"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    sent = [path for path in tracked if not ignored(path, dockerignore_patterns())]
    default_model = next(s for s in stages if s.name == "gpu").env.get("VSOD_MODEL", Settings.model_fields["model"].default)
    needed = {f"model_store/{default_model}/{name}" for name in ("manifest.json", "weights.safetensors")}
    assert needed <= set(sent), f"the image would not hold its default model: missing {sorted(needed - set(sent))}"


def test_wheel_stage_packages_both_commands(stages: list[Stage], tmp_path: Path) -> None:
    """The `wheel` stage, replayed on exactly the files it copies: the wheel it builds holds every
    module of both packages, and `vsod` and `vsod-train` run from it (not from this checkout)."""
    import zipfile

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    context = tmp_path / "src"
    for sources, dest, from_stage in next(s for s in stages if s.name == "wheel").copies:
        assert from_stage is None
        for source in sources:
            assert dest in ("./", f"./{source}"), f"COPY {source} {dest}: this replay keeps paths as they are"
            for path in tracked:
                if path == source or path.startswith(source.rstrip("/") + "/"):
                    (context / path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / path, context / path)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "wheels").glob("vsod-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
        names = set(archive.namelist())
    modules = {path for path in tracked if path.endswith(".py") and path.split("/")[0] in ("service", "distill")}
    assert modules <= names, f"modules left out of the wheel: {sorted(modules - names)}"
    (info,) = site.glob("vsod-*.dist-info")
    entry_points = (info / "entry_points.txt").read_text()
    assert "vsod = service.cli:main" in entry_points and "vsod-train = distill.cli:main" in entry_points
    assert "Provides-Extra: train" in (info / "METADATA").read_text()

    # This checkout's editable install must not fill in what the wheel lacks: drop its import hook.
    only_wheel = (
        "import runpy, sys; "
        "sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith('__editable__')]; "
        "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    for module in ("service.cli", "distill.cli"):
        usage = subprocess.run([sys.executable, "-c", only_wheel, module, "--help"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
        assert usage.returncode == 0 and "usage:" in usage.stdout, usage.stderr[-2000:]
        assert str(REPO) not in usage.stderr


# ------------------------------------------------------------------ the image's command, run outside Docker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_environment(image: Stage, overrides: dict[str, str]) -> dict[str, str]:
    """The container's environment, here: the image's ENV over this machine's, minus stray VSOD_*.

    PATH stays this machine's (the image's /opt/venv does not exist here), with this Python's
    scripts first so `vsod` is the one installed beside it.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("VSOD_")}
    env.update({key: value for key, value in image.env.items() if key != "PATH"})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(overrides)
    return env


def healthcheck_script(image: Stage) -> Path:
    """The file the image's HEALTHCHECK command is: follow its COPY into the image back to the repo."""
    command = Path(image.healthcheck[0]).name
    for sources, dest, from_stage in image.copies:
        if not from_stage and Path(dest).name == command:
            return REPO / sources[0]
    raise AssertionError(f"HEALTHCHECK {image.healthcheck}: no COPY puts it into the image")


def run_healthcheck(image: Stage, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(healthcheck_script(image)), *image.healthcheck[1:]],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )


class Replica:
    """The image's ENTRYPOINT + CMD as a process, its output in a log file."""

    def __init__(self, image: Stage, env: dict[str, str], log: Path) -> None:
        self.port = int(env["VSOD_PORT"])
        self.log = log
        command = [*(image.entrypoint or []), *(image.cmd or [])]
        executable = shutil.which(command[0], path=env["PATH"])
        assert executable, f"{command[0]} is not installed (pip install -e .)"
        with open(log, "wb") as out:
            self.process = subprocess.Popen([executable, *command[1:]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=log.parent)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response | None:
        if self.process.poll() is not None:
            pytest.fail(f"the server exited with {self.process.returncode}:\n{self.output()[-3000:]}")
        try:
            return httpx.get(self.url(path), timeout=5)
        except httpx.TransportError:
            return None

    def alive(self) -> None:
        """Poll /healthz until it answers 200: the process listens from its first moments."""
        deadline = time.monotonic() + ALIVE_DEADLINE_S
        while time.monotonic() < deadline:
            response = self.get("/healthz")
            if response is not None and response.status_code == 200:
                return
            time.sleep(0.2)
        pytest.fail(f"/healthz did not answer 200 within {ALIVE_DEADLINE_S} s:\n{self.output()[-3000:]}")

    def loaded(self) -> httpx.Response:
        """Once alive, poll /readyz until it no longer says `loading`; its answer then.

        No fixed deadline races the load against the machine's other work: the bound is a hang's,
        while /healthz keeps proving the process alive and /readyz says it is still loading.
        """
        self.alive()
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while time.monotonic() < deadline:
            response, alive = self.get("/readyz"), self.get("/healthz")
            assert alive is not None and alive.status_code == 200, "the process stopped answering /healthz while loading"
            if response is not None and not (response.status_code == 503 and response.json()["detail"].startswith(LOADING)):
                return response
            time.sleep(0.2)
        pytest.fail(f"still loading after {LOAD_DEADLINE_S} s:\n{self.output()[-3000:]}")

    def ready(self) -> httpx.Response:
        """The /readyz 200 of a loaded replica (fails with its answer and output otherwise)."""
        response = self.loaded()
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{self.output()[-3000:]}"
        return response

    def stop(self) -> None:
        """SIGTERM, as `docker stop` sends: the server must shut down cleanly within the grace period.

        uvicorn re-raises the signal once it has shut down, so the status is 0 or -SIGTERM (Docker's
        143): both are a clean stop; the log must show the application's shutdown completed.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"the server ignored SIGTERM for 30 s:\n{self.output()[-3000:]}")
        assert self.process.returncode in (0, -signal.SIGTERM), self.output()[-3000:]
        assert "Application shutdown complete" in self.output(), self.output()[-3000:]


@pytest.fixture
def replicas():
    started: list[Replica] = []
    yield started
    for replica in started:
        if replica.process.poll() is None:
            replica.process.kill()
            replica.process.wait()


@pytest.fixture(scope="module")
def image_store(tmp_path_factory: pytest.TempPathFactory, image: Stage) -> Path:
    """A store holding the test weights under the name the image serves by default."""
    name = image.env.get("VSOD_MODEL", Settings.model_fields["model"].default)
    return make_test_store(tmp_path_factory.mktemp("image_store"), name=name).root


def local(port: int, store: Path) -> dict[str, str]:
    """The only settings changed for a run outside Docker: where to listen and where the models are."""
    return {"VSOD_HOST": "127.0.0.1", "VSOD_PORT": str(port), "VSOD_MODEL_STORE": str(store)}


def test_image_command_and_environment_serve_a_ready_server(
    image: Stage, image_store: Path, replicas: list[Replica], tmp_path: Path
) -> None:
    env = image_environment(image, local(free_port(), image_store))
    replica = Replica(image, env, tmp_path / "server.log")
    replicas.append(replica)
    ready = replica.ready().json()
    assert ready["status"] == "ready" and ready["model"].startswith(f"{Settings.model_fields['model'].default}@")
    assert ready["cache"] == "memory", "with no VSOD_REDIS_URL a lone container keeps sessions in memory"

    check = run_healthcheck(image, env)
    assert check.returncode == 0, check.stderr
    replica.stop()
    check = run_healthcheck(image, env)
    assert check.returncode == 1 and "unreachable" in check.stderr


def compose_api_environment(*override_files: str) -> dict[str, str]:
    """The `api` service's environment as compose merges it: the base file, then the overrides."""
    env: dict[str, str] = {}
    for path in ("docker-compose.yml", *override_files):
        document = yaml.load((REPO / path).read_text(), Loader=ComposeLoader)
        env.update({key: str(value) for key, value in document["services"]["api"].get("environment", {}).items()})
    return env


def cpu_stack_environment(image: Stage, store: Path, redis_url: str, prefix: str, port: int) -> dict[str, str]:
    """What a replica of the CPU compose stack runs with, pointed at this machine's Redis and folders."""
    api = compose_api_environment("deploy/compose.cpu.yml")
    assert api["VSOD_REDIS_URL"].startswith("redis://redis:6379/"), api
    api["VSOD_REDIS_URL"] = redis_url
    # A namespace of its own on the shared test Redis, so no other test's keys or jobs mix in.
    api["VSOD_REDIS_PREFIX"] = prefix
    return image_environment(image, {**api, **local(port, store)})


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def test_readyz_and_health_check_fail_while_redis_is_unreachable(
    image: Stage, image_store: Path, replicas: list[Replica], tmp_path: Path
) -> None:
    closed = free_port()  # nothing listens here
    env = cpu_stack_environment(image, image_store, f"redis://127.0.0.1:{closed}/0", "vsod-deploy-test", free_port())
    replica = Replica(image, env, tmp_path / "server.log")
    replicas.append(replica)
    response = replica.loaded()
    assert response.status_code == 503 and "unreachable" in response.json()["detail"], response.text
    check = run_healthcheck(image, env)
    assert check.returncode == 1 and "503" in check.stderr and "unreachable" in check.stderr, check.stderr


# ------------------------------------------------------------------ nginx in front of replicas


def png_frame(seed: int) -> bytes:
    import cv2
    import numpy as np

    frame = np.full((72, 96, 3), 50, np.uint8)
    frame[20:50, 10 + 8 * seed : 40 + 8 * seed] = (230, 200, 40)
    ok, data = cv2.imencode(".png", frame)
    assert ok
    return data.tobytes()


def receive_json(ws, kind: str) -> dict:
    message = json.loads(ws.recv(timeout=60))
    assert message["type"] == kind, message
    return message


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (.ci/check-deploy installs it from Debian)")
@pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379 (.ci/run starts one)")
def test_nginx_balances_replicas_and_a_session_survives_its_replica(
    image: Stage, image_store: Path, replicas: list[Replica], tmp_path: Path
) -> None:
    """Two replicas of the CPU stack behind deploy/nginx.conf, sharing Redis, as compose runs them.

    A stream opened through nginx continues on the other replica after its own is stopped: the
    reconnect with the same session id resumes at the next frame.
    """
    import uuid

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    prefix = f"vsod-deploy-test-{uuid.uuid4().hex[:8]}"
    for index in range(2):
        env = cpu_stack_environment(image, image_store, "redis://127.0.0.1:6379/0", prefix, free_port())
        replicas.append(Replica(image, env, tmp_path / f"replica{index}.log"))
    for replica in replicas:
        assert replica.ready().json()["cache"] == "redis"

    lb_port = free_port()
    conf = nginx_local.write_local_copy([f"127.0.0.1:{r.port}" for r in replicas], f"127.0.0.1:{lb_port}", tmp_path / "nginx")
    with open(tmp_path / "nginx.log", "wb") as nginx_log:
        nginx = subprocess.Popen(
            ["nginx", "-e", "stderr", "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=nginx_log,
        )
    try:
        lb = f"127.0.0.1:{lb_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{lb}/lb-healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and nginx.poll() is None, (tmp_path / "nginx.log").read_text()
            time.sleep(0.2)

        # Plain HTTP round-robins over both replicas (each nginx worker keeps its own rotation, so
        # of 8 requests some worker serves at least 4, and 2 in a row already reach both).
        for index in range(8):
            assert httpx.get(f"http://{lb}/readyz?via=lb{index}", timeout=10).status_code == 200
        served = [replica.output().count("GET /readyz?via=lb") for replica in replicas]
        assert sum(served) == 8 and min(served) >= 1, f"requests through nginx per replica: {served}"

        # An upload far above nginx's default 1 MB body limit reaches the service, which answers
        # in JSON (it is not a video): nginx does not cut it off with its own 413 page.
        garbage = os.urandom(3 * 1024 * 1024)
        response = httpx.post(f"http://{lb}/v1/clips", files={"file": ("big.mp4", garbage, "video/mp4")}, timeout=60)
        assert response.status_code != 413 and "detail" in response.json(), response.text[:300]

        # A WebSocket stream through nginx: the Upgrade reaches the replica.
        session = f"deploy-{uuid.uuid4().hex[:12]}"
        with connect(f"ws://{lb}/v1/stream?session_id={session}", open_timeout=30) as ws:
            assert receive_json(ws, "session")["frame"] == 0
            ws.send(png_frame(0))
            header = receive_json(ws, "mask")
            assert header["frame"] == 0 and (header["width"], header["height"]) == (96, 72)
            assert isinstance(ws.recv(timeout=60), bytes)
            (serving,) = [r for r in replicas if f"session_id={session}" in r.output()]
            # The replica goes away (docker stop, scale-down): the stream is closed...
            serving.stop()
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=60)

        # ...and the client reconnects through nginx with the same id: the other replica resumes
        # the session from the state in Redis, at the next frame.
        (other,) = [r for r in replicas if r is not serving]
        with connect(f"ws://{lb}/v1/stream?session_id={session}", open_timeout=30) as ws:
            assert receive_json(ws, "session")["frame"] == 1
            ws.send(png_frame(1))
            assert receive_json(ws, "mask")["frame"] == 1
            assert isinstance(ws.recv(timeout=60), bytes)
        assert f"session_id={session}" in other.output()
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)
