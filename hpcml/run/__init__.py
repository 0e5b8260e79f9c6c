"""One run of a spec as a pipeline of stages, with its journal, outputs, signals, per-fit
timeouts and the one rank entry point (:mod:`hpcml.run.rank`)."""
