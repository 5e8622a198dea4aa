"""The nightly job without Ray (engine.actors.local): in one process, where ``import ray`` fails, it
commits the same run as the Ray actors do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.actors import nightly
from engine.book import synth
from engine.book.runs import read_run
from engine.contract.config import Config, RunConfig
from engine.contract.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
#: Shards of at most 12 accounts; a loaded machine may take minutes to start the actors.
CONFIG = Config(run=RunConfig(shard_accounts=12, max_task_retries=2, actor_start_timeout=900))
#: A ``sitecustomize`` that makes every ``import ray`` fail, as on a node where Ray is not installed.
NO_RAY = textwrap.dedent('''
    import sys

    class NoRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"No module named {name!r} (hidden by the test)")
            return None

    sys.meta_path.insert(0, NoRay())
''')


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("book") / "book")
    synth.generate(path, 24, seed=5, bad_fraction=0.02)
    return path


def test_a_run_without_ray_commits_the_trades_of_the_ray_run(book, tmp_path, ray_session):
    ray_out, local_out = str(tmp_path / "ray"), str(tmp_path / "local")
    nightly.run_nightly(book, ray_out, CONFIG, progress=False, executor="ray")
    hook = tmp_path / "no-ray"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_RAY)
    (tmp_path / "canopy.toml").write_text(
        "[run]\nshard_accounts = 12\nmax_task_retries = 2\nactor_start_timeout = 900\n")
    script = textwrap.dedent(f'''
        import sys
        from jobs import nightly
        code = nightly.main(nightly.parse_args(["--book", {book!r}, "--out", {local_out!r},
                                                "--config", {str(tmp_path / "canopy.toml")!r}]))
        assert "ray" not in sys.modules, "ray was imported"
        sys.exit(code)
    ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ray_tables, _ = read_run(ray_out, synth.AS_OF)
    local_tables, manifest = read_run(local_out, synth.AS_OF)
    assert manifest["config"] == CONFIG.to_dict() and manifest["shards"]["count"] >= 2
    assert local_tables["trades"].num_rows > 0
    assert local_tables["trades"].equals(ray_tables["trades"])
    assert local_tables["accounts"].equals(ray_tables["accounts"])


def test_the_hook_really_hides_ray(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(NO_RAY)
    run = subprocess.run([sys.executable, "-c", "import ray"], env={**os.environ, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "hidden by the test" in run.stderr


def test_auto_chooses_ray_where_it_imports_and_an_unknown_executor_is_refused():
    assert nightly.choose_executor("auto") == "ray"
    assert nightly.choose_executor("local") == "local"
    with pytest.raises(ConfigError, match="use one of auto, ray, local"):
        nightly.choose_executor("dask")
