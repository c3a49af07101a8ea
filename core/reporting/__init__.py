"""Reporting: what managers read, the three rates by grid, category or worker, the periodic
reports, and quarterly scores."""
