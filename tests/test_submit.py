"""Running the nightly job on a Ray cluster: the configs of cluster/ and ``ray job submit``.

The fast tests read cluster/ and hold it to pyproject.toml: one Ray version
everywhere (a driver and a cluster on different Rays do not talk), every
entrypoint the nightly job with arguments it accepts, every pod with the S3
credentials and the compilation cache.  The slow test submits the job for real
to a Ray head started with ``ray start``.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBE = ["rayjob.yaml", "raycluster.yaml"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _ray_pin() -> str:
    pins = [dep for dep in _pyproject()["project"]["dependencies"] if re.match(r"ray\b", dep)]
    assert len(pins) == 1, pins
    match = re.fullmatch(r"ray\[default\]==(\d+\.\d+\.\d+)", pins[0])
    assert match, f"pyproject.toml must pin ray exactly (ray[default]==X.Y.Z), not {pins[0]!r}"
    return match.group(1)


def _yaml(name: str):
    return yaml.safe_load((CLUSTER / name).read_text())


def _walk(node, key: str):
    """Every value stored under ``key`` anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


# Where a Ray version can be written in cluster/, as regexes whose group 1 is the version.
RAY_VERSION_PATTERNS = [
    r"rayproject/ray(?:-ml)?:(\d+\.\d+\.\d+)",          # Ray's images (image:, FROM)
    r"[\w./-]+/canopy:[\w.]+-ray(\d+\.\d+\.\d+)",       # our image, built on Ray's
    r"rayVersion:\s*[\"']?(\d+\.\d+\.\d+)",             # KubeRay
    r"\bray(?:\[[\w,]+\])?==(\d+\.\d+\.\d+)",           # pip pins
    r"ray\.__version__\s*==\s*[\"'](\d+\.\d+\.\d+)",    # image and node self-checks
]


def _ray_versions(text: str) -> list[str]:
    return [m.group(1) for pattern in RAY_VERSION_PATTERNS for m in re.finditer(pattern, text)]


# --- one Ray version ---------------------------------------------------------

def test_pyproject_pins_the_installed_ray():
    ray = pytest.importorskip("ray")
    assert ray.__version__ == _ray_pin()


@pytest.mark.parametrize("name", sorted(p.name for p in CLUSTER.iterdir() if p.is_file()))
def test_every_ray_version_in_cluster_is_the_pin(name):
    text = (CLUSTER / name).read_text()
    if name.endswith((".yaml", ".yml")):
        list(yaml.safe_load_all(text))          # parses
    versions = _ray_versions(text)
    for tag in re.findall(r"rayproject/ray[\w-]*:([\w.-]+)", text):   # :latest, :nightly...
        assert tag == _ray_pin() or tag.startswith(f"{_ray_pin()}-"), f"{name}: rayproject/ray:{tag}"
    if name in {"jax-cache-pvc.yaml", "runtime_env.yaml"}:
        assert not versions                     # no Ray here: the cluster's own is used
    else:
        assert versions, f"{name} names no Ray version"
    assert set(versions) <= {_ray_pin()}, f"{name}: {sorted(set(versions))} != {_ray_pin()}"


@pytest.mark.parametrize("name", KUBE + ["launcher.yaml"])
def test_every_image_is_built_on_the_pinned_ray(name):
    images = [image for doc in yaml.safe_load_all((CLUSTER / name).read_text())
              for image in _walk(doc, "image")]
    assert images
    for image in images:
        assert _ray_versions(image) == [_ray_pin()], image


def test_dockerfile_builds_on_the_pinned_ray():
    lines = (CLUSTER / "Dockerfile").read_text().splitlines()
    base = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert base == [f"rayproject/ray:{_ray_pin()}-py311"]
    kube_images = {image for name in KUBE for image in _walk(_yaml(name), "image")}
    assert all(image.endswith(f"-ray{_ray_pin()}") for image in kube_images)


def test_the_regexes_find_what_they_should():
    pin = "2.60.0"
    text = (f"image: rayproject/ray:{pin}-py311\nrayVersion: '{pin}'\n"
            f"pip install 'ray[default]=={pin}'\nimage: ghcr.io/x/canopy:0.1.0-ray{pin}\n"
            f"assert ray.__version__ == '{pin}'")
    assert _ray_versions(text) == [pin] * 5
    assert _ray_versions("image: rayproject/ray:2.9.3-py311") == ["2.9.3"]


# --- entrypoints --------------------------------------------------------------

def _nightly_args(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "jobs.nightly"], command
    return argv[3:]


