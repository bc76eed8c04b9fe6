# The two commands of the README: `make run` and `make test`. Both work from a
# fresh clone: they create .venv and install what the project needs first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PIP_FLAGS ?= --disable-pip-version-check --quiet
PYTEST_ARGS ?=

.PHONY: run test install install-dev lint format lock clean-db bench audit check-deploy

run: install
	$(PY) manage.py serve

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python requirements.txt constraints.txt
	$(PIP) install $(PIP_FLAGS) -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install $(PIP_FLAGS) -r requirements-dev.txt -c constraints.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Known vulnerabilities in any pinned version fail (see .ci/audit.py for offline mirrors).
audit: install-dev
	$(PY) .ci/audit.py

# Production settings must pass Django's deployment checks with no warning.
check-deploy: install
	DJANGO_SETTINGS_MODULE=chatbase.settings.production SECRET_KEY=ci-$$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
	  ALLOWED_HOSTS=chatbase.example.com $(PY) manage.py check --deploy --fail-level WARNING

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate constraints.txt (every transitive version) from the current venv.
lock: install-dev
	$(PIP) freeze --exclude-editable | grep -v '^-e' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > constraints.txt

# Stop the embedded PostgreSQL server (it keeps running between commands).
clean-db: install
	$(PY) manage.py embedded_db stop
