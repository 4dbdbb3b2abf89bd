"""The public surface of ``maker``: exactly these names, each importable from the package; and the names its
``workflows`` and ``agents`` packages export."""

from __future__ import annotations

import maker

EXPORTS = [
    "DONE",
    "Done",
    "FormatError",
    "Microstep",
    "MicrostepCall",
    "RedFlag",
    "State",
    "Workflow",
    "Voting",
    "RunOptions",
    "RunSummary",
    "Progress",
    "start_run",
    "resume_run",
    "replay_run",
    "fork_run",
    "ReplayResult",
    "Store",
    "default_store_path",
    "MakerError",
    "UserError",
    "WorkflowDefinitionError",
    "AgentSpecError",
    "RunError",
    "StepUndecidedError",
    "WorkflowCodeError",
    "StoreError",
    "StoreCorruptError",
    "RunMismatchError",
    "RunNotFoundError",
    "NondeterminismError",
]


def test_the_package_exports_exactly_these_names() -> None:
    assert maker.__all__ == EXPORTS


def test_every_export_resolves_to_the_object_its_module_defines() -> None:
    from maker import dsl, engine, errors, runs, store, voting

    homes = [dsl, engine, errors, runs, store, voting]
    for name in EXPORTS:
        obj = getattr(maker, name)
        assert any(getattr(m, name, None) is obj for m in homes), f"maker.{name} is not its module's {name}"
    namespace: dict[str, object] = {}
    exec("from maker import *", namespace)
    assert set(EXPORTS) <= set(namespace)


def test_errors_share_one_root() -> None:
    for name in EXPORTS:
        obj = getattr(maker, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not maker.FormatError:
            assert issubclass(obj, maker.MakerError), name


def test_the_workflows_and_agents_packages_export_their_names() -> None:
    from maker import agents, workflows

    assert set(workflows.__all__) == {"Hanoi", "Addition", "Counting", "Solve", "BUILTIN", "same_answer"}
    assert {"Agent", "Backend", "GenerateRequest", "Sample", "SimulatedBackend", "make_agent"} <= set(agents.__all__)
    for name in [*workflows.__all__, *agents.__all__]:
        assert getattr(workflows if name in workflows.__all__ else agents, name) is not None
