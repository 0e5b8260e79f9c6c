"""Pure logic: task grid, fitting and scoring of one task, ``cv_results_``, costs and
scheduling, thread budgets and progress. No MPI and no subprocesses here."""
