#!/usr/bin/env bash
# pathsplice side-by-side benchmark (run by `make bench`).
#
# Measures, in ONE run and interleaved, the backend reached directly (the limit),
# HAProxy 2.6 in HTTP mode, nginx as a reverse proxy and pathsplice, and prints
# each target's numbers as ratios to the direct backend. Clients: wrk on loopback
# (root namespace, 127.0.0.1), with pathsplice treating it as any client (its
# sockets not accelerated: --direct-callers off); wrk in a network namespace
# (psb-cli) talking over a veth pair to a namespace (psb-srv) where every server of
# that pass runs; and wrk on loopback as a same-host caller whose sockets
# pathsplice accelerates (its default).
#
# Everything the script starts is stopped by PID and every namespace it creates
# is deleted on exit, including on Ctrl-C and on failure. Run `scripts/bench.sh -h`.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPL=$ROOT/scripts/bench
PS_BIN=${PATHSPLICE_BIN:-$ROOT/build/pathsplice}
PIN_DIR=/sys/fs/bpf/psb-bench

ALL_TARGETS=(direct haproxy nginx-proxy pathsplice)
MEASURES=(ka c1 bulk upload close)

# ---- defaults / options ---------------------------------------------------------
DURATION=5
REPS=3
ONLY=""
TARGETS_ARG=""
PORT_BASE=19100
OUT_BASE=${BENCH_OUT:-$ROOT/build/bench}

usage() {
	cat <<EOF
Usage: scripts/bench.sh [options]

Side-by-side HTTP benchmark: direct backend, HAProxy (http mode), nginx reverse
proxy and pathsplice; prints a markdown table per client placement with each
cell as "value (ratio to direct)".

Options:
  --duration S      seconds per measurement (default $DURATION)
  --reps N          interleaved repetitions; cells are medians (default $REPS)
  --only P          only one client placement: loopback | netns | same-host
  --targets LIST    comma-separated subset of: ${ALL_TARGETS[*]}
                    (direct is always measured: it is the reference)
  --quick           smoke run: 1 rep of 2 s
  --port-base N     ports used: N+1,N+2 backends, N+10 haproxy, N+20 nginx-proxy,
                    N+30 pathsplice (default $PORT_BASE; must stay in 19000-19999)
  --out DIR         where run logs go (default build/bench/<timestamp>)
  -h, --help        this help

Rows: keep-alive small responses c50 (req/s), c1 latency p50/p99 (ms), 1 MiB
responses c8 (MiB/s), 64 MiB uploads c4 (MiB/s), Connection: close c50
(req/s), whole-machine CPU seconds per million requests during the keep-alive
row, and the proxy's own (its processes') CPU seconds per million requests in
that row.