def test_rayjob_runs_the_nightly_job_on_s3():
    job = _yaml("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    args = _nightly_args(job["spec"]["entrypoint"])
    from jobs.nightly import parse_args
    parsed = parse_args(args)
    assert parsed.book.startswith("s3://") and parsed.out.startswith("s3://")
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_readme_commands_name_the_nightly_job():
    """Every ``-- python -m ...`` after ``ray job submit`` in cluster/ and the README is the nightly job."""
    texts = [(CLUSTER / name).read_text() for name in sorted(os.listdir(CLUSTER))]
    texts.append((ROOT / "README.md").read_text())
    commands = [m.group(1) for text in texts
                for m in re.finditer(r"-- (python -m [\w.]+[^\n\\]*)", text)]
    assert commands
    for command in commands:
        assert command.split()[:3] == ["python", "-m", "jobs.nightly"], command


# --- KubeRay ------------------------------------------------------------------

def _cluster_spec(name: str) -> dict:
    doc = _yaml(name)
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize("name", KUBE)
def test_kuberay_cluster_has_head_and_cpu_workers(name):
    spec = _cluster_spec(name)
    assert spec["rayVersion"] == _ray_pin()
    groups = spec["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu"]
    assert groups[0]["minReplicas"] <= groups[0]["replicas"] <= groups[0]["maxReplicas"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in groups]
    for pod in pods:
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["limits"]["memory"]
            env = {e["name"]: e for e in container["env"]}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "canopy-s3", "key": key}
            cache = env["JAX_COMPILATION_CACHE_DIR"]["value"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert cache in mounts and mounts[cache] in volumes
            assert set(mounts.values()) <= volumes


def test_rayjob_runtime_env_sets_the_compilation_cache():
    runtime_env = yaml.safe_load(_yaml("rayjob.yaml")["spec"]["runtimeEnvYAML"])
    head = _cluster_spec("rayjob.yaml")["headGroupSpec"]["template"]["spec"]["containers"][0]
    mounted = {m["mountPath"] for m in head["volumeMounts"]}
    assert runtime_env["env_vars"]["JAX_COMPILATION_CACHE_DIR"] in mounted


def test_cache_claim_is_the_one_the_pods_mount():
    claim = _yaml("jax-cache-pvc.yaml")
    assert claim["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in claim["spec"]["accessModes"]
    claims = {c for name in KUBE for c in _walk(_yaml(name), "claimName")}
    assert claims == {claim["metadata"]["name"]}


# --- the cluster launcher and the runtime environment --------------------------

def test_launcher_config_is_valid_for_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml("launcher.yaml")
    validate_config(prepare_config(config))     # Ray's own schema for `ray up`
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    assert len(config["available_node_types"]) >= 2          # head + workers
    assert config["file_mounts"]["~/canopy"] == "."
    assert any(re.search(r"pip install .*~/canopy", c) for c in config["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("JAX_COMPILATION_CACHE_DIR" in c for c in config[key]), key


def test_runtime_env_ships_the_checkout_and_the_dependencies():
    from ray.runtime_env import RuntimeEnv

    env = _yaml("runtime_env.yaml")
    RuntimeEnv(**env)                           # Ray accepts every field
    assert env["working_dir"] == "."
    wanted = [dep for dep in _pyproject()["project"]["dependencies"] if not re.match(r"ray\b", dep)]
    assert env["pip"]["packages"] == wanted, "runtime_env.yaml pip must equal pyproject's deps less ray"
    assert env["env_vars"]["JAX_COMPILATION_CACHE_DIR"]


# --- ray job submit, for real -------------------------------------------------

def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on loopback (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for_dashboard(url: str, token: str, head: subprocess.Popen, log: Path, seconds=120):
    deadline = time.monotonic() + seconds
    request = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    while True:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the Ray dashboard at {url} did not answer in {seconds} s:\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _stop(head: subprocess.Popen) -> None:
    """Stop the Ray this test started, and nothing else.

    ``ray stop`` would kill every Ray process of this user on the machine,
    other test sessions' included; ``ray start --block`` instead shuts its own
    node down on SIGTERM, and its process group holds what it started.
    """
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ray_job_submit_runs_the_nightly_job(tmp_path):
    """``ray job submit --working-dir .`` of the nightly job to a head made by ``ray start``.

    The head is a Ray of its own (own ports, own temp dir, token auth on), a
    subprocess apart from the session's ``ray_session``; this test never calls
    ``ray.init`` in the pytest process.  Run it on its own with
    ``.venv/bin/python -m pytest -q -m slow tests/test_submit.py``.
    """
    from engine.book import synth
    from engine.book.runs import read_run
    from engine.book.storage import read_book
    from engine.contract.schema import Col
    from engine.review.check import check_run

    book_uri, out = str(tmp_path / "book"), str(tmp_path / "runs")
    synth.generate(book_uri, 60, seed=23)
    book = read_book(book_uri)

    bin_dir = Path(sys.executable).parent
    token = secrets.token_hex(32)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    (gcs, dashboard, client, agent_http, agent_grpc, metrics, runtime_env_agent,
     node_manager, object_manager) = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="canopy-ray-", dir="/tmp")   # short: Ray's socket paths
    log = tmp_path / "ray-start.log"
    with open(log, "wb") as log_file:
        head = subprocess.Popen(
            [str(bin_dir / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={gcs}", "--num-cpus=2", "--object-store-memory=400000000",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
             f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
             f"--runtime-env-agent-port={runtime_env_agent}", f"--node-manager-port={node_manager}",
             f"--object-manager-port={object_manager}", f"--temp-dir={temp_dir}",
             "--disable-usage-stats"],
            env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        _wait_for_dashboard(address, token, head, log)
        submit = subprocess.run(
            [str(bin_dir / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
             "--", "python", "-m", "jobs.nightly", "--book", book_uri, "--out", out],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=1500)
        output = submit.stdout + submit.stderr
        assert submit.returncode == 0, output[-6000:]
        assert "succeeded" in output, output[-6000:]

        tables, manifest = read_run(out, book.as_of)
        assert manifest["rows"]["accounts"] == tables["accounts"].num_rows == book.accounts.num_rows
        assert sorted(tables["accounts"].column(Col.account_id).to_pylist()) == sorted(
            book.accounts.column(Col.account_id).to_pylist())
        violations = check_run(book.tables, book.as_of, tables, book.rejected)
        assert violations.num_rows == 0, violations.to_pylist()[:10]
    finally:
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
