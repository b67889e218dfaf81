# The two commands: `make run` (whole system locally) and `make test` (everything CI checks).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: install run token test lint checkov typecheck unit integration e2e validate build docs-check clean runner-image \
	runner-image-local sam-local-build sam-local-image sam-local-check deploy cli-models

$(STAMP): requirements-dev.txt layers/common/requirements.txt cli/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## Start moto server, create the template's resources and serve the API on 127.0.0.1:3000.
## State (jobs, runs, scripts, queues) is kept in .local/aws across restarts; FRESH=1 starts empty.
run: export PYTHONPATH := layers/common/python:local
run: $(STAMP)
	$(BIN)/python -m devstack run $(if $(FRESH),--fresh)

## Print a bearer token the local stack accepts: make token USER=alice
# (USER from the environment is the login name: only `USER=` on the command line counts.)
token: export PYTHONPATH := layers/common/python:local
token: $(STAMP)
	@$(BIN)/python -m devstack token $(if $(filter command line,$(origin USER)),$(USER),alice)

test: $(STAMP) lint typecheck validate unit integration e2e

lint: $(STAMP) checkov
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## checkov on the template as CloudFormation gets it (the SAM transform, run offline by
## local/devstack/transform.py): every finding is fixed or skipped in template.yaml with its reason
## (docs/security.md, "checkov findings"). Its own venv: its pins would fight the dev tools' ones.
CHECKOV_VENV := .checkov-venv
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

checkov: export PYTHONPATH := layers/common/python:local
checkov: $(STAMP) $(CHECKOV_STAMP)
	mkdir -p .aws-sam
	$(BIN)/python -m devstack.transform .aws-sam/transformed.json
	$(CHECKOV_VENV)/bin/checkov -f .aws-sam/transformed.json --framework cloudformation \
		--compact --quiet --skip-download

