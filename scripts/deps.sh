#!/usr/bin/env bash
# Install the Debian packages pathsplice needs to build, test and benchmark.
# Idempotent and quiet when everything is already there.
set -euo pipefail

PACKAGES=(
	# build
	clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev libjansson-dev
	libcurl4-openssl-dev libmicrohttpd-dev pkg-config make
	# tests
	libcmocka-dev libclang-rt-14-dev curl iproute2 nginx-light etcd-server jq
	# benchmark
	wrk haproxy
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages such as nginx and haproxy must not start system services here:
# the tests and the benchmark start their own instances.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
fi
trap '[ $own_policy -eq 1 ] && rm -f "$policy"' EXIT
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
