"""The MPI engine and world: the only package of hpcml that imports mpi4py."""