typecheck: $(STAMP)
	$(BIN)/mypy
	PYTHONPATH=layers/common/python $(BIN)/mypy --strict cli/generate_models.py
	$(BIN)/mypy --strict runner/entrypoint.py runner/jobrunner
	# Every handler is a module named `app`: each is checked on its own.
	for handler in functions/*/app.py; do $(BIN)/mypy --no-error-summary $$handler || exit 1; done

# sam and cfn-lint work offline; they only need a region and (fake) credentials.
SAM := PATH=$(CURDIR)/$(BIN):$$PATH SAM_CLI_TELEMETRY=0 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
	$(BIN)/sam

validate: $(STAMP)
	mkdir -p .aws-sam
	$(SAM) validate --lint --region $(AWS_DEFAULT_REGION)
	$(SAM) build --region $(AWS_DEFAULT_REGION) > .aws-sam/build.log 2>&1 \
		|| (cat .aws-sam/build.log; exit 1)

build: $(STAMP)
	$(SAM) build

unit: $(STAMP)
	$(BIN)/pytest -n 2 tests/unit cli/tests

integration: $(STAMP)
	$(BIN)/pytest -n 2 tests/integration

# The container e2e tests run scripts inside the runner image: build it first (cached).
# The modules that bring their own stack and mostly wait on the wall clock (the production
# pace, the outage drill) run in a second pytest beside the rest; their report follows.
E2E_WAITING := tests/e2e/test_on_time.py tests/e2e/test_catch_up.py tests/e2e/test_durable_state.py
e2e: $(STAMP) runner-image-local
	mkdir -p .local
	$(BIN)/pytest -p no:cacheprovider --durations=5 $(E2E_WAITING) > .local/e2e-waiting.log 2>&1 & \
	waiting=$$!; \
	$(BIN)/pytest --durations=15 $(addprefix --ignore=,$(E2E_WAITING)) tests/e2e; shared=$$?; \
	wait $$waiting; waited=$$?; \
	echo "--- $(E2E_WAITING), run beside:"; cat .local/e2e-waiting.log; \
	test $$shared -eq 0 -a $$waited -eq 0

## Docker (installed and started when missing) and the runner image on a local Debian bookworm
## base (debootstrap; no registry needed), both cached under ~/.cache/scheduler-images; prints
## the image's tag. Only the container tests and `python -m devstack run --dispatch docker` use it.
runner-image-local: export PYTHONPATH := layers/common/python:local
runner-image-local: $(STAMP)
	@$(BIN)/python -m devstack image

## sam local against `make run` (README, "sam local"): the functions and the layer built for
## this machine's architecture into .aws-sam/local-build, and the --invoke-image base (Docker
## installed and started if missing; a local Debian base; cached), whose tag it prints last.
SAM_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
sam-local-build: $(STAMP)
	LAYER_ARCH=$(subst arm64,aarch64,$(SAM_ARCH)) $(SAM) build --config-env local \
		--parameter-overrides Architecture=$(SAM_ARCH) --build-dir .aws-sam/local-build \
		--cache-dir .aws-sam/local-cache

sam-local-image: export PYTHONPATH := layers/common/python:local
sam-local-image: $(STAMP)
	@$(BIN)/python -m devstack image --lambda-base

## Every function in `sam local invoke` with its events/*.json against a local stack of its own
## (Docker; 5-7 minutes: SAM rebuilds its image at every invoke). Not part of `make test`,
## which invokes get_job and create_job the same way.
sam-local-check: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m sam_every tests/e2e/test_sam_local.py

## Render /docs in headless Chromium with no network (installs Debian's chromium if missing).
docs-check: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(BIN)/pytest tests/e2e/test_docs_browser.py

## Regenerate the CLI's models from the API's OpenAPI document (after a change to the API).
cli-models: export PYTHONPATH := layers/common/python
cli-models: $(STAMP)
	$(BIN)/python cli/generate_models.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .aws-sam .local

## Build and push the runner image for a real deployment (needs Docker and the AWS CLI):
## make runner-image ECR_REPO=123456789012.dkr.ecr.eu-west-1.amazonaws.com/scheduler-runner
## (ARCH=x86_64 for a stack deployed with Architecture=x86_64)
ARCH ?= arm64
runner-image:
	@test -n "$(ECR_REPO)" || (echo "usage: make runner-image ECR_REPO=<registry>/<repository>"; exit 2)
	docker build --platform linux/$(subst x86_64,amd64,$(ARCH)) -t $(ECR_REPO):latest runner
	aws ecr get-login-password | docker login --username AWS --password-stdin $(firstword $(subst /, ,$(ECR_REPO)))
	docker push $(ECR_REPO):latest

## Deploy in one command (README, "Deploying"): build the runner image for ARCH, refuse it
## unless it holds the runner, push it, then sam build + sam deploy of the samconfig.toml
## environment with the pushed digest as RunnerImageUri. DRY_RUN=1 prints the commands only.
## make deploy ECR_REPO=<account>.dkr.ecr.<region>.amazonaws.com/<repo> [CONFIG_ENV=dev] [ARCH=x86_64]
deploy: export PYTHONPATH := layers/common/python:local
deploy: $(STAMP)
	@test -n "$(ECR_REPO)" || (echo "usage: make deploy ECR_REPO=<registry>/<repository> [CONFIG_ENV=dev] [DRY_RUN=1]"; exit 2)
	$(BIN)/python -m devstack deploy --ecr-repo $(ECR_REPO) --config-env $(or $(CONFIG_ENV),default) \
		--architecture $(ARCH) $(if $(DRY_RUN),--dry-run)

# ---------------------------------------------------------------- benchmarks (issue 4)
# Figures, not tests: never part of `make test`. Results: bench/results/ (quick: bench/results/quick/).
.PHONY: bench bench-quick
BENCH_STAMP := $(VENV)/.bench-installed
LAMBDA_VENV := bench/.lambda-venv

$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@

# The cold-start benchmark imports handlers with only what a deployed function has.
$(LAMBDA_VENV)/.installed: layers/common/requirements.txt
	test -x $(LAMBDA_VENV)/bin/python || $(PYTHON) -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/pip install --quiet -r layers/common/requirements.txt \
		$$(grep -E '^boto3==' requirements-dev.txt)
	touch $@

## Every benchmark (~45 min: on_time runs at the production pace for 12, outage 15-35): make bench
bench: export PYTHONPATH := layers/common/python:local:.
bench: $(BENCH_STAMP) $(LAMBDA_VENV)/.installed
	$(BIN)/python -m bench

## A short pass over every benchmark but on_time (~12 min, most of it outage and fairness): make bench-quick
bench-quick: export PYTHONPATH := layers/common/python:local:.
bench-quick: $(BENCH_STAMP) $(LAMBDA_VENV)/.installed
	$(BIN)/python -m bench --quick

# ---------------------------------------------------------------- docs
.PHONY: docs-dashboard

## Draw the dashboard's layout from template.yaml into docs/dashboard.png (matplotlib, as bench).
docs-dashboard: export PYTHONPATH := layers/common/python:local:tests
docs-dashboard: $(BENCH_STAMP)
	$(BIN)/python docs/render_dashboard.py

# ---------------------------------------------------------------- chaos soak (issue 14)
.PHONY: soak soak-quick
SOAK_ARGS ?=

## The chaos soak (~25 min; not part of `make test`): 10,000+ runs due under random faults,
## seeded: make soak SOAK_ARGS="--seed 7 --rate kill_runner=1"
soak: export PYTHONPATH := layers/common/python:local:.
soak: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

## The same in under 3 minutes (bench/results/quick/soak.json)
soak-quick: export PYTHONPATH := layers/common/python:local:.
soak-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak --quick $(SOAK_ARGS)
