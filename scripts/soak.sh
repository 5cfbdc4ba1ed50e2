#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions run by loop() and the EXIT trap
# pathsplice soak (run by `make soak`): every traffic shape at once against the
# AddressSanitizer/UBSan build, with registry changes underneath, for a bounded
# time. It fails on a sanitizer report, a daemon that dies, a wrong answer, a
# client failure, or a connection the daemon still holds once every client has
# gone. `make test` runs it for 20 s (test soak_of_every_traffic_shape_holds_nothing);
# `make soak` for a minute. `scripts/soak.sh -h` for options.
#
# Everything it starts is stopped by PID on exit, including on Ctrl-C.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PATHSPLICE_BIN:-$ROOT/build/pathsplice-asan}
TOOLS=$ROOT/build/tests
DURATION=60
CALLERS=on
EXTRA=()
BASE=19300	# ports BASE+1..BASE+4 instances, BASE+30 pathsplice, BASE+39 its admin
PIN=/sys/fs/bpf/ps-soak

usage() {
	cat <<EOF
Usage: scripts/soak.sh [--duration S] [--direct-callers on|off] [--port-base N]
                        [-- pathsplice run args]

Runs, for S seconds (default $DURATION), all at once through one daemon
($BIN): keep-alive requests alternating services with bodies, Connection:
close, 1 MiB responses, 8 MiB uploads, slow readers, pipelines (4 and 100
deep), half-closed uploads, WebSockets, clients that reset mid-response,
malformed requests; meanwhile an instance is added, one removed (drained)
and put back, and the added one stopped once it has no connection.
Ports $((BASE + 1))-$((BASE + 4)), $((BASE + 30)) and $((BASE + 39)) on 127.0.0.1, pins in $PIN.
Needs \`make tests\` (the ASan build and the test tools) and wrk.
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--duration) DURATION=${2:?}; shift 2 ;;
	--direct-callers) CALLERS=${2:?}; shift 2 ;;
	--port-base) BASE=${2:?}; shift 2 ;;
	--) shift; EXTRA=("$@"); break ;;
	-h | --help) usage; exit 0 ;;
	*) echo "soak: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done
if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 10 || DURATION > 3600)); then
	echo "soak: --duration must be 10-3600 seconds" >&2
	exit 2
fi
if ! [[ $BASE =~ ^[0-9]+$ ]] || ((BASE < 1024 || BASE > 65000)); then
	echo "soak: --port-base must be 1024-65000" >&2
	exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "soak: must run as root (BPF)" >&2; exit 1; }
for f in "$BIN" "$TOOLS/ps-backend" "$TOOLS/ps-client"; do
	[ -x "$f" ] || { echo "soak: $f missing (run: make tests)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "soak: wrk missing (run: make deps)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/ps-soak.XXXXXX)
PIDS=()		# servers, stopped last
LOADS=()	# client loops
PS_PID=""
cleanup() {
	local rc=$? p
	trap '' INT TERM
	for p in "${LOADS[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
	[ -n "$PS_PID" ] && kill "$PS_PID" 2>/dev/null && wait "$PS_PID" 2>/dev/null
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null
	rm -rf "$PIN"
	[ "$rc" -eq 0 ] && rm -rf "$DIR" || echo "soak: logs kept in $DIR" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$DIR"

P=$((BASE + 30))
ADMIN=127.0.0.1:$((BASE + 39))
registry() { # instance ids in service svc1, besides svc2's b1
	local id port sep="" recs=""
	for id in "$@"; do
		port=$((BASE + ${id#a}))
		recs+="$sep{\"id\":\"$id\",\"name\":\"svc1\",\"path\":\"/service1\",\"host\":\"h\",\"port\":$port}"
		sep=,
	done
	echo "{\"instances\":[$recs,{\"id\":\"b1\",\"name\":\"svc2\",\"path\":\"/service2\",\"host\":\"h\",\"port\":$((BASE + 3))}]}" >reg.json.new
	mv reg.json.new reg.json
}
backend() { # number
	"$TOOLS/ps-backend" --listen "127.0.0.1:$((BASE + $1))" --name "i$1" >"be$1.log" 2>&1 &
	PIDS+=($!)
}
for i in 1 2 3; do backend "$i"; done
registry a1 a2
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	"$BIN" run --listen "127.0.0.1:$P" --registry reg.json --host h --pin-dir "$PIN" \
	--admin "$ADMIN" --direct-callers "$CALLERS" --drain-timeout 3s "${EXTRA[@]}" >ps.log 2>&1 &
PS_PID=$!
for ((i = 0; i < 100; i++)); do
	ss -Hltn "sport = :$P" | grep -q . && break
	kill -0 "$PS_PID" 2>/dev/null || { cat ps.log >&2; exit 1; }
	sleep 0.1
done

U=http://127.0.0.1:$P
END=$((SECONDS + DURATION))
cat >alt.lua <<'EOF'
local n = 0
local body = string.rep("b", 3000)
request = function()
  n = n + 1
  if n % 3 == 0 then return wrk.format("GET", "/service2/x") end
  if n % 3 == 1 then return wrk.format("GET", "/service1/y?bytes=5000") end
  return wrk.format("POST", "/service1/z?sink=1", nil, body)
end
EOF
deep="" # 100 pipelined GETs and HEADs over both services
for ((i = 0; i < 100; i++)); do
	case $((i % 4)) in
	0) deep+='GET /service1/a' ;; 1) deep+='HEAD /service2/b' ;;
	2) deep+='GET /service2/c?bytes=3000' ;; 3) deep+='HEAD /service1/d?bytes=9' ;;
	esac
	deep+=' HTTP/1.1\r\nHost: x\r\n\r\n'
done
post='POST /service1/b?sink=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n'
# malformed input and the status each must get (first answer on the connection)
bad=("${post}ffffffffffffffffff\r\n|400" "${post}zz\r\n|400" "${post}3\r\nabcX|400"
	'GET /service1/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n|400'
	'POST /service1/ HTTP/1.1\r\nContent-Length: 1 2\r\n\r\nab|400'
	'GET /nothing HTTP/1.1\r\n\r\n|404' 'GET /service1/ HTTP/1.1\r\n:\r\n\r\n|400'
	'GET /service1/?status=426 HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n|426'
	'GET /service1/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x85|400'
	'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03|400')

# loop NAME CMD...: run CMD until the end; a failure is written to fails
loop() {
	local name=$1 n=0
	shift
	(
		while [ $SECONDS -lt $END ]; do
			"$@" >/dev/null 2>>"$name.err" || echo "$name" >>fails
			n=$((n + 1))
		done
		echo "$name $n" >>counts
	) &
	LOADS+=($!)
}
deep_check() {
	local n
	n=$("$TOOLS/ps-client" raw "127.0.0.1:$P" "$deep" --idle 1000 --timeout 10 | grep -o 'HTTP/1.1 200' | wc -l)
	[ "$n" -eq 100 ] || { echo "deep pipeline: $n of 100 answers" >&2; return 1; }
}
bad_check() {
	local b got
	for b in "${bad[@]}"; do
		got=$("$TOOLS/ps-client" raw "127.0.0.1:$P" "${b%|*}" --idle 500 --timeout 5 | head -1)
		[[ $got == "HTTP/1.1 ${b##*|} "* ]] || { echo "${b%|*}: got '$got'" >&2; return 1; }
	done
}
resets() {
	"$TOOLS/ps-client" raw "127.0.0.1:$P" 'GET /service1/r?bytes=4000000 HTTP/1.1\r\n\r\nGET /service2/r HTTP/1.1\r\n\r\n' --idle 20 --reset &&
		"$TOOLS/ps-client" raw "127.0.0.1:$P" 'GET /service2/r?bytes=300000 HTTP/1.1\r\n\r\n' --idle 5 --reset
}
churn() { # a4 in, a2 out (drained), a2 back and a4 out, then a4 stopped
	local step=$((DURATION / 4))
	sleep "$step"; backend 4; registry a1 a2 a4; kill -HUP "$PS_PID"
	sleep "$step"; registry a1 a4; kill -HUP "$PS_PID"
	sleep "$step"; registry a1 a2; kill -HUP "$PS_PID"
	sleep 4; kill "${PIDS[-1]}"
}

setsid -w wrk -t1 -c20 -d"${DURATION}s" -s alt.lua "$U/" >w-keepalive.log 2>&1 &
LOADS+=($!)
setsid -w wrk -t1 -c10 -d"${DURATION}s" -H 'Connection: close' "$U/service2/c" >w-close.log 2>&1 &
LOADS+=($!)
setsid -w wrk -t1 -c4 -d"${DURATION}s" "$U/service1/big?bytes=1048576" >w-1mib.log 2>&1 &
LOADS+=($!)
loop upload "$TOOLS/ps-client" upload "127.0.0.1:$P" "/service1/u?sink=1" 8388608 --repeat 2
loop stall "$TOOLS/ps-client" stall "127.0.0.1:$P" "/service1/s?bytes=4194304" 1 --resume
loop pipeline "$TOOLS/ps-client" pipeline "127.0.0.1:$P" /service1/a /service2/b '/service1/c?bytes=70000' /service2/d
loop deep deep_check
loop halfclose "$TOOLS/ps-client" halfclose "127.0.0.1:$P" "/service2/h?sink=1" --body-bytes 300000
loop ws "$TOOLS/ps-client" ws "127.0.0.1:$P" /service2/ws hello there
loop reset resets
loop malformed bad_check
churn &
LOADS+=($!)
wait "${LOADS[@]}"
LOADS=()

status=0
sleep 1 # the last closes reach the daemon
held=$(ss -Htn state all "sport = :$P" | grep -cv -e LISTEN -e TIME-WAIT || true)
# connections with an instance, also those whose client socket is gone
active=$(curl -s --max-time 5 "http://$ADMIN/metrics" |
	awk '/^pathsplice_instance_connections_active/ { s += $NF } END { print s + 0 }')
after=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$U/service1/after" || true)
alive=1
kill -0 "$PS_PID" 2>/dev/null || alive=0
echo "soak: $DURATION s, --direct-callers $CALLERS ${EXTRA[*]}"
for f in w-*.log; do
	name=${f#w-}
	echo "  ${name%.log}: $(awk '/requests in/ { r = $1 } /Socket errors/ { e = $0 } /Non-2xx/ { x = $0 }
		END { printf "%s requests%s%s", r, e ? "; " e : "", x ? "; " x : "" }' "$f")"
done
echo "  loops: $(sort counts | tr '\n' ' ')"
if [ -s fails ]; then
	echo "  FAILED: $(sort fails | uniq -c | tr '\n' ';' | tr -s ' ') (see $DIR/*.err)"
	status=1
fi
if [ "$alive" -eq 0 ]; then
	echo "  FAILED: the daemon died"
	status=1
else
	kill -TERM "$PS_PID"
	wait "$PS_PID" || { echo "  FAILED: the daemon exited with status $?"; status=1; }
	PS_PID=""
fi
[ "$held" -eq 0 ] || { echo "  FAILED: $held client sockets still open after every client left"; status=1; }
[ "$active" -eq 0 ] || { echo "  FAILED: $active connections to instances still open after every client left"; status=1; }
[ "$after" = 200 ] || { echo "  FAILED: a request after the soak got '$after'"; status=1; }
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' ps.log; then
	echo "  FAILED: sanitizer report in $DIR/ps.log"
	status=1
fi
[ "$status" -eq 0 ] && echo "  ok: no sanitizer report, nothing held, every answer right"
exit "$status"
