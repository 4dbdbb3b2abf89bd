"""Finding a workflow's code: a built-in name, an importable ``module:Class``, or ``path/to/file.py:Class``.

A run records where its workflow came from (the run's ``workflow_ref``) so that resume, replay and
fork load the same code again: the built-in name, ``module:Class``, or the absolute path of the
file and the class in it, so that a command from another working directory finds it.

A file is loaded as a module of its own under a name made from its path (never ``__main__``,
so its ``if __name__ == "__main__":`` block does not run), and registered in ``sys.modules``
under that name, which pydantic needs to resolve the annotations of its models. Its folder is on
``sys.path`` only while the file runs, so that it imports its sibling modules as it would under
``python file.py``; nothing is left on ``sys.path`` afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from maker.errors import UserError
from maker.workflows import BUILTIN

if TYPE_CHECKING:
    from maker.dsl import Workflow
    from maker.store import RunRecord

__all__ = ["resolve_workflow", "workflow_ref", "canonical_ref", "is_file_ref", "recorded_workflow", "load_file"]

_FILE_MODULE = "maker_workflow_file_"
"""Prefix of the module name a workflow file is loaded under (followed by a digest of its path)."""

_loaded: dict[str, tuple[tuple[int, int], ModuleType]] = {}
"""path -> ((mtime_ns, size), module): a file is run once per process unless it changes on disk."""


def is_file_ref(ref: str) -> bool:
    """Whether ``ref`` names a file (``dir/wf.py:Class``, ``wf.py:Class``) rather than a module or a built-in."""
    where, sep, _ = ref.rpartition(":")
    return bool(sep) and (where.endswith(".py") or "/" in where or os.sep in where)


def canonical_ref(ref: str) -> str:
    """What a run records for ``ref``: a file by its absolute path, anything else as given."""
    if not is_file_ref(ref):
        return ref
    where, _, attr = ref.rpartition(":")
    return f"{_abspath(where)}:{attr}"


def resolve_workflow(ref: str) -> type[Workflow[Any, Any]]:
    """A built-in workflow by name, ``package.module:Class``, or ``path/to/file.py:Class``."""
    if ref in BUILTIN:
        return BUILTIN[ref]
    if ":" not in ref:
        hint = f"; a file is given as {ref}:ClassName" if ref.endswith(".py") else ""
        raise UserError(
            f"unknown workflow {ref!r}; built in: {', '.join(BUILTIN)} "
            f"(or give module:Class or path/to/file.py:Class){hint}"
        )
    where, _, attr = ref.rpartition(":")
    if not attr:
        raise UserError(f"workflow {ref!r}: name the class after the colon, e.g. {where}:MyWorkflow")
    if is_file_ref(ref):
        path = _abspath(where)
        missing = (
            f"workflow file {path} does not exist; give the path of the .py file that defines "
            f"the workflow (a run keeps the path it was started with: put the file back there)"
        )
        return _workflow_in(load_file(path, "workflow file", missing), attr, f"{path}:{attr}", path)
    # Like other runners of user code (uvicorn, celery): modules in the working directory are found.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(where)
    except ImportError as exc:
        raise UserError(f"cannot load workflow {ref!r}: {exc}") from None
    return _workflow_in(module, attr, ref, f"module {where}")


def workflow_ref(wf_cls: type[Workflow[Any, Any]]) -> str:
    """How a run records where ``wf_cls`` is: a built-in name, ``module:Class``, or ``/abs/path.py:Class`` for a
    class loaded from a file (or defined in the script being run, which is loaded as a file later)."""
    if BUILTIN.get(wf_cls.name) is wf_cls:
        return wf_cls.name
    mod = wf_cls.__module__
    file = getattr(sys.modules.get(mod), "__file__", None)
    if file and (mod == "__main__" or mod.startswith(_FILE_MODULE)):
        return f"{_abspath(file)}:{wf_cls.__qualname__}"
    return f"{mod}:{wf_cls.__qualname__}"


def recorded_workflow(record: RunRecord) -> type[Workflow[Any, Any]]:
    """The workflow class a recorded run was made by, loaded again from where the run says it is."""
    ref = record.workflow_ref or record.workflow
    try:
        return resolve_workflow(ref)
    except UserError as exc:
        raise UserError(f"run {record.run_id} was made by workflow {ref}, which cannot be loaded: {exc}") from None


def _abspath(where: str) -> str:
    return os.path.abspath(os.path.expanduser(where))


def load_file(path: str, what: str, missing: str) -> ModuleType:
    """The Python file at ``path`` (absolute) as a module: the running script itself when it is that file, else
    loaded once while it is unchanged, with its folder on ``sys.path`` while it loads (so its sibling modules import
    as under ``python file.py``). ``what`` names it in errors (``workflow file``); ``missing`` is the error when
    there is no such file."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main is not None and main_file and _abspath(main_file) == path:
        return main  # the script running now: its own classes, not a second copy of them
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(missing) from None
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read: {exc}") from None
    key = (st.st_mtime_ns, st.st_size)
    cached = _loaded.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    name = _FILE_MODULE + hashlib.blake2b(path.encode(), digest_size=8).hexdigest()
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{what} {path} is not a Python source file (give a .py file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = os.path.dirname(path)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise UserError(f"{what} {path} failed to load: {type(exc).__name__}: {exc}") from exc
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    _loaded[path] = (key, module)
    return module


def _workflow_in(module: ModuleType, attr: str, ref: str, where: str) -> type[Workflow[Any, Any]]:
    from maker.dsl import Workflow

    try:
        obj = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        found = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, Workflow) and v is not Workflow and v.__module__ == module.__name__
        )
        raise UserError(
            f"cannot load workflow {ref!r}: {where} has no {attr!r}; "
            f"its workflow classes: {', '.join(found) or '(none)'}"
        ) from None
    if isinstance(obj, type) and issubclass(obj, Workflow) and obj is not Workflow:
        return obj
    raise UserError(f"{ref!r} is not a maker Workflow subclass (got {type(obj).__name__})")
