#!/usr/bin/env bash
# Runs every test of the project: the Rust tests (unit, fixtures, hostile input,
# daemon, subcommands), then the manifest tests (tests/k8s) with the Debian packages
# below and pinned PyPI tools that this script installs into target/pyenv. As root:
# device nodes (mknod), network namespaces, containers.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets

# The real components the manifest tests run, from Debian: nginx (Frigate's listen
# templates, started on loopback), Go's text/template (what Frigate's tempio renders them
# with), openssl (a throwaway certificate), iproute2 and procps (a network namespace
# without IPv6), binutils (readelf on the static build), podman and runc (every shipped
# coral-nfd container run for real, and Frigate's device access), gcc with a static libc
# (the stand-in for Frigate's detector), prometheus and promtool (the metrics endpoint,
# the alert rules, the dashboard's queries).
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v go >/dev/null || need+=(golang-go)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v sysctl >/dev/null || need+=(procps)
command -v readelf >/dev/null || need+=(binutils)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # No service may start during the install: nothing here owns it.
  blocker=/usr/sbin/policy-rc.d
  made_blocker=false
  if [ ! -e "$blocker" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$blocker" && chmod +x "$blocker" && made_blocker=true
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ "$made_blocker" = true ]; then rm -f "$blocker"; fi
fi

venv=target/pyenv
stamp="$venv/.requirements"
if ! cmp -s tests/k8s/requirements.txt "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/k8s/requirements.txt
  cp tests/k8s/requirements.txt "$stamp"
fi
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/k8s
