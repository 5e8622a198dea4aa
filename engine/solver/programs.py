"""Programs that outlive the process: the solver's jitted steps kept as exported StableHLO.

JAX's persistent compilation cache keeps a program's compiled code, but a
new process must still trace the Python function and lower it to MLIR
before it can look the code up.  For the interior-point chunk of one
direct-index shape that was 0.55 of the 0.97 s a new process spent making
it.  A night's actor meets each shape at several batch sizes, so the cost
repeats for every one of them.

Where a compilation cache directory is set (``JAX_COMPILATION_CACHE_DIR``,
or the what-if session's), :func:`persistent` keeps each program's export
(:mod:`jax.export`, tens of kB) in ``canopy-programs/`` inside that
directory.  It is keyed by the function, its static settings, the shapes
and dtypes of its arguments, the backend, the versions of JAX and a
fingerprint of the solver's source.  A later process deserializes the
export (milliseconds), lowers only a call to it, and fetches the compiled
code from the cache.  A damaged file is exported again.  Without a cache
directory, the functions are plain ``jax.jit``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jaxlib
from jax import export

from engine.solver import ipm
from engine.solver.types import ProblemBatch, SolverState

_log = logging.getLogger(__name__)

#: The folder of the exports inside the compilation cache directory.
FOLDER = "canopy-programs"

for _type in (ProblemBatch, SolverState, ipm.IPMState):
    export.register_namedtuple_serialization(_type, serialized_name=f"canopy.{_type.__name__}")


@functools.cache
def code_fingerprint() -> str:
    """A digest of what the exported programs are traced from: the solver's source, the config, JAX."""
    engine = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"jax {jax.__version__} jaxlib {jaxlib.__version__}".encode())
    for path in sorted([*engine.joinpath("solver").glob("*.py"), engine / "contract" / "config.py"]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_directory(root: str | os.PathLike | None = None) -> Path | None:
    """The folder of the exports in ``root`` (default: JAX's compilation cache directory).

    None where there is no such directory, or it is not on a local file
    system (a ``gs://`` cache): the programs are then traced as usual.
    """
    root = jax.config.jax_compilation_cache_dir if root is None else root
    if not root or "://" in str(root):
        return None
    return Path(root) / FOLDER


def use_cache(root: str | os.PathLike) -> None:
    """Keep this process's compiled programs (and :func:`persistent`'s exports) in ``root``.

    Every program is kept: a small one (a gather, a scatter) still takes 0.2–0.6 s to compile,
    per shape.  A directory JAX already uses is left as it is.
    """
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(root))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


#: The exports each persistent function holds in this process (see :func:`forget`).
_EXPORTS: list[dict] = []


def forget() -> None:
    """Drop this process's programs, compiled and exported: the next calls read them back as a new process would."""
    for exports in _EXPORTS:
        exports.clear()
    jax.clear_caches()


def persistent(fn: Callable | None = None, *, static_argnames: tuple[str, ...] = (),
               donate_argnums: tuple[int, ...] = ()):
    """``jax.jit(fn)``, whose programs a later process loads instead of tracing (see the module).

    ``static_argnames`` are hashable settings (a ``SolverConfig``), passed by
    name or position; every other argument is a pytree of arrays.  Calls
    dispatch as any jitted function's do; only when ``jax.jit`` traces (a new
    shape, or after ``jax.clear_caches``) is the export looked up: in this
    process, then in the folder, else made from ``fn`` and saved.
    """
    if fn is None:
        return functools.partial(persistent, static_argnames=static_argnames, donate_argnums=donate_argnums)
    signature = inspect.signature(fn)
    exports: dict[Any, export.Exported] = {}
    _EXPORTS.append(exports)

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        directory = cache_directory()
        if directory is None:
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        static = tuple((name, bound.arguments[name]) for name in static_argnames)
        names = [name for name in bound.arguments if name not in static_argnames]
        arrays = [bound.arguments[name] for name in names]
        leaves, tree = jax.tree_util.tree_flatten(arrays)
        avals = [x.aval for x in leaves]
        key = (tree, tuple((a.shape, a.dtype.str, a.weak_type) for a in avals), static)
        exported = exports.get(key)
        if exported is None:
            specs = jax.tree_util.tree_unflatten(
                tree, [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals])
            exported = exports[key] = _exported(directory, fn, names, specs, key)
        return exported.call(*arrays)

    return jax.jit(traced, static_argnames=static_argnames, donate_argnums=donate_argnums)


def _exported(directory: Path, fn: Callable, names: list[str], specs: list, key) -> export.Exported:
    """The export of ``fn`` for arguments like ``specs``, read from ``directory`` or made and saved there.

    ``key`` is (argument tree, shapes and dtypes, static settings as (name, value) pairs).
    """
    tree, signature, settings = key
    text = repr((fn.__module__, fn.__qualname__, code_fingerprint(), jax.default_backend(),
                 bool(jax.config.jax_enable_x64), str(tree), signature, settings))
    path = directory / f"{fn.__name__.lstrip('_')}-{hashlib.sha256(text.encode()).hexdigest()[:40]}.jax"
    exported = _load(path)
    if exported is None:
        def positional(*values):
            return fn(**dict(zip(names, values)), **dict(settings))

        exported = export.export(jax.jit(positional))(*specs)          # for this process's platform
        _save(path, exported.serialize())
    return exported


def _load(path: Path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.warning("could not read the program %s (%s); tracing it instead", path, exc)
        return None
    try:
        return export.deserialize(bytearray(data))
    except Exception as exc:            # noqa: BLE001 - any damage: the program is made again
        _log.warning("the program %s is damaged (%s: %s); exporting it again", path, type(exc).__name__, exc)
        return None


def _save(path: Path, data: bytearray) -> None:
    """Write ``path`` whole or not at all (a reader never sees part of it): a temporary file, then a rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(bytes(data))
        os.replace(temporary, path)
    except OSError as exc:
        _log.warning("could not keep the program %s (%s); the next process traces it again", path, exc)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


__all__ = ["FOLDER", "cache_directory", "code_fingerprint", "forget", "persistent", "use_cache"]
