"""An import-linter contract type: a ``_private`` name is private to the package that holds it.

import-linter's own contracts see modules, not names: ``from maker.trace import render_report`` (a private
module) and ``from maker.runs import _drive`` (a private name) look alike to them as imports of a module. This
contract reads every ``import`` and ``from ... import`` in the root package, lazy ones inside functions included,
and breaks when a module imports a private module or a private name from outside the package that owns it.

Who owns a private thing:

* a private module (``maker.engine._decider``, or anything below one) is owned by the package it sits in
  (``maker.engine``): only modules inside ``maker.engine`` may import it;
* a private name (``_drive``) in a module is owned by that module's package (in a package's ``__init__``, by the
  package itself).

So what one subpackage needs from another is public there (re-exported by its ``__init__``, or in a module without
a leading underscore). A private module at the root (``maker._rng``) is owned by ``maker``: the whole package may use
it. Dunder names (``__version__``) are not private.

Configured in ``.importlinter`` as ``type = private_names`` (registered under ``contract_types``); run by
``tools/lint_imports.sh`` (``make lint``, ``.ci/run``), which reads the tree ``tools/stage.sh`` lays out.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, output

__all__ = ["PrivateNamesContract", "Violation", "violations"]


def _private(segment: str) -> bool:
    return segment.startswith("_") and not (segment.startswith("__") and segment.endswith("__"))


def _owner_of_module(module: str) -> str | None:
    """The package that owns ``module`` when a segment of its path is private, else None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            return ".".join(parts[:i])
    return None


def _inside(importer: str, package: str) -> bool:
    return importer == package or importer.startswith(package + ".")


@dataclass(frozen=True)
class Violation:
    importer: str
    line: int
    imported: str
    """What was imported: a module, or ``module:name``."""
    owner: str
    """The package whose modules alone may import it."""

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}, private to {self.owner}"


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_violations(module: str, path: Path, modules: set[str], packages: set[str]) -> Iterator[Violation]:
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                owner = _owner_of_module(alias.name)
                if owner is not None and not _inside(module, owner):
                    yield Violation(module, node.lineno, alias.name, owner)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            owner = _owner_of_module(source)
            if owner is not None and not _inside(module, owner):
                yield Violation(module, node.lineno, source, owner)
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in modules:  # ``from package import _module``
                    owner = _owner_of_module(full)
                    if owner is not None and not _inside(module, owner):
                        yield Violation(module, node.lineno, full, owner)
                elif _private(alias.name):
                    holder = source if source in packages else source.rpartition(".")[0]
                    if not _inside(module, holder):
                        yield Violation(module, node.lineno, f"{source}:{alias.name}", holder)


def _source(module: str, top: Path) -> Path | None:
    """The file of ``module``, under ``top``, the folder of the root package as imported."""
    base = top.joinpath(*module.split(".")[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def violations(modules: set[str]) -> list[Violation]:
    """Every import of a private module or name from outside its owner, among ``modules``."""
    root = min(modules, key=len).split(".")[0]
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"cannot find the package {root!r}")
    top = Path(list(spec.submodule_search_locations)[0])
    packages = {m for m in modules if (src := _source(m, top)) is not None and src.name == "__init__.py"}
    found: list[Violation] = []
    for module in sorted(modules):
        path = _source(module, top)
        if path is not None:
            found.extend(_module_violations(module, path, modules, packages))
    return found


class PrivateNamesContract(Contract):
    """No module imports a ``_private`` module or name from outside the package that owns it."""

    type_name = "private_names"

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        found = violations(set(graph.modules))
        for v in found:
            output.verbose_print(verbose, str(v))
        return ContractCheck(kept=not found, warnings=[], metadata={"violations": [str(v) for v in found]})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["violations"]:
            output.print_error(line, bold=False)
            output.new_line()
        output.print(
            "Make what another package needs public where it lives: re-export it from the package's __init__ "
            "(and its __all__), or give it a name without a leading underscore."
        )
