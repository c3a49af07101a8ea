# The two commands of the quick start: `make run` and `make test`.
.PHONY: run test lint bench vendor-js

run:
	@scripts/bootstrap.sh run
	.venv/bin/gridline serve

# Tests run in 4 processes (pytest-xdist) even on 2 cores: most of the suite waits on real
# time (calls at real-time pace, subprocesses started and killed), not on the CPU. The 25
# slowest tests are listed at the end, to keep the suite's time in view. Bytecode is cached
# even where the environment sets PYTHONDONTWRITEBYTECODE: otherwise every `gridline serve`,
# CLI and child pytest the tests start compiles our modules again, and pytest rewrites the
# test modules' asserts anew in every process.
test:
	@scripts/bootstrap.sh dev
	PYTHONDONTWRITEBYTECODE= .venv/bin/python -m pytest -q -n 4 --durations=25

lint:
	.venv/bin/ruff check .

# Re-vendor the console's JavaScript (htmx) from the npm registry; commit what it writes.
vendor-js:
	scripts/vendor-js.sh
