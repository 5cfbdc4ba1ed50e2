# Bad input gets a clear answer and harms nobody else.

errors_setup() {
	local p1
	alloc_port p1
	start_backend s1a "$p1" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		s1a service1 /service1 $p1
	EOT
	start_pathsplice "$T_DIR/registry.json" "$@"
}

# raw REQUEST: the proxy's raw answer
raw() {
	"$TOOLS/ps-client" raw "127.0.0.1:$PS_PORT" "$@"
}

test_malformed_requests_get_400() {
	errors_setup || return 1
	expect_match "$(raw 'GET /service1 HTTP/1.1\nHost: x\n\n')" '^HTTP/1.1 400 ' "bare LF" &&
	expect_match "$(raw 'GET /service1 HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n')" '^HTTP/1.1 400 ' "control byte" &&
	expect_match "$(raw 'POST /service1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')" '^HTTP/1.1 400 ' "CL with TE" &&
	expect_match "$(raw 'POST /service1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd')" '^HTTP/1.1 400 ' "differing CLs" &&
	expect_match "$(raw 'GET /service1 HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n')" '^HTTP/1.1 400 ' "obs-fold" &&
	expect_match "$(raw 'GET /ser vice1 HTTP/1.1\r\n\r\n')" '^HTTP/1.1 400 ' "space in target" &&
	expect_match "$(raw 'GET /service1 HTTP/2.0\r\n\r\n')" '^HTTP/1.1 505 ' "HTTP/2.0 request line" &&
	expect_match "$(raw 'POST /service1 HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n')" '^HTTP/1.1 501 ' "unknown transfer-coding" &&
	expect_match "$(raw 'GET /service1 HTTP/1.1\r\nHost: x\r\n\r\n')" '^HTTP/1.1 200 ' "a good request still works" &&
	stop_pathsplice
}

# A chunked body that goes wrong after its head was routed (and perhaps
# already sent on) is answered 400 at once, after the answers to earlier
# requests, and the connection closes: nobody waits for an answer the
# instance was never asked for.
test_malformed_chunked_body_gets_400() {
	local post='POST /service1/b?sink=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
	local get='GET /service1/first HTTP/1.1\r\nHost: x\r\n\r\n' out mode
	# the kernel finds the error (as a same-host caller, and as any client),
	# or the relay does (--direct off)
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		errors_setup $mode || return 1
		expect_match "$(raw --timeout 5 "${post}ffffffffffffffffff\r\n")" '^HTTP/1.1 400 ' "$mode: chunk size overflow" &&
		expect_match "$(raw --timeout 5 "${post}zz\r\nab\r\n")" '^HTTP/1.1 400 ' "$mode: chunk size not hex" &&
		expect_match "$(raw --timeout 5 "${post}3\r\nabcX\r\n")" '^HTTP/1.1 400 ' "$mode: chunk without its CRLF" || return 1
		# behind a good request on the same connection: its answer comes first
		out=$(raw --timeout 5 "${get}${post}4\r\nabcd\r\nfffffffffffffffffff\r\n")
		expect_match "$out" '^HTTP/1.1 200 ' "$mode: earlier request answered first" &&
		expect_match "$out" 's1a GET /service1/first' "$mode: earlier answer's body" &&
		expect_match "$out" 'HTTP/1.1 400 Bad Request' "$mode: then the 400" &&
		expect_match "$out" '\[eof\]' "$mode: and the connection closes" &&
		expect_eq "$(status /service1/after)" 200 "$mode: the next client" &&
		stop_pathsplice || return 1
	done
}

# An instance that answers twice (here both answers in one write) must not
# have its second answer taken for the answer to the client's next request:
# the connection closes after the first, in each data path mode.
test_unasked_response_closes_the_connection() {
	local out mode
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		errors_setup $mode || return 1
		out=$("$TOOLS/ps-client" keepalive "127.0.0.1:$PS_PORT" '/service1/a?extra=1' /service1/b 2>&1)
		expect_match "$out" '^200 s1a s1a GET /service1/a\?extra=1$' "$mode: the answer" &&
		expect_match "$out" 'closed the connection after response 1 of 2|response 2 of 2: (connection closed before the response|read error: Connection reset by peer)' "$mode: then a close" &&
		expect_no_match "$out" '^200 s1a extra' "$mode: the unasked answer never reaches the client" &&
		expect_match "$(cat "$PS_LOG")" 'sent a response no request asked for' "$mode: logged" &&
		expect_eq "$(status /service1/after)" 200 "$mode: the next client" &&
		stop_pathsplice || return 1
	done
}

