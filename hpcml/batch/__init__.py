"""Parallel prediction: row blocks spread over ranks, readers and writers by file format."""
