#!/usr/bin/env bash
# `make run`: three demo backends and pathsplice on :8080 with
# examples/registry.json, in the foreground until Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/build/pathsplice
BACKEND=$ROOT/build/tests/ps-backend
LISTEN=${LISTEN:-0.0.0.0:8080}
PORT=${LISTEN##*:}
pids=()

cleanup() {
	trap - EXIT INT TERM
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [ "$(id -u)" != 0 ]; then
	echo "make run: pathsplice loads BPF programs; run it as root (sudo make run)" >&2
	exit 1
fi
for p in 8001 8002 8003 "$PORT"; do
	if ss -Hltn "sport = :$p" | grep -q .; then
		echo "make run: port $p is already in use; stop what listens there first" >&2
		exit 1
	fi
done

# the instances of host "demo" in examples/registry.json
for spec in s1-a:8001 s1-b:8002 s2-a:8003; do
	"$BACKEND" --listen "127.0.0.1:${spec#*:}" --name "${spec%%:*}" &
	pids+=($!)
done

"$BIN" run --listen "$LISTEN" --registry "$ROOT/examples/registry.json" --host demo &
pids+=($!)
for _ in $(seq 1 100); do
	ss -Hltn "sport = :$PORT" | grep -q . && break
	kill -0 "${pids[-1]}" 2>/dev/null || exit 1
	sleep 0.05
done

cat <<EOT

pathsplice is serving on $LISTEN. Try, from another terminal:

  curl http://127.0.0.1:$PORT/service1/hello        # s1-a or s1-b, round-robin
  curl http://127.0.0.1:$PORT/service1/hello        # ... the other one
  curl http://127.0.0.1:$PORT/service2/hello        # s2-a
  curl http://127.0.0.1:$PORT/nothing-here          # 404
  curl http://127.0.0.1:$PORT/service1/a http://127.0.0.1:$PORT/service2/b
                                                    # one keep-alive connection, two services
  sudo bpftool map dump pinned /sys/fs/bpf/pathsplice/services
  sudo $BIN status                                  # services, instances, health, counters
  curl http://127.0.0.1:9180/stats                  # the same as JSON (/metrics, /load, /culprit)

Edit examples/registry.json (e.g. remove s1-b) and the change applies at once.
Ctrl-C stops the demo (and unpins everything).
EOT
wait "${pids[-1]}"
