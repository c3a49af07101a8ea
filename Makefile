# The two commands of the quick start: `make run` and `make test`.
.PHONY: run test lint bench

run:
	@scripts/bootstrap.sh run
	.venv/bin/gridline serve

test:
	@scripts/bootstrap.sh dev
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check .
