"""Slurm: job scripts rendered by a pure function, cluster queries, and submitit jobs."""

from hpcml.slurm.render import render_sbatch, signal_lead, time_minutes, time_seconds

__all__ = ["render_sbatch", "signal_lead", "time_minutes", "time_seconds"]
