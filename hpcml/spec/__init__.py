"""The experiment spec: schema and parsing (:mod:`~hpcml.spec.schema`), data checks and
loading. Importing it loads neither numpy nor scikit-learn."""

from hpcml.spec.schema import (
    CVSpec,
    DataSpec,
    ExperimentSpec,
    ModelSpec,
    load_spec,
    parse_spec,
    precheck_spec,
)

__all__ = ["CVSpec", "DataSpec", "ExperimentSpec", "ModelSpec", "load_spec", "parse_spec",
           "precheck_spec"]