# An instance that breaks a response (a head it cannot frame, a head it
# cuts short with a close, a 101 to a request that asked for no upgrade)
# gets the client a 502 for it, after the answers before it, and not a
# byte of the broken response; the connection closes. A head that comes in
# two writes is no broken one. In each data path mode: the kernel finds
# the break (same-host caller, any client) or the relay does (--direct off).
test_broken_response_gets_502() {
	local out mode kind
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		errors_setup $mode || return 1
		for kind in head=garbled head=cut switch=1; do
			out=$("$TOOLS/ps-client" keepalive "127.0.0.1:$PS_PORT" /service1/a "/service1/b?$kind" 2>&1)
			expect_match "$out" '^200 s1a s1a GET /service1/a$' "$mode, $kind: the answer before" &&
			expect_match "$out" '^502 - 502 Bad Gateway$' "$mode, $kind: then a 502" &&
			expect_match "$out" '^conns 1$' "$mode, $kind: on the same connection" || return 1
			# the raw bytes: nothing of the broken response, then the close
			out=$(raw --timeout 5 "GET /service1/b?$kind HTTP/1.1\r\nHost: x\r\n\r\n")
			expect_match "$out" '^HTTP/1.1 502 Bad Gateway' "$mode, $kind: the 502 comes first" &&
			expect_no_match "$out" 'X-Instance|101|other protocol' "$mode, $kind: nothing of the instance's" &&
			expect_match "$out" '\[eof\]' "$mode, $kind: then the close" || return 1
		done
		out=$("$TOOLS/ps-client" keepalive "127.0.0.1:$PS_PORT" '/service1/a?head=split' /service1/b 2>&1)
		expect_eq "$out" "200 s1a s1a GET /service1/a?head=split
200 s1a s1a GET /service1/b
conns 1" "$mode: a head in two writes" &&
		expect_match "$(cat "$PS_LOG")" 'instance s1a sent a response that cannot be framed' "$mode: logged (garbled)" &&
		expect_match "$(cat "$PS_LOG")" 'instance s1a closed the connection in a response head' "$mode: logged (cut)" &&
		expect_match "$(cat "$PS_LOG")" 'instance s1a switched protocols unasked' "$mode: logged (101)" &&
		expect_eq "$(status /service1/after)" 200 "$mode: the next client" &&
		stop_pathsplice || return 1
	done
}

test_unknown_path_gets_404() {
	errors_setup || return 1
	local out
	out=$(curl -sS --max-time 5 -i "$(url /nowhere)")
	expect_match "$out" '^HTTP/1.1 404 Not Found' "status line" &&
	expect_match "$out" 'no service for this path' "body" &&
	stop_pathsplice
}

test_oversized_head_gets_431() {
	errors_setup || return 1
	local big
	big=$(head -c 9000 /dev/zero | tr '\0' 'a')
	expect_eq "$(status /service1 -H "X-Big: $big")" 431 "9000-byte header" &&
	expect_eq "$(status /service1 -H "X-Big: ${big:0:7000}")" 200 "7000-byte header" &&
	stop_pathsplice
}

test_slow_head_gets_408_and_others_are_served() {
	errors_setup --head-timeout 1s || return 1
	local slow out t0 t1
	"$TOOLS/ps-client" raw --drip 300 --timeout 10 "127.0.0.1:$PS_PORT" \
		'GET /service1 HTTP/1.1\r\nHost: slowly-sent-header\r\n\r\n' >"$T_DIR/slow.out" &
	slow=$!
	sleep 0.3
	t0=$(date +%s%N)
	out=$(for i in 1 2 3 4 5; do body /service1/fast; done)
	t1=$(date +%s%N)
	wait "$slow"
	expect_eq "$(grep -c '^s1a GET /service1/fast$' <<<"$out")" 5 "requests beside the slow client" || return 1
	[ $(((t1 - t0) / 1000000)) -lt 1000 ] || { fail "other clients waited for the slow one"; return 1; }
	expect_match "$(cat "$T_DIR/slow.out")" '^HTTP/1.1 408 ' "slow client" &&
	stop_pathsplice
}

