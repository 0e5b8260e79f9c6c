"""pytest plugin: joblib's own backend tests (from the installed joblib) with ``"mpi"``.

Nothing of joblib is copied: the installed ``joblib.test.test_parallel`` is imported once
the backend is registered, ``"mpi"`` is added to the backend lists it parametrizes with
(``BACKENDS`` lists pick it up already through the registry), and only the test cases that
run with ``"mpi"`` are kept. :data:`EXCLUDED` lists those that do not apply, and why.
"""

from __future__ import annotations

import pytest

from hpcml.engines.mpi.joblib_backend import MPIBackend, register

register()  # before joblib's test module builds its lists from BACKENDS

import joblib.test.test_parallel as tp  # noqa: E402  (pytest --pyargs finds this module)

for name in ("PARALLEL_BACKENDS", "PROCESS_BACKENDS", "all_backends_for_context_manager"):
    if "mpi" not in getattr(tp, name):
        getattr(tp, name).append("mpi")

_LOKY_CHILD = ("'mpi' is named inside a loky worker process, where nothing registered it "
               "(a backend registered at run time exists only in the processes that "
               "imported hpcml.joblib)")
_MANAGER = ("passes multiprocessing.Manager proxies to the tasks: they authenticate with "
            "the authkey of rank 0's process tree, and MPI ranks are not its children")
_MEMMAP = ("checks loky's memory mapping of arrays (np.memmap in temp_folder); 'mpi' maps "
           "them from MPI shared memory instead (one copy per node)")

#: Test (a name, or a name with its parameters) -> why it does not apply to this backend.
EXCLUDED: dict[str, str] = {
    "test_nested_loop[loky-mpi]": _LOKY_CHILD,
    "test_nested_loop[back_compat_backend-mpi]": _LOKY_CHILD + " (its parent is a "
                                                 "process pool defined by the test module)",
    "test_backend_nesting_level[parallel_config-mpi-loky]": _LOKY_CHILD,
    "test_backend_nesting_level[parallel_backend-mpi-loky]": _LOKY_CHILD,
    "test_parallel_with_interactively_defined_functions": "runs 'mpi' in a fresh "
        "`python -c` interpreter that did not import hpcml.joblib (no MPI workers either)",
    "test_dispatch_multiprocessing": _MANAGER,
    "test_initializer_context": _MANAGER + "; initializer= is a process-pool option "
                                           "(refused by name)",
    "test_initializer_parallel": _MANAGER + "; initializer= is a process-pool option "
                                            "(refused by name)",
    "test_error_capture": "inspects the process pool (_pool/_workers) and expects it "
        "restarted after an error; MPI ranks stay (the errors themselves: test_backend_mpi)",
    "test_memmapping_leaks": _MEMMAP,
    "test_auto_memmap_on_arrays_from_generator": _MEMMAP,
    "test_parallel_unordered_generator_returns_fastest_first[mpi-2]": "its slow task "
        "(30 s) keeps a worker busy after the test (a rank cannot be killed like a loky "
        "process), so the [mpi-4] case, which runs at -n 3 and more, would find one "
        "worker fewer; [mpi-4] is the same check",
}


def _excluded(item: pytest.Item, workers: int) -> str | None:
    if workers < 2 and item.originalname == \
            "test_parallel_unordered_generator_returns_fastest_first":
        return "needs two tasks at once: -n 2 has one worker"
    return EXCLUDED.get(item.name) or EXCLUDED.get(item.originalname)


def _uses_mpi(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(v == "mpi" or isinstance(v, MPIBackend) for v in params.values()
               if isinstance(v, (str, MPIBackend)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        (keep if _uses_mpi(item) else drop).append(item)
    from hpcml.engines.mpi.joblib_backend import get_client

    client = get_client()
    workers = client.n_workers if client is not None else 0
    for item in keep:
        reason = _excluded(item, workers)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"not for a third-party backend: {reason}"))
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
