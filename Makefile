# The two commands of the quick start: `make run` and `make test`.
.PHONY: run test lint bench vendor-js

run:
	@scripts/bootstrap.sh run
	.venv/bin/gridline serve

test:
	@scripts/bootstrap.sh dev
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check .

# Re-vendor the console's JavaScript (htmx) from the npm registry; commit what it writes.
vendor-js:
	scripts/vendor-js.sh
