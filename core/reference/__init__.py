"""Reference data: importing grids, workers and households from a district office's files, and
the generated demo district."""
