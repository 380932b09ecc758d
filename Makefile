# netviz — the two commands a user needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LAB := $(PY) -m netviz_lab
# containerd, runc and the CNI plugins run the real nodes; umoci and busybox-static build their images;
# dnsmasq-base is the Linux lab router's DHCP server (busybox's udhcpc its LAN host's client); maven fetches
# the lab Kafka broker's jars and openjdk-17-jre-headless runs it; postgresql-15 is the lab's Dagster storage.
DEBIAN_PACKAGES := softflowd openssh-server iproute2 nftables conntrack libpcap-dev gcc curl iputils-ping \
	python3-venv util-linux containerd runc containernetworking-plugins umoci busybox-static libc6-dev \
	dnsmasq-base maven openjdk-17-jre-headless postgresql-15

.PHONY: bench bench-flows soak service screenshots demo test lab-deps debian-packages go-binaries shim kafka-jars venv images lab-up lab-down unit-test dashcheck

lab-deps: debian-packages go-binaries shim kafka-jars venv images

# The images the product references, built locally (no registry here) and cached by version.
images: go-binaries venv
	@$(PY) -m netviz_lab images

# Idempotent: apt runs only when a package is missing.
debian-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

go-binaries:
	@bash netviz_lab/build-lab-bins.sh

shim:
	@bash netviz_lab/build-shim.sh

# Apache Kafka's broker jars for the lab's broker, from Maven Central, cached by version (netviz_lab/kafka.py).
kafka-jars: debian-packages
	@bash netviz_lab/fetch-kafka.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

lab-up: lab-deps
	$(LAB) up

lab-down:
	@test -x $(PY) && $(LAB) down || true

# Every dashboard against Grafana's own schema types (tools/dashcheck: grafana-foundation-sdk pinned in its
# go.mod, from the Go module proxy), run by tests/unit/test_dashboards_schema.py; rebuilt only when its
# sources change (cold: ~2 min on 2 cores).
DASHCHECK := .build/dashcheck
dashcheck: $(DASHCHECK)
$(DASHCHECK): tools/dashcheck/main.go tools/dashcheck/go.mod tools/dashcheck/go.sum
	@echo "building $@" >&2
	@mkdir -p $(@D)
	@cd tools/dashcheck && GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0 \
	  go build -trimpath -buildvcs=false -ldflags "-s -w" -o $(CURDIR)/$@.tmp .
	@mv $@.tmp $@

unit-test: venv dashcheck
	$(PY) -m pytest -q tests/unit

# Every suite, timed, with a per-suite table at the end (tools/run-tests.sh says the order and why):
# the images built alongside the unit tests, then one lab for tests/lab and tests/pipeline, then
# tests/faults (they write bench-results/faults.json), the lab always torn down, then tests/lifecycle.
test: debian-packages go-binaries shim kafka-jars venv dashcheck
	@PY=$(PY) bash tools/run-tests.sh

# Start the lab, deploy with the pipeline exactly as a user would (CLI, lab settings, restricted
# kubeconfig), then say what runs and where to look.
DEMO_DIR := /var/lib/netviz-lab/demo
demo: lab-deps
	$(LAB) up
	@mkdir -p $(DEMO_DIR)/dagster && $(LAB) config > $(DEMO_DIR)/netviz.yaml
	@DAGSTER_HOME=$(DEMO_DIR)/dagster $(PY) -m netviz_pipeline.service init >/dev/null
	@echo "netviz_deploy running; its event stream goes to $(DEMO_DIR)/deploy.log"
	@NETVIZ_CONFIG=$(DEMO_DIR)/netviz.yaml DAGSTER_HOME=$(DEMO_DIR)/dagster \
	  $(VENV)/bin/dagster job execute -m netviz_pipeline -j netviz_deploy > $(DEMO_DIR)/deploy.log 2>&1 \
	  || { tail -n 40 $(DEMO_DIR)/deploy.log; echo "netviz_deploy failed: see $(DEMO_DIR)/deploy.log"; exit 1; }
	@$(LAB) summary --settings $(DEMO_DIR)/netviz.yaml --dagster-home $(DEMO_DIR)/dagster --log $(DEMO_DIR)/deploy.log

# The single-host service (docs/operating.md, "As a service on one host") on the lab: dagster-webserver and
# dagster-daemon with the recipe's instance file, the lab's settings; `... service stop` ends it.
SERVICE_DIR := /var/lib/netviz-lab/service
service: lab-deps
	$(LAB) up
	@mkdir -p $(SERVICE_DIR) && $(LAB) config > $(SERVICE_DIR)/netviz.yaml
	DAGSTER_HOME=$(SERVICE_DIR)/dagster $(PY) -m netviz_pipeline.service init
	DAGSTER_HOME=$(SERVICE_DIR)/dagster NETVIZ_CONFIG=$(SERVICE_DIR)/netviz.yaml $(PY) -m netviz_pipeline.service start
	@echo "stop: DAGSTER_HOME=$(SERVICE_DIR)/dagster $(PY) -m netviz_pipeline.service stop"

# Screenshots (docs/screenshots) of a running service's UI, read-only: `make service` first, or
# URL=... for another webserver. Debian's Chromium, installed only when missing; not part of `make test`.
URL ?= http://127.0.0.1:3000
screenshots: $(VENV)/.docs-installed
	@dpkg-query -W -f='$${Status}\n' chromium 2>/dev/null | grep -q '^install ok installed' || { \
	  echo "installing Debian package: chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(PY) -m netviz_lab screenshots --url $(URL) --out docs/screenshots
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	@$(PY) -m pip install -q -e '.[docs]'
	@touch $@

# One hour with one lab router quiet under the real daemon: no false alarm allowed; memory and CPU of
# webserver and daemon idle and during a deploy. Needs the lab up; writes bench-results/soak.json.
soak: venv
	$(PY) benchmarks/soak.py --minutes 60

# Flow aggregator figures (docs/flow-metrics.md): real goflow2 v2.2.1 vs the aggregator on this machine,
# peak memory with 10M distinct pairs, heavy-hitter error. ~3 minutes; writes bench-results/flows.txt.
# Then flow loss end to end, fifo against kafka, and the kafka path under a broker restart and a replica
# kill (docs/benchmarks.md): its own Kafka broker on 127.0.0.1 from the lab's jars, never the lab's, stopped
# at the end. ~10 minutes; writes bench-results/flow-loss.txt.
bench-flows: go-binaries kafka-jars venv
	$(PY) benchmarks/bench_flows.py
	$(PY) benchmarks/bench_flow_loss.py

# Pipeline figures (issue 6): cold and converged deploy vs kubectl apply --server-side + rollout status,
# Dagster overhead, packet -> Prometheus, exporter stop -> freshness failing, sensor tick with 1/10/50
# exporters, DaemonSet verification with 3/50/500 kwok nodes (beside the 2 real ones), memory. Its own
# lab, always torn down. ~8 minutes; writes bench-results/bench.txt.
bench: lab-deps
	@rc=0; $(LAB) up || rc=$$?; \
	if [ $$rc = 0 ]; then $(PY) benchmarks/bench_pipeline.py || rc=$$?; fi; \
	$(LAB) down || rc=$$?; \
	exit $$rc