PATHSPLICE_ARGS adds arguments to \`pathsplice run\` (e.g. --flow-limit 4194304).

pathsplice ($PS_BIN) is optional in the default target list: if it is not
built or fails to start it is skipped with a note. Named in --targets, its
failure makes the run fail. Exit status: 0 when every required target produced
numbers, 1 otherwise, 2 on usage errors.

Before each measure group the bench waits (up to BENCH_QUIET_WAIT s, default
60; 0 = no wait) until other work uses at most 15 % of the machine, and notes
it when that never happened.

Environment: PATHSPLICE_BIN (binary to run), BENCH_OUT (log directory base),
BENCH_QUIET_WAIT (see above).
EOF
}

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

OUT_DIR=""
while [ $# -gt 0 ]; do
	case $1 in
	--duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
	--reps) REPS=${2:?--reps needs a value}; shift 2 ;;
	--only) ONLY=${2:?--only needs a value}; shift 2 ;;
	--targets) TARGETS_ARG=${2:?--targets needs a value}; shift 2 ;;
	--quick) DURATION=2; REPS=1; shift ;;
	--port-base) PORT_BASE=${2:?--port-base needs a value}; shift 2 ;;
	--out) OUT_DIR=${2:?--out needs a value}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "bench: unknown option: $1 (see --help)" >&2; exit 2 ;;
	esac
done

usage_err() { echo "bench: $*" >&2; exit 2; }
in_range() { [[ $1 =~ ^[0-9]+$ ]] && (($1 >= $2 && $1 <= $3)); }
in_range "$DURATION" 1 600 || usage_err "--duration must be an integer number of seconds, 1-600"
in_range "$REPS" 1 50 || usage_err "--reps must be 1-50"
in_range "$PORT_BASE" 19000 19969 || usage_err "--port-base must keep every port in 19000-19999"
case $ONLY in
"") PLACEMENTS=(loopback netns same-host) ;;
loopback | netns | same-host) PLACEMENTS=("$ONLY") ;;
*) usage_err "--only must be loopback, netns or same-host" ;;
esac

# Targets: direct is always first (the reference); the rest in canonical order.
declare -A REQUIRED=()
TARGETS=(direct)
REQUIRED[direct]=1
if [ -z "$TARGETS_ARG" ]; then
	TARGETS=("${ALL_TARGETS[@]}")
	REQUIRED=([direct]=1 [haproxy]=1 [nginx-proxy]=1) # pathsplice optional
else
	IFS=, read -r -a wanted <<<"$TARGETS_ARG"
	for w in "${wanted[@]}"; do
		[[ " ${ALL_TARGETS[*]} " == *" $w "* ]] || usage_err "unknown target '$w' (known: ${ALL_TARGETS[*]})"
		REQUIRED[$w]=1
	done
	for t in "${ALL_TARGETS[@]:1}"; do
		[ -n "${REQUIRED[$t]:-}" ] && TARGETS+=("$t")
	done
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, BPF)"
for tool in nginx haproxy wrk curl ip nsenter ss flock timeout pgrep; do
	command -v "$tool" >/dev/null || die "'$tool' not found (run: make deps)"
done

P1=$((PORT_BASE + 1))
P2=$((PORT_BASE + 2))
declare -A PORT=([direct]=$P1 [haproxy]=$((PORT_BASE + 10)) [nginx-proxy]=$((PORT_BASE + 20))
	[pathsplice]=$((PORT_BASE + 30)))

NS_SRV=psb-srv
NS_CLI=psb-cli
VETH_SRV=psb-v-srv
VETH_CLI=psb-v-cli
SRV_IP=10.231.0.1
CLI_IP=10.231.0.2

PAD=$(printf 'x%.0s' $(seq 76)) # "psb-backend port=NNNNN " + 76 x + "\n" = 100 bytes
CLK_TCK=$(getconf CLK_TCK)

# ---- state used by cleanup --------------------------------------------------------
SRV_PIDS=()     # "pid:name" of every server started, in start order
CLIENT_PID=""   # the wrk/curl currently running (via timeout)
CREATED_NS=()   # namespaces this run created
PIN_USED=0      # pathsplice was started: remove its pin dir at the end
TMP=""
CLEANED=0

# Stop one process by PID: TERM, wait (bounded), then KILL it and any children it
# had (nginx workers) that are still around.
stop_pid() {
	local pid=$1 name=$2 kids="" k i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	for k in $(pgrep -P "$pid" || true); do # remember "pid:comm" of its children
		kids+=" $k:$(cat "/proc/$k/comm" 2>/dev/null || true)"
	done
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$name (pid $pid) ignored TERM for 5 s; killing"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	for k in $kids; do # children normally exit with their parent
		for ((i = 0; i < 20; i++)); do
			[ "$(cat "/proc/${k%%:*}/comm" 2>/dev/null)" = "${k#*:}" ] || continue 2
			sleep 0.1
		done
		log "$name child ${k%%:*} (${k#*:}) still running; killing"
		kill -KILL "${k%%:*}" 2>/dev/null || true
	done
}

stop_servers() {
	local i entry
	for ((i = ${#SRV_PIDS[@]} - 1; i >= 0; i--)); do
		entry=${SRV_PIDS[$i]}
		stop_pid "${entry%%:*}" "${entry#*:}"
	done
	SRV_PIDS=()
	if [ "$PIN_USED" -eq 1 ] && [ -e "$PIN_DIR" ]; then
		rm -rf "$PIN_DIR" || log "could not remove $PIN_DIR"
	fi
}

delete_netns() {
	local ns pids
	for ns in "${CREATED_NS[@]}"; do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -z "$pids" ] || log "processes still in $ns after stop: $pids"
		ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
	done
	CREATED_NS=()
	# a veth half that never made it into its namespace would sit in the root one
	ip link del "$VETH_SRV" 2>/dev/null || true
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	[ "$CLEANED" -eq 1 ] && return
	CLEANED=1
	trap '' INT TERM HUP # finish cleaning even on a second Ctrl-C
	if [ -n "$CLIENT_PID" ]; then stop_pid "$CLIENT_PID" client; fi
	stop_servers
	delete_netns
	[ -n "$TMP" ] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'log "unexpected failure (status $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# One bench at a time: the lock is the script itself (no file left behind).
exec 9<"$0"
flock -n 9 || die "another scripts/bench.sh run is active"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# tmpfs when there is one: the upload row stores bodies, and must not measure a disk
TMP_BASE=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && TMP_BASE=/dev/shm
TMP=$(mktemp -d "$TMP_BASE/psb-bench.XXXXXX")
chmod 755 "$TMP" # nginx workers run as nobody and must read the www dir
OUT_DIR=${OUT_DIR:-$OUT_BASE/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR/wrk" "$OUT_DIR/conf"
RAW=$OUT_DIR/raw.tsv
printf 'placement\trep\ttarget\tmeasure\tvalue\trequests\tsocket_errors\tnon2xx\tfile\n' >"$RAW"

# ---- placement context ------------------------------------------------------------
# SRV_EXEC runs a server where this pass's servers live; CLI_EXEC runs a client.
# Servers enter psb-srv with `nsenter --net` rather than `ip netns exec`: the latter
# remounts /sys in a private mount namespace, which hides /sys/fs/bpf (pathsplice
# pins there) and /sys/fs/cgroup.
PLACEMENT=""
SRV_EXEC=()
CLI_EXEC=()
LISTEN_ADDR=""
TARGET_HOST=""

enter_placement() {
	PLACEMENT=$1
	if [ "$PLACEMENT" != netns ]; then
		SRV_EXEC=()
		CLI_EXEC=()
		LISTEN_ADDR=127.0.0.1
		TARGET_HOST=127.0.0.1
	else
		SRV_EXEC=(nsenter "--net=/run/netns/$NS_SRV")
		CLI_EXEC=(ip netns exec "$NS_CLI")
		LISTEN_ADDR=0.0.0.0
		TARGET_HOST=$SRV_IP
	fi
}

setup_netns() {
	local ns pids
	for ns in "$NS_SRV" "$NS_CLI"; do
		[ -e "/run/netns/$ns" ] || continue
		# We hold the bench lock, so this is left over from a killed run.
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -z "$pids" ] || die "stale namespace $ns still has processes ($pids); stop them first"
		log "removing stale namespace $ns"
		ip netns del "$ns"
	done
	ip link del "$VETH_SRV" 2>/dev/null || true
	ip netns add "$NS_SRV"
	CREATED_NS+=("$NS_SRV")
	ip netns add "$NS_CLI"
	CREATED_NS+=("$NS_CLI")
	ip link add "$VETH_SRV" netns "$NS_SRV" type veth peer name "$VETH_CLI" netns "$NS_CLI"
	ip -n "$NS_SRV" link set lo up
	ip -n "$NS_CLI" link set lo up
	ip -n "$NS_SRV" addr add "$SRV_IP/30" dev "$VETH_SRV"
	ip -n "$NS_CLI" addr add "$CLI_IP/30" dev "$VETH_CLI"
	ip -n "$NS_SRV" link set "$VETH_SRV" up
	ip -n "$NS_CLI" link set "$VETH_CLI" up
	# Client namespace only (ours): room for Connection: close churn over veth,
	# which is not loopback, so the root default tcp_tw_reuse=2 would not apply.
	ip netns exec "$NS_CLI" sysctl -qw net.ipv4.ip_local_port_range="1024 65000" \
		net.ipv4.tcp_tw_reuse=1
}

# ---- servers ---------------------------------------------------------------------------
render() { # template output [KEY=VALUE ...]
	local tpl=$1 out=$2 kv args=()
	shift 2
	for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
	sed "${args[@]}" "$TPL/$tpl" >"$out"
	if grep -q '@[A-Z0-9]*@' "$out"; then die "unrendered placeholder in $out"; fi
	cp "$out" "$OUT_DIR/conf/$PLACEMENT-$(basename "$out")"
}

port_busy() { [ -n "$("${SRV_EXEC[@]}" ss -Hltn "sport = :$1")" ]; }

LAST_PID=""
start_server() { # name cmd...   (output to the run log dir; lock fd not inherited)
	local name=$1
	shift
	"${SRV_EXEC[@]}" "$@" >"$OUT_DIR/$PLACEMENT-$name.log" 2>&1 9<&- &
	LAST_PID=$!
	SRV_PIDS+=("$LAST_PID:$name")
}

wait_port() { # pid port seconds
	local pid=$1 port=$2 i
	for ((i = 0; i < $3 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 1
		port_busy "$port" && return 0
		sleep 0.1
	done
	return 1
}

declare -A TPID=()  # target -> pid of the process that must stay alive
declare -A NOTES=() # placement -> accumulated notes
declare -A SKIPPED=() # "placement|target" -> 1 when skipped (binary missing)
note() { NOTES[$PLACEMENT]+="- $*"$'\n'; log "$*"; }

start_backends() {
	local d=$TMP/$PLACEMENT/backend
	mkdir -p "$d/www/service1" "$d/www/service2"
	head -c 1048576 /dev/urandom >"$d/www/service1/1m.bin"
	cp "$d/www/service1/1m.bin" "$d/www/service2/1m.bin"
	chmod -R a+rX "$TMP"
	chmod a+w "$d/www/service1" # the upload row's PUTs, by the workers (nobody)
	render backend.nginx.conf.in "$d/backend.conf" "DIR=$d" "ADDR=$LISTEN_ADDR" "P1=$P1" "P2=$P2" "PAD=$PAD"
	start_server backend nginx -p "$d" -c "$d/backend.conf" -e "$d/backend-error.log" -g 'daemon off;'
	TPID[direct]=$LAST_PID
	if ! wait_port "$LAST_PID" "$P1" 10 || ! wait_port "$LAST_PID" "$P2" 10; then
		cat "$OUT_DIR/$PLACEMENT-backend.log" "$d/backend-error.log" >&2 2>/dev/null || true
		die "backend nginx did not start ($PLACEMENT)"
	fi
}

start_target() { # target -> 0 if listening
	local t=$1 port=${PORT[$1]} d=$TMP/$PLACEMENT/$1
	[ "$t" = direct ] && return 0
	mkdir -p "$d"
	if port_busy "$port"; then
		note "$t: port $port already in use in this namespace; not started"
		return 1
	fi
	case $t in
	haproxy)
		render haproxy.cfg.in "$d/haproxy.cfg" "ADDR=$LISTEN_ADDR" "PORT=$port" "P1=$P1" "P2=$P2"
		start_server haproxy haproxy -db -f "$d/haproxy.cfg"
		;;
	nginx-proxy)
		render nginx-proxy.conf.in "$d/nginx-proxy.conf" "DIR=$d" "ADDR=$LISTEN_ADDR" "PORT=$port" "P1=$P1" "P2=$P2"
		start_server nginx-proxy nginx -p "$d" -c "$d/nginx-proxy.conf" -e "$d/nginx-proxy-error.log" -g 'daemon off;'
		;;
	pathsplice)
		if [ ! -x "$PS_BIN" ]; then
			note "pathsplice: skipped — $PS_BIN does not exist yet (build it with: make)"
			SKIPPED["$PLACEMENT|$t"]=1
			return 1
		fi
		render registry.json.in "$d/registry.json" "P1=$P1" "P2=$P2"
		if [ -e "$PIN_DIR" ]; then
			log "removing stale $PIN_DIR"
			rm -rf "$PIN_DIR"
		fi
		PIN_USED=1
		# the loopback client stands for any client: only the same-host
		# placement has pathsplice accelerate its sockets
		local callers=on
		[ "$PLACEMENT" = loopback ] && callers=off
		# shellcheck disable=SC2086 # PATHSPLICE_ARGS is a list of words
		start_server pathsplice "$PS_BIN" run --listen "$LISTEN_ADDR:$port" \
			--registry "$d/registry.json" --host bench --pin-dir "$PIN_DIR" \
			--direct-callers "$callers" ${PATHSPLICE_ARGS:-}
		;;
	esac
	TPID[$t]=$LAST_PID
	if ! wait_port "$LAST_PID" "$port" 15; then
		local why="not listening on $port after 15 s" st=0
		if ! kill -0 "$LAST_PID" 2>/dev/null; then
			wait "$LAST_PID" || st=$?
			why="exited with status $st"
		fi
		note "$t: failed to start ($why); log: $OUT_DIR/$PLACEMENT-$t.log"
		echo "----- $t log (last 40 lines) -----" >&2
		tail -n 40 "$OUT_DIR/$PLACEMENT-$t.log" >&2 || true
		echo "-----" >&2
		stop_pid "$LAST_PID" "$t"
		return 1
	fi
	return 0
}

# ---- clients ---------------------------------------------------------------------------
# Run a client command (bounded by timeout) in the client placement, in the
# background so that a signal interrupts `wait` and the trap can stop it.
# Output goes to files given here (not redirected around the call), so that a
# trap firing during `wait` still writes to the script's own stderr.
client() { # seconds stdout-file stderr-file|- cmd...
	local secs=$1 out=$2 err=$3 rc=0
	shift 3
	if [ "$err" = - ]; then
		"${CLI_EXEC[@]}" timeout -k 2 "$secs" "$@" >"$out" 2>&1 9<&- &
	else
		"${CLI_EXEC[@]}" timeout -k 2 "$secs" "$@" >"$out" 2>"$err" 9<&- &
	fi
	CLIENT_PID=$!
	wait "$CLIENT_PID" || rc=$?
	CLIENT_PID=""
	return "$rc"
}

# Check a target answers 200 with the backend's content, four requests on one
# keep-alive connection, and serves the 1 MiB file intact.
check_target() { # target -> 0 if good
	local t=$1 url="http://$TARGET_HOST:${PORT[$1]}" line body="" n=0 ports="" bad="" code
	local f1m=$TMP/$PLACEMENT/backend/www/service1/1m.bin out=$TMP/$PLACEMENT/check-$1
	# each response is followed by a line "@@<status>"
	client 20 "$out.txt" "$out.err" curl -sS --max-time 10 -w '\n@@%{http_code}\n' \
		"$url/service1/" "$url/service1/a/b?q=1" "$url/service1/" "$url/service1/x" ||
		bad="curl failed: $(head -c 200 "$out.err")"
	while IFS= read -r line; do
		if [[ $line != @@* ]]; then
			[ -n "$line" ] && body+=$line
			continue
		fi
		n=$((n + 1))
		code=${line#@@}
		if [ "$code" != 200 ]; then
			bad=${bad:-"request $n answered HTTP $code"}
		elif [[ $body =~ ^psb-backend\ port=($P1|$P2)\ $PAD$ ]]; then
			ports+=" ${BASH_REMATCH[1]}"
		else
			bad=${bad:-"unexpected body for request $n: ${body:0:80}"}
		fi
		body=""
	done <"$out.txt"
	[ "$n" -eq 4 ] || bad=${bad:-"expected 4 responses, got $n"}
	if [ -z "$bad" ]; then
		client 30 "$out.txt" "$out.err" curl -sS --max-time 20 -o "$out.bin" -w '%{http_code}' \
			"$url/service1/1m.bin" || true
		code=$(cat "$out.txt")
		if [ "$code" != 200 ]; then
			bad="1 MiB file: HTTP ${code:-none} $(head -c 200 "$out.err")"
		elif ! cmp -s "$f1m" "$out.bin"; then
			bad="1 MiB file differs from the backend's ($(stat -c %s "$out.bin") bytes)"
		fi
	fi
	rm -f "$out.txt" "$out.err" "$out.bin"
	if [ -n "$bad" ]; then
		note "$t: content check failed: $bad"
		return 1
	fi
	if [ "$t" != direct ] && [[ $ports != *$P1* || $ports != *$P2* ]]; then
		rr_check "$t" "$url" "$out" "$ports"
	fi
	return 0
}

# Requests on one keep-alive connection all went to one instance: see whether
# separate connections are balanced (informational: a note, not a failure).
rr_check() { # target url tmpfile ports-seen-on-one-connection
	local t=$1 i ports=""
	for i in 1 2 3 4; do
		client 10 "$3.rr" /dev/null curl -sS --max-time 5 "$2/service1/" || true
		ports+=" $(sed -n 's/^psb-backend port=\([0-9]*\) .*/\1/p' "$3.rr")"
	done
	rm -f "$3.rr"
	if [[ $ports == *$P1* && $ports == *$P2* ]]; then
		note "$t: 4 requests on one keep-alive connection all went to one instance (ports:$4); 4 new connections were balanced (ports:$ports)"
	else
		note "$t: no round-robin seen: one connection → ports:$4; 4 new connections → ports:$ports"
	fi
}

# wrk shapes per measure: threads connections path extra-args
wrk_args() { # measure duration url
	local d=$2s u=$3
	case $1 in
	ka) echo "-t2 -c50 -d$d --latency $u/service1/" ;;
	c1) echo "-t1 -c1 -d$d --latency $u/service1/" ;;
	bulk) echo "-t2 -c8 -d$d --latency $u/service1/1m.bin" ;;
	upload) echo "-t2 -c4 -d$d --latency -s $TPL/upload.lua $u/service1/upload" ;;
	close) echo "-t2 -c50 -d$d --latency $u/service1/" ;; # + Connection: close
	esac
}

run_wrk() { # measure duration url outfile
	local -a a
	read -r -a a <<<"$(wrk_args "$1" "$2" "$3")"
	[ "$1" = close ] && a=(-H 'Connection: close' "${a[@]}")
	client $(($2 + 30)) "$4" - wrk "${a[@]}"
}

# Parse wrk output: requests rps mib_per_s p50_ms p99_ms socket_errors non2xx
parse_wrk() {
	awk '
	function ms(s,   n, u) {
		n = s + 0; u = s; sub(/^[0-9.]+/, "", u)
		if (u == "us") return n / 1000
		if (u == "ms") return n
		if (u == "s")  return n * 1000
		if (u == "m")  return n * 60000
		if (u == "h")  return n * 3600000
		return -1
	}
	function mib(s,   n, u) {
		n = s + 0; u = s; sub(/^[0-9.]+/, "", u)
		if (u == "B")  return n / 1048576
		if (u == "KB") return n / 1024
		if (u == "MB") return n
		if (u == "GB") return n * 1024
		if (u == "TB") return n * 1048576
		return -1
	}
	BEGIN { req = rps = mb = p50 = p99 = -1; err = 0; non2xx = 0 }
	/ requests in /            { req = $1 }
	/^Requests\/sec:/          { rps = $2 }
	/^Transfer\/sec:/          { mb = mib($2) }
	/^[ \t]+50%[ \t]/          { p50 = ms($2) }
	/^[ \t]+99%[ \t]/          { p99 = ms($2) }
	/Socket errors:/ {
		for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0
	}
	/Non-2xx or 3xx responses:/ { non2xx = $NF }
	END { printf "%s %s %s %s %s %d %d\n", req, rps, mb, p50, p99, err, non2xx }
	' "$1"
}

# Per-process CPU ticks: "pid comm ticks ppid" for every process (comm without
# spaces).
proc_ticks() {
	# (processes come and go between the glob and the read: ignore cat's status)
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
		l = index($0, "("); r = 0
		for (i = length($0); i > 0; i--) if (substr($0, i, 1) == ")") { r = i; break }
		if (!l || !r) next
		comm = substr($0, l + 1, r - l - 1); gsub(/ /, "_", comm)
		split(substr($0, r + 2), f, " ")
		print $1, comm, f[12] + f[13], f[2]
	}'
}

# CPU ticks of a process and all its descendants (nginx's workers; a
# process's own count includes its threads, ended ones too).
tree_ticks() { # pid
	proc_ticks | awk -v root="$1" '
		{ ticks[$1] = $3; parent[$1] = $4 }
		END {
			for (p in ticks) {
				for (q = p; q != "" && q != root && q in parent; q = parent[q])
					if (parent[q] == q) break
				if (q == root) sum += ticks[p]
			}
			print sum + 0
		}'
}

# Background load over one second (nothing of ours is measuring): sets BG_PCT
# (% of the whole machine) and BG_TOP (the three busiest processes, % of one CPU).
BG_PCT=0
BG_TOP=""
background_cpu() {
	local b0 i0 b1 i1 before
	before=$(proc_ticks)
	read -r b0 i0 < <(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6; exit }' /proc/stat)
	sleep 1
	read -r b1 i1 < <(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6; exit }' /proc/stat)
	BG_PCT=$(awk -v b=$((b1 - b0)) -v i=$((i1 - i0)) 'BEGIN { printf "%.0f", (b + i > 0) ? 100 * b / (b + i) : 0 }')
	BG_TOP=$(proc_ticks | awk -v hz="$CLK_TCK" 'NR == FNR { t0[$1] = $3; next }
		($1 in t0) && $3 > t0[$1] { printf "%d %s\n", 100 * ($3 - t0[$1]) / hz, $2 }' \
		<(printf '%s\n' "$before") - | sort -rn |
		awk 'NR <= 3 { printf "%s%s %s %%", s, $2, $1; s = ", " }')
}

# Other work on this machine skews every cell: wait (bounded) until it is quiet.
QUIET_LIMIT=15 # % of the machine
QUIET_WAIT=${BENCH_QUIET_WAIT:-60} # seconds at most, per measure group; 0: don't wait
wait_quiet() {
	local i
	[[ $QUIET_WAIT =~ ^[0-9]+$ ]] && [ "$QUIET_WAIT" -gt 0 ] || return 0
	for ((i = 0; i < QUIET_WAIT; i++)); do
		background_cpu
		[ "$BG_PCT" -le "$QUIET_LIMIT" ] && return 0
		[ "$i" -eq 0 ] && log "machine busy with other work (${BG_PCT} % CPU; busiest: ${BG_TOP:-no single process}); waiting up to ${QUIET_WAIT} s"
	done
	note "rep $REP ${1}: ran with ${BG_PCT} % background CPU (busiest: ${BG_TOP:-?})"
}

cpu_busy_ticks() { # all CPUs: user nice system irq softirq steal (guest is in user)
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

declare -A VALS=()  # "placement|target|measure" -> space-separated per-rep values
declare -A FAILED=() # "placement|target" -> reason
record() { # target measure value requests err non2xx file
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$PLACEMENT" "$REP" "$1" "$2" "$3" "$4" "$5" "$6" \
		"${7#"$OUT_DIR"/}" >>"$RAW"
	[ "$3" != fail ] && VALS["$PLACEMENT|$1|$2"]+="$3 "
	return 0
}

measure() { # target measure
	local t=$1 m=$2 url="http://$TARGET_HOST:${PORT[$1]}" f req rps mb p50 p99 err non2xx
	local c0 c1 p0=0 p1=0 v own own_note=""
	f=$OUT_DIR/wrk/$PLACEMENT-r$REP-$m-$t.txt
	run_wrk "$m" 1 "$url" "$f.warmup" || true
	[ "$m" = ka ] && [ "$t" != direct ] && p0=$(tree_ticks "${TPID[$t]}")
	c0=$(cpu_busy_ticks)
	run_wrk "$m" "$DURATION" "$url" "$f" || log "wrk exited non-zero ($t $m), see $f"
	c1=$(cpu_busy_ticks)
	[ "$m" = ka ] && [ "$t" != direct ] && p1=$(tree_ticks "${TPID[$t]}")
	read -r req rps mb p50 p99 err non2xx < <(parse_wrk "$f")
	if ! [[ $req =~ ^[0-9]+$ ]] || [ "$req" -eq 0 ] ||
		[ $(((err + non2xx) * 100)) -gt "$req" ]; then
		# no numbers, or >1 % of requests failed: a fast error page is no result
		log "$PLACEMENT rep $REP $t $m: no valid numbers (requests=$req socket errors=$err non-2xx=$non2xx), see $f"
		record "$t" "$m" fail "$req" "$err" "$non2xx" "$f"
		return 1
	fi
	[ $((err + non2xx)) -eq 0 ] ||
		note "$t $m rep $REP: $err socket errors, $non2xx non-2xx of $req requests (kept: <1 %)"
	case $m in
	ka)
		record "$t" ka "$rps" "$req" "$err" "$non2xx" "$f"
		v=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v r="$req" 'BEGIN { printf "%.3f", d / hz / r * 1e6 }')
		record "$t" cpu "$v" "$req" "$err" "$non2xx" "$f"
		if [ "$t" != direct ]; then
			own=$(awk -v d="$((p1 - p0))" -v hz="$CLK_TCK" -v r="$req" 'BEGIN { printf "%.3f", d / hz / r * 1e6 }')
			record "$t" own "$own" "$req" "$err" "$non2xx" "$f"
			own_note=$(printf ', its own %.2f' "$own")
		fi
		log "$(printf '%-8s rep %d  %-11s keep-alive c50: %10.0f req/s  cpu %.2f s/Mreq%s' \
			"$PLACEMENT" "$REP" "$t" "$rps" "$v" "$own_note")"
		;;
	c1)
		record "$t" c1_p50 "$p50" "$req" "$err" "$non2xx" "$f"
		record "$t" c1_p99 "$p99" "$req" "$err" "$non2xx" "$f"
		log "$(printf '%-8s rep %d  %-11s c1 latency: p50 %.3f ms  p99 %.3f ms' \
			"$PLACEMENT" "$REP" "$t" "$p50" "$p99")"
		;;
	bulk)
		record "$t" bulk "$mb" "$req" "$err" "$non2xx" "$f"
		log "$(printf '%-8s rep %d  %-11s 1 MiB c8: %8.1f MiB/s' "$PLACEMENT" "$REP" "$t" "$mb")"
		;;
	upload)
		v=$(awk -v r="$rps" 'BEGIN { printf "%.1f", r * 64 }')
		record "$t" upload "$v" "$req" "$err" "$non2xx" "$f"
		log "$(printf '%-8s rep %d  %-11s 64 MiB up c4: %8.1f MiB/s' "$PLACEMENT" "$REP" "$t" "$v")"
		;;
	close)
		record "$t" close "$rps" "$req" "$err" "$non2xx" "$f"
		log "$(printf '%-8s rep %d  %-11s conn-close c50: %10.0f req/s' "$PLACEMENT" "$REP" "$t" "$rps")"
		;;
	esac
	return 0
}

# ---- one pass per client placement ---------------------------------------------------
REP=0

run_pass() {
	local t m active=()
	enter_placement "$1"
	log "=== pass: $PLACEMENT ==="
	[ "$PLACEMENT" = netns ] && setup_netns
	start_backends
	for t in "${TARGETS[@]}"; do
		if start_target "$t" && check_target "$t"; then
			active+=("$t")
		else
			FAILED["$PLACEMENT|$t"]="did not start or failed the content check"
		fi
	done
	[[ " ${active[*]} " == *" direct "* ]] || die "the direct backend failed its check ($PLACEMENT)"
	log "$PLACEMENT: measuring ${active[*]} — $REPS rep(s) x ${#MEASURES[@]} measures x ${#active[@]} targets x (${DURATION}+1 s)"
	for ((REP = 1; REP <= REPS; REP++)); do
		for m in "${MEASURES[@]}"; do
			wait_quiet "$m"
			for t in "${active[@]}"; do
				if [ -n "${FAILED["$PLACEMENT|$t"]:-}" ]; then continue; fi
				if ! kill -0 "${TPID[$t]}" 2>/dev/null; then
					FAILED["$PLACEMENT|$t"]="process exited during the run"
					note "$t: process exited during the run; log: $OUT_DIR/$PLACEMENT-$t.log"
					continue
				fi
				measure "$t" "$m" || true
			done
		done
	done
	stop_servers
	delete_netns
}

# ---- report ------------------------------------------------------------------------------
median() { # values... -> median, or empty
	[ $# -gt 0 ] || return 0
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

cell_median() { # placement target measure
	# shellcheck disable=SC2086
	median ${VALS["$1|$2|$3"]:-}
}

fmt() { # measure value
	case $1 in
	ka | close) printf '%.0f' "$2" ;;
	c1_p50 | c1_p99) printf '%.3f' "$2" ;;
	bulk | upload) printf '%.1f' "$2" ;;
	cpu | own) printf '%.2f' "$2" ;;
	esac
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "n/a" }'; }

machine_info() {
	echo "## pathsplice benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)"
	echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>&1 | awk 'NR == 1 { print "HAProxy " $3 }'), $({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print "wrk " $2 }')"
	if [ -x "$PS_BIN" ]; then
		echo "- pathsplice: $PS_BIN ($(stat -c %y "$PS_BIN" | cut -d. -f1))"
	fi
	background_cpu
	echo "- background CPU before the run: ${BG_PCT} % of the machine (busiest: ${BG_TOP:-none}); load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- before each measure group the bench waits up to ${QUIET_WAIT} s for background CPU ≤ ${QUIET_LIMIT} % (notes say when it was not)"
	echo "- each cell: median of $REPS interleaved run(s) of ${DURATION} s (after 1 s warm-up), \`value (ratio to direct)\`"
	echo "- nothing is pinned: wrk (2 threads; 1 for c1), backend nginx (2 workers), HAProxy (2 threads), nginx as a proxy (2 workers) and pathsplice (one event loop; spliced bytes move in the kernel) share the $(nproc) CPUs"
}

print_table() { # placement
	local pl=$1 t m v d h row label cells
	echo
	if [ "$pl" = loopback ]; then
		echo "### client placement: loopback (wrk in the root namespace → 127.0.0.1; pathsplice --direct-callers off)"
	elif [ "$pl" = same-host ]; then
		echo "### client placement: same-host caller (wrk in the root namespace → 127.0.0.1; pathsplice accelerates its sockets)"
	else
		echo "### client placement: netns (wrk in $NS_CLI → veth → servers in $NS_SRV)"
	fi
	echo
	row="| measure |"
	for t in "${TARGETS[@]}"; do row+=" $t |"; done
	echo "$row"
	row="|---|"
	for t in "${TARGETS[@]}"; do row+="---|"; done
	echo "$row"
	for m in ka c1_p50 c1_p99 bulk upload close cpu own; do
		case $m in
		ka) label="keep-alive c50, req/s" ;;
		c1_p50) label="c1 latency p50, ms" ;;
		c1_p99) label="c1 latency p99, ms" ;;
		bulk) label="1 MiB c8, MiB/s" ;;
		upload) label="64 MiB uploads c4, MiB/s" ;;
		close) label="Connection: close c50, req/s" ;;
		cpu) label="CPU s / 1M req (keep-alive, whole machine)" ;;
		own) label="the proxy's own CPU s / 1M req (keep-alive)" ;;
		esac
		d=$(cell_median "$pl" direct "$m")
		h=$(cell_median "$pl" haproxy "$m")
		cells="| $label |"
		for t in "${TARGETS[@]}"; do
			v=$(cell_median "$pl" "$t" "$m")
			if [ "$m" = own ] && [ "$t" = direct ]; then
				cells+=" — |"
				continue
			fi
			if [ -z "$v" ]; then
				if [ -n "${SKIPPED["$pl|$t"]:-}" ]; then cells+=" skipped |"; else cells+=" fail |"; fi
				continue
			fi
			if [ "$m" = cpu ] && [ -n "$h" ] && [ "$t" != direct ] && [ "$t" != haproxy ]; then
				cells+=" $(fmt "$m" "$v") ($(ratio "$v" "$d") direct, $(ratio "$v" "$h") haproxy) |"
			elif [ "$m" = own ]; then
				cells+=" $(fmt "$m" "$v") ($(ratio "$v" "$h") haproxy) |"
			else
				cells+=" $(fmt "$m" "$v") ($(ratio "$v" "$d")) |"
			fi
		done
		echo "$cells"
	done
	echo
	echo "Ratios are target / direct: higher is better for req/s and MiB/s, lower is better"
	echo "for latency and CPU. \`fail\` = no valid numbers (see notes), \`skipped\` = not built."
	if [ -n "${NOTES[$pl]:-}" ]; then
		echo
		echo "Notes ($pl):"
		printf '%s' "${NOTES[$pl]}"
	fi
}

per_rep_log() { # human-readable per-rep values, for the log
	awk -F'\t' 'NR > 1 { k = $1 " " $3 " " $4; v[k] = v[k] " " $5; if (!(k in seen)) { seen[k] = 1; o[++n] = k } }
		END { for (i = 1; i <= n; i++) printf "%-40s%s\n", o[i], v[o[i]] }' "$RAW"
}

# ---- main -----------------------------------------------------------------------------------
log "logs: $OUT_DIR"
HEADER=$(machine_info)
for pl in "${PLACEMENTS[@]}"; do
	run_pass "$pl"
done

{
	echo "$HEADER"
	for pl in "${PLACEMENTS[@]}"; do print_table "$pl"; done
	echo
	echo "Raw per-rep numbers: $RAW (wrk outputs in $OUT_DIR/wrk/)"
} | tee "$OUT_DIR/results.md"
per_rep_log >"$OUT_DIR/per-rep.txt"

# Exit status: every required target must have produced numbers in every placement.
status=0
for pl in "${PLACEMENTS[@]}"; do
	for t in "${TARGETS[@]}"; do
		[ -n "${REQUIRED[$t]:-}" ] || continue
		for m in ka c1_p50 bulk upload close; do
			if [ -z "${VALS["$pl|$t|$m"]:-}" ]; then
				log "required target $t produced no numbers for $m ($pl)"
				status=1
			fi
		done
	done
done
exit "$status"
