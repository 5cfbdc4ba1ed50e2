# Shared helpers for the integration tests (sourced by tests/run.sh).
#
# Every process a test starts is recorded and stopped by PID when the test
# ends; every pin dir a test uses is private to it. Tests use 127.0.0.1 only.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BUILD=$ROOT/build
TOOLS=$BUILD/tests
PATHSPLICE=${PATHSPLICE:-$BUILD/pathsplice-asan}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=67}

# per-test state, reset by test_begin
T_DIR=
T_PIDS=()
T_PORT=
PS_PID=
PS_PORT=
PS_PIN=
PS_LOG=

# Ports: each test gets its own block of 20, from a base the runner picks.
PORT_BASE=${PORT_BASE:-17000}
# alloc_port VAR...: give each VAR a fresh port of this test's block that
# nothing else listens on
alloc_port() {
	local v
	for v in "$@"; do
		T_PORT=$((T_PORT + 1))
		while ss -Hltn "sport = :$T_PORT" | grep -q .; do
			T_PORT=$((T_PORT + 1))
		done
		printf -v "$v" '%s' "$T_PORT"
	done
}

test_begin() {
	local name=$1 index=$2
	T_DIR=$(mktemp -d "/tmp/pstest.$name.XXXXXX")
	T_PIDS=()
	T_PORT=$((PORT_BASE + index * 40))
	PS_PID=
	PS_PIN=/sys/fs/bpf/pstest-$$-$index
	PS_LOG=$T_DIR/pathsplice.log
}

test_end() {
	local pid
	if [ -n "$PS_PID" ] && kill -0 "$PS_PID" 2>/dev/null; then
		kill -TERM "$PS_PID" 2>/dev/null
		wait_pid_exit "$PS_PID" 5 || kill -KILL "$PS_PID" 2>/dev/null
	fi
	for pid in "${T_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${T_PIDS[@]}"; do
		wait_pid_exit "$pid" 3 || kill -KILL "$pid" 2>/dev/null
	done
	[ -d "$PS_PIN" ] && rm -rf "$PS_PIN"
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		echo "    (kept $T_DIR)"
	else
		rm -rf "$T_DIR"
	fi
}

