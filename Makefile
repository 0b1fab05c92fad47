# kata-shim developer targets. scripts/dev.sh installs everything (apt, venv, pip,
# extensions); these targets assume it has run once (`make setup`).
VENV ?= .venv
PY := $(VENV)/bin/python


#  ci-fresh: CI on a clone of HEAD with new virtualenvs (CONTRIBUTING.md: must pass first)
.PHONY: ci-fresh setup test demo demo-local proto proto-check lint typecheck bench wheel rpm clean

setup:
	scripts/dev.sh setup

test:
	scripts/dev.sh test

ci-fresh:
	scripts/dev.sh ci-fresh

demo:
	scripts/dev.sh demo

demo-local:
	scripts/dev.sh demo --local

proto:
	$(PY) -m kata_shim.plugin.regen

proto-check:
	$(PY) -m kata_shim.plugin.regen --check

lint:
	$(VENV)/bin/ruff check kata_shim tests bench
	$(VENV)/bin/ruff format --check kata_shim tests bench

typecheck:
	$(VENV)/bin/mypy kata_shim

# ours vs containerd-shim-runc-v2 (+ io_throughput.py, vm_boot.py, vm_density.py): table on
# stderr, JSON on stdout and in out/bench.json. About 5-8 minutes on a 2-CPU host, plus
# vm_density's 2 x 10 TCG VM pods (10-20 minutes). Then net_throughput.py (pod -> host TCP,
# runc / local / VM, 256 MiB each; the TCG VM run alone takes 5-10 minutes): out/net.json.
# cow_pages.py: a forked daemon's and agent's private pages, classified (out/cow_pages.json).
bench:
	mkdir -p out
	$(PY) bench/report.py --json out/bench.json
	$(PY) bench/cow_pages.py | tee out/cow_pages.json
	$(PY) bench/net_throughput.py | tee out/net.json

wheel:
	$(PY) -m build --wheel --no-isolation --outdir dist .

# openEuler SRPM + binary RPM (Debian rpmbuild + packaging/rpm/macros.openeuler-compat), then rpmlint
rpm:
	VENV=$(abspath $(VENV)) packaging/rpm/build.sh

clean:
	rm -rf build dist *.egg-info kata_shim/*.so kata_shim/*/*.so kata_shim/_fastio.c kata_shim/ttrpc/_framing.c
