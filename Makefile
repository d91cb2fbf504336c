# One command per check; CI runs `make test` (see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NGINX := $(VENV)/nginx/usr/sbin/nginx

.PHONY: run demo browser nginx test style types lint-imports coverage bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: install if needed, then start the hub on its embedded Redis (data in ./data)
run: $(STAMP)
	$(VENV)/bin/siko hub serve --data-dir data $(if $(wildcard data/admin.card),--admin-card data/admin.card,)

## demo: install if needed, then a narrated case exchange through a real hub (temporary folder)
demo: $(STAMP)
	$(VENV)/bin/siko demo

## browser: Debian's Chromium for the web UI's browser test, installed with apt-get if missing
browser:
	test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

## nginx: Debian's nginx binary for the TLS terminator test (tests/test_deploy.py),
## unpacked into the virtualenv: never installed, so no service starts on the machine
nginx: $(NGINX)
$(NGINX): | $(STAMP)
	mkdir -p $(VENV)/nginx
	cd $(VENV)/nginx && { apt-get download nginx 2>/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && apt-get download nginx; }; }
	cd $(VENV)/nginx && dpkg-deb -x nginx_*.deb . && rm nginx_*.deb
	test -x $(NGINX)

## test: install if needed, then every check and the whole test suite
test: $(STAMP) browser nginx style types lint-imports
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest -q

style: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

types: $(STAMP)
	$(VENV)/bin/mypy

lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

coverage: $(STAMP)
	$(PY) -m pytest -q --cov=keys --cov-branch --cov-report=term-missing --cov-fail-under=100 tests/keys

bench: $(STAMP)
	$(PY) bench/seal.py
	$(PY) bench/hub.py
	$(PY) bench/audit.py
	$(PY) bench/audit_verify.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
