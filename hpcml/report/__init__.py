"""``hpcml report``: one module per plot, each a pure function from a run's results to a
matplotlib figure, and a page that lays them out (Optuna's ``visualization`` is the model).

matplotlib is an optional extra: ``pip install 'hpcml[report]'``. Nothing is imported here,
so ``hpcml report`` can say so before any plot module loads it.
"""

__all__ = [
    # the data
    "data",
    # the plots
    "params", "heatmap", "folds", "rungs", "nested", "timeline",
    # the tables and the page
    "leaderboard", "page",
]