# wait_pid_exit PID SECONDS: true once PID is gone
wait_pid_exit() {
	local pid=$1 i
	for ((i = 0; i < $2 * 20; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.05
	done
	return 1
}

# wait_port PORT [SECONDS]: true once something listens on 127.0.0.1:PORT
wait_port() {
	local port=$1 i
	for ((i = 0; i < ${2:-5} * 20; i++)); do
		ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
		sleep 0.05
	done
	return 1
}

# load_client CMD...: run a load generator in a session of its own, as the
# client services it stands for would be. With sched_autogroup (enabled on this
# kernel), a session whose processes keep both CPUs busy left kernel
# workers and ksoftirqd runnable but waiting for seconds (Linux 6.18, even
# for wrk against a backend with no pathsplice at all); sk_skb redirects
# are sent by such a worker, so a load generator in the tests' own session
# held fresh connections up for seconds.
load_client() {
	setsid -w "$@"
}

fail() {
	echo "    FAIL: $*" >&2
	return 1
}

# start_backend NAME PORT [extra ps-backend args]
start_backend() {
	local name=$1 port=$2
	shift 2
	"$TOOLS/ps-backend" --listen "127.0.0.1:$port" --name "$name" "$@" \
		>>"$T_DIR/backend-$name.log" 2>&1 &
	T_PIDS+=($!)
	wait_port "$port" || fail "backend $name did not listen on $port"
}

# listener_pid PORT: the process listening on PORT
listener_pid() {
	ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

# kill_backend PORT: stop the backend listening on PORT right away
kill_backend() {
	local pid
	pid=$(listener_pid "$1")
	[ -n "$pid" ] || return 1
	disown "$pid" 2>/dev/null	# no "Killed" job report in the test output
	kill -KILL "$pid" && wait_pid_exit "$pid" 2
}

# registry FILE then records "id name path port [extra json]" on stdin
write_registry() {
	local file=$1 first=1 id name path port extra
	{
		echo '{"instances":['
		while read -r id name path port extra; do
			[ -z "$id" ] && continue
			[ $first = 1 ] || echo ','
			first=0
			printf '{"id":"%s","name":"%s","path":"%s","host":"test","port":%s%s}' \
				"$id" "$name" "$path" "$port" "${extra:+,$extra}"
		done
		echo ']}'
	} >"$file"
}

# Test daemons run without the admin endpoint (its default port is shared by
# SO_REUSEPORT); a test that wants one passes --admin, or empties this.
PS_ADMIN_ARGS=(--admin off)

# start_pathsplice REGISTRY [extra args]: listens on a fresh port, PS_PORT
start_pathsplice() {
	local registry=$1
	shift
	alloc_port PS_PORT
	"$PATHSPLICE" run --listen "127.0.0.1:$PS_PORT" --registry "$registry" --host test \
		--pin-dir "$PS_PIN" "${PS_ADMIN_ARGS[@]}" -v "$@" >>"$PS_LOG" 2>&1 &
	PS_PID=$!
	if ! wait_port "$PS_PORT" 10; then
		cat "$PS_LOG" >&2
		fail "pathsplice did not start"
		return 1
	fi
}

# stop_pathsplice: SIGTERM, expect exit 0, no sanitizer report, pins gone
stop_pathsplice() {
	local rc
	kill -TERM "$PS_PID" 2>/dev/null || { fail "pathsplice is not running"; return 1; }
	if ! wait_pid_exit "$PS_PID" 10; then
		fail "pathsplice did not exit within 10 s of SIGTERM"
		return 1
	fi
	wait "$PS_PID" 2>/dev/null
	rc=$?
	PS_PID=
	check_sanitizers || return 1
	[ "$rc" = 0 ] || { tail -20 "$PS_LOG" >&2; fail "pathsplice exited with $rc"; return 1; }
	[ ! -e "$PS_PIN" ] || { fail "pins left in $PS_PIN: $(ls "$PS_PIN")"; return 1; }
}

check_sanitizers() {
	if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$PS_LOG"; then
		grep -A30 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$PS_LOG" | head -40 >&2
		fail "sanitizer report in the pathsplice log"
		return 1
	fi
}

url() {
	echo "http://127.0.0.1:$PS_PORT$1"
}

# body PATH [curl args]: the response body, fails on transport errors
body() {
	local path=$1
	shift
	curl -sS --max-time 10 "$@" "$(url "$path")"
}

# status PATH [curl args]: the HTTP status code
status() {
	local path=$1
	shift
	curl -s -o /dev/null --max-time 10 -w '%{http_code}' "$@" "$(url "$path")"
}

# totals FIELD: a total of the daemon's stats, from its pinned maps
totals() {
	"$PATHSPLICE" status --pin-dir "$PS_PIN" --json | jq -r ".totals.$1"
}

expect_eq() {
	[ "$1" = "$2" ] || fail "${3:-value}: expected '$2', got '$1'"
}

expect_match() {
	printf '%s' "$1" | grep -qE -- "$2" || fail "${3:-output}: expected /$2/ in: $(printf '%s' "$1" | head -c 600)"
}

expect_no_match() {
	! printf '%s' "$1" | grep -qE -- "$2" || fail "${3:-output}: unexpected /$2/ in: $(printf '%s' "$1" | head -c 600)"
}

# now_ms: wall clock in milliseconds, for "write -> routed" notes
now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# poll_within T0 SECONDS CMD...: run CMD every 10 ms until it succeeds;
# prints the milliseconds since T0 (now_ms) when it did, fails after SECONDS
poll_within() {
	local t0=$1 end=$(($(now_ms) + $2 * 1000))
	shift 2
	while [ "$(now_ms)" -lt "$end" ]; do
		if "$@"; then
			echo $(($(now_ms) - t0))
			return 0
		fi
		sleep 0.01
	done
	return 1
}

body_matches() { body "$1" 2>/dev/null | grep -qE -- "$2"; }
status_is() { [ "$(status "$1")" = "$2" ]; }

# routed_within T0 PATH REGEX SECONDS: until a request's body matches
routed_within() {
	poll_within "$1" "$4" body_matches "$2" "$3" ||
		fail "$2 never answered /$3/ within ${4}s (last: $(body "$2" 2>&1 | head -c 200))"
}

# status_within T0 PATH CODE SECONDS: until PATH answers CODE
status_within() {
	poll_within "$1" "$4" status_is "$2" "$3" ||
		fail "$2 never answered $3 within ${4}s (last: $(status "$2"))"
}

# log_within REGEX SECONDS: wait for a line of the pathsplice log
log_within() {
	local i
	for ((i = 0; i < $2 * 20; i++)); do
		grep -qE -- "$1" "$PS_LOG" && return 0
		sleep 0.05
	done
	fail "no /$1/ in the pathsplice log within $2 s: $(tail -5 "$PS_LOG")"
}

# reached PATH COUNT: the distinct backend names that COUNT fresh connections reach
reached() {
	local i
	for ((i = 0; i < $2; i++)); do body "$1" | cut -d' ' -f1; done | sort -u | tr '\n' ' '
}

# backend_stat PORT FIELD: a ps-backend counter (requests, bytes_out, conns);
# asking counts one connection and one request
backend_stat() {
	curl -sS --max-time 5 "http://127.0.0.1:$1/__stats" |
		awk -v f="$2" '{ for (i = 1; i < NF; i++) if ($i == f) print $(i + 1) }'
}