# A keep-alive connection with no request for --idle-timeout is closed: a
# FIN after its last answer. One whose requests come more often, one that
# waits for a slow answer, and a WebSocket tunnel with nothing to say are
# not; nor is any other connection.
test_idle_keepalive_connection_is_closed() {
	local out mode t0 t1 ws wsc closed=0
	ws='GET /service1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
	ws+='Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		errors_setup --idle-timeout 1s $mode || return 1
		"$TOOLS/ps-client" raw --idle 2500 --timeout 10 "127.0.0.1:$PS_PORT" "$ws" >"$T_DIR/ws.out" &
		wsc=$!
		out=$("$TOOLS/ps-client" keepalive --gap 600 "127.0.0.1:$PS_PORT" /service1/a /service1/b \
			/service1/c /service1/d 2>&1)
		expect_match "$out" '^conns 1$' "$mode: requests 0.6 s apart keep their connection" || return 1
		# a 2.5 s answer, then silence: the close comes a second or two after it
		t0=$(now_ms)
		out=$(raw --idle 5000 --timeout 10 'GET /service1/slow?sleep_ms=2500 HTTP/1.1\r\nHost: x\r\n\r\n')
		t1=$(now_ms)
		expect_match "$out" '^HTTP/1.1 200 ' "$mode: the slow answer" &&
		expect_match "$out" '\[eof\]' "$mode: then the idle connection closes" || return 1
		[ $((t1 - t0)) -ge 3400 ] || { fail "$mode: closed $((t1 - t0)) ms after the request"; return 1; }
		wait "$wsc"
		expect_match "$(cat "$T_DIR/ws.out")" '^HTTP/1.1 101 ' "$mode: the upgrade" &&
		expect_match "$(cat "$T_DIR/ws.out")" '\[idle\]' "$mode: a silent tunnel stays open" &&
		closed=$((closed + 1)) &&
		expect_eq "$(grep -c 'idle for 1000 ms: closed' "$PS_LOG")" "$closed" "$mode: one connection closed idle" &&
		stop_pathsplice || return 1
	done
}

# An exchange on which nothing moves for --idle-timeout is closed: a client
# that stops halfway through a request body, and one that stops reading a
# response. (A silent WebSocket is not: idle_keepalive_connection_is_closed.)
test_stalled_exchange_is_closed() {
	local out mode t0 t1 n=0
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		errors_setup --idle-timeout 1s $mode || return 1
		t0=$(now_ms)
		out=$(raw --idle 5000 --timeout 10 \
			'POST /service1/up?sink=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc')
		t1=$(now_ms)
		expect_match "$out" '^\[eof\]$' "$mode: a body stopped after 3 of 100 bytes: closed, unanswered" ||
			return 1
		[ $((t1 - t0)) -ge 1000 ] || { fail "$mode: closed after $((t1 - t0)) ms"; return 1; }
		if out=$("$TOOLS/ps-client" stall --resume --timeout 20 "127.0.0.1:$PS_PORT" \
			"/service1/big?bytes=$((16 << 20))" 3 2>&1); then
			fail "$mode: a reader stopped for 3 s got the whole response: $out"
			return 1
		fi
		n=$((n + 2))
		expect_eq "$(grep -c 'in an exchange: closed' "$PS_LOG")" "$n" "$mode: both logged" &&
		expect_eq "$(status /service1/after)" 200 "$mode: the next client" &&
		stop_pathsplice || return 1
	done
}

# A later request on a keep-alive connection whose head stops before its
# path ends (so the daemon holds it, not the instance) gets 408 after
# --head-timeout, after the answer before it; the connection closes.
test_stalled_later_head_gets_408() {
	local out mode t0 t1
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		errors_setup --head-timeout 1s $mode || return 1
		t0=$(now_ms)
		out=$(raw --idle 4000 --timeout 10 'GET /service1/a HTTP/1.1\r\nHost: x\r\n\r\nGET /serv')
		t1=$(now_ms)
		expect_match "$out" 's1a GET /service1/a' "$mode: the first request's answer" &&
		expect_match "$out" 'HTTP/1.1 408 Request Timeout' "$mode: then 408" &&
		expect_match "$out" '\[eof\]' "$mode: and a close" || return 1
		[ $((t1 - t0)) -ge 1000 ] || { fail "$mode: 408 after $((t1 - t0)) ms"; return 1; }
		stop_pathsplice || return 1
	done
}

