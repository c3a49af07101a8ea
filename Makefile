# The two commands of the quick start: `make run` and `make test`.
.PHONY: run test lint bench vendor-js

run:
	@scripts/bootstrap.sh run
	.venv/bin/gridline serve

# Tests run in up to 4 processes (pytest-xdist): most of the suite waits on real time
# (calls at real-time pace, subprocesses started and killed), not on the CPU.
test:
	@scripts/bootstrap.sh dev
	.venv/bin/python -m pytest -q -n auto --maxprocesses 4

lint:
	.venv/bin/ruff check .

# Re-vendor the console's JavaScript (htmx) from the npm registry; commit what it writes.
vendor-js:
	scripts/vendor-js.sh