# A request the instance has whole and does not begin to answer within
# --response-timeout gets 504, after the answers before it, and the
# connection closes; a slower answer within the timeout is not cut.
test_late_answer_gets_504() {
	local out mode n=0
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		errors_setup --response-timeout 1s $mode || return 1
		out=$("$TOOLS/ps-client" keepalive "127.0.0.1:$PS_PORT" '/service1/a?sleep_ms=400' \
			'/service1/b?sleep_ms=4000' 2>&1)
		expect_match "$out" '^200 s1a s1a GET /service1/a\?sleep_ms=400$' "$mode: an answer in 0.4 s" &&
		expect_match "$out" '^504 - 504 Gateway Timeout$' "$mode: then 504" &&
		expect_match "$out" '^conns 1$' "$mode: on the same connection" || return 1
		n=$((n + 1))
		expect_eq "$(grep -c 'instance s1a did not begin to answer within 1000 ms (504)' "$PS_LOG")" \
			"$n" "$mode: logged" &&
		expect_eq "$(status /service1/after)" 200 "$mode: the next client" &&
		stop_pathsplice || return 1
	done
}

test_no_live_instance_gets_503() {
	local p1 p2
	alloc_port p1 p2
	write_registry "$T_DIR/registry.json" <<-EOT
		d1 deadsvc /dead $p1
		d2 deadsvc /dead $p2
	EOT
	start_pathsplice "$T_DIR/registry.json" || return 1
	local out
	out=$(curl -sS --max-time 10 -i "$(url /dead/x)")
	expect_match "$out" '^HTTP/1.1 503 ' "status" &&
	expect_match "$out" 'no live instance of deadsvc' "body names the service" &&
	stop_pathsplice
}

test_refused_instance_is_skipped_before_the_client_sees_it() {
	local p1 p2 i out
	alloc_port p1 p2
	start_backend live "$p2" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		gone svc /svc $p1
		live svc /svc $p2
	EOT
	start_pathsplice "$T_DIR/registry.json" || return 1
	out=$(for i in $(seq 1 10); do curl -s --max-time 5 -o /dev/null -w '%{http_code}\n' "$(url /svc/x)"; done)
	expect_eq "$(grep -c '^200$' <<<"$out")" 10 "every request answered 200" &&
	stop_pathsplice
}

test_connect_method_is_refused() {
	errors_setup || return 1
	expect_match "$(raw 'CONNECT /service1 HTTP/1.1\r\nHost: x\r\n\r\n')" '^HTTP/1.1 405 ' "CONNECT" &&
	stop_pathsplice
}

test_bad_registry_is_rejected_naming_the_field() {
	local out rc
	echo '{"instances":[{"id":"a","name":"s","path":"/s","host":"test","port":"80a"}]}' >"$T_DIR/bad.json"
	out=$("$PATHSPLICE" run --listen 127.0.0.1:$((T_PORT + 39)) --registry "$T_DIR/bad.json" \
		--host test --pin-dir "$PS_PIN" 2>&1)
	rc=$?
	expect_eq "$rc" 1 "exit status" &&
	expect_match "$out" 'bad.json: instance #1 \(id "a"\): field "port"' "error names file, record and field" &&
	[ ! -e "$PS_PIN" ] || fail "pins left behind"
}

# Every traffic shape at once for 20 s, malformed input included, with
# instances added, drained and stopped underneath (scripts/soak.sh): no
# sanitizer report, no failed client, nothing held once the clients left.
test_soak_of_every_traffic_shape_holds_nothing() {
	if ! PATHSPLICE_BIN=$PATHSPLICE "$ROOT/scripts/soak.sh" --duration 20 --port-base "$T_PORT" >"$T_DIR/soak.out" 2>&1; then
		fail "soak:$(grep -E 'FAILED' "$T_DIR/soak.out" | head -5 | tr -s ' ' | tr '\n' ';')"
		return 1
	fi
	echo "    note: soak$(grep -E '^  (keepalive|loops):' "$T_DIR/soak.out" | tr -s ' ' | tr '\n' ';')"
}
