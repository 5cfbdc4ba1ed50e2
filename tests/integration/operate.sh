# Operating it: signals (SIGTERM drains, SIGHUP re-reads) and upgrades that
# drop nothing.

# start_second_pathsplice REGISTRY: another daemon on $PS_PORT and $PS_PIN,
# logging to $T_DIR/pathsplice2.log; PS2_PID
start_second_pathsplice() {
	"$PATHSPLICE" run --listen "127.0.0.1:$PS_PORT" --registry "$1" --host test \
		--pin-dir "$PS_PIN" -v >>"$T_DIR/pathsplice2.log" 2>&1 &
	PS2_PID=$!
	T_PIDS+=("$PS2_PID")
}

test_sigterm_stops_accepting_and_lets_requests_finish() {
	local pa
	alloc_port pa
	start_backend a "$pa" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $pa
	EOT
	start_pathsplice "$T_DIR/registry.json" || return 1
	curl -s -o "$T_DIR/slow.out" --max-time 10 -w '%{http_code}' \
		"$(url '/service1/slow?sleep_ms=1500')" >"$T_DIR/code" &
	local cpid=$! t0
	sleep 0.4
	t0=$(now_ms)
	kill -TERM "$PS_PID"
	sleep 0.2
	expect_eq "$(status /service1/new)" 000 "a new connection after SIGTERM is refused" || return 1
	wait "$cpid"
	expect_eq "$(cat "$T_DIR/code")" 200 "the request in flight finished" &&
	expect_match "$(cat "$T_DIR/slow.out")" '^a GET /service1/slow' "its body" || return 1
	wait_pid_exit "$PS_PID" 5 || fail "pathsplice still running after its last connection" || return 1
	echo "    note: SIGTERM -> exit with one request in flight: $(($(now_ms) - t0)) ms"
	PS_PID=
	check_sanitizers &&
	expect_match "$(cat "$PS_LOG")" 'draining: 1 connection' "drain log" &&
	[ ! -e "$PS_PIN" ] || fail "pins left in $PS_PIN"
}

# A draining daemon closes keep-alive connections once they are idle
# between exchanges (as nginx does on a graceful stop), not at the drain
# timeout; a connection still busy gets to finish.
test_sigterm_closes_idle_keepalive_connections() {
	local pa idle busy t0
	alloc_port pa
	start_backend a "$pa" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $pa
	EOT
	start_pathsplice "$T_DIR/registry.json" --drain-timeout 20s || return 1
	"$TOOLS/ps-client" raw --idle 15000 --timeout 20 "127.0.0.1:$PS_PORT" \
		'GET /service1/idle HTTP/1.1\r\nHost: x\r\n\r\n' >"$T_DIR/idle.out" &
	idle=$!
	curl -s -o "$T_DIR/busy.out" --max-time 10 "$(url '/service1/busy?sleep_ms=2500')" &
	busy=$!
	sleep 0.5
	t0=$(now_ms)
	kill -TERM "$PS_PID"
	wait "$idle" "$busy"
	expect_match "$(cat "$T_DIR/idle.out")" '^HTTP/1.1 200 ' "the idle connection's answer" &&
	expect_match "$(cat "$T_DIR/idle.out")" '\[eof\]' "then a close" &&
	expect_match "$(cat "$T_DIR/busy.out")" '^a GET /service1/busy' "the busy one finished" || return 1
	wait_pid_exit "$PS_PID" 5 || { fail "pathsplice still running"; return 1; }
	echo "    note: SIGTERM -> exit with an idle and a busy connection: $(($(now_ms) - t0)) ms"
	PS_PID=
	check_sanitizers &&
	expect_match "$(cat "$PS_LOG")" 'idle for 1000 ms: closed' "logged" &&
	[ ! -e "$PS_PIN" ] || fail "pins left in $PS_PIN"
}

test_sighup_reads_the_registry_again() {
	# an HTTP registry polled once a minute: only SIGHUP makes it read now
	http_registry_setup --poll-interval 60s || return 1
	expect_eq "$(reached /service1 3)" "a " "before" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		b service1 /service1 $P2
	EOT
	sleep 0.5
	expect_eq "$(reached /service1 3)" "a " "not polled yet" || return 1
	local t0 ms
	t0=$(now_ms)
	kill -HUP "$PS_PID"
	ms=$(routed_within "$t0" /service1 '^b ' 3) || return 1
	echo "    note: SIGHUP -> first request routed by the new registry: ${ms} ms"
	expect_match "$(cat "$PS_LOG")" 'reading http://.* again \(SIGHUP\)' "log" &&
	stop_pathsplice
}

# A second daemon on the same address and pin dir takes the listener over
# while wrk and a stream of fresh connections run: nothing fails, and the
# keep-alive connections opened before the switch work to their end.
test_upgrade_under_load_drops_nothing() {
	local pa pb secs=6 i
	alloc_port pa pb
	start_backend a "$pa" && start_backend b "$pb" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $pa
		b service1 /service1 $pb
	EOT
	start_pathsplice "$T_DIR/registry.json" --drain-timeout 20s || return 1
	local old=$PS_PID
	load_client wrk -t1 -c8 -d"${secs}s" --timeout 5s "$(url /service1/ka)" >"$T_DIR/wrk" 2>&1 &
	local w=$!
	(
		end=$(($(date +%s) + secs))
		while [ "$(date +%s)" -lt "$end" ]; do
			curl -s -o /dev/null --max-time 5 -w '%{http_code}\n' "$(url /service1/fresh)"
		done
	) >"$T_DIR/fresh" &
	local f=$!
	sleep 1.5
	start_second_pathsplice "$T_DIR/registry.json"
	for ((i = 0; i < 100; i++)); do
		grep -q 'took over the listener' "$T_DIR/pathsplice2.log" 2>/dev/null && break
		sleep 0.05
	done
	grep -q 'took over the listener' "$T_DIR/pathsplice2.log" ||
		{ cat "$T_DIR/pathsplice2.log" >&2; fail "the second daemon did not take over"; return 1; }
	kill -TERM "$old"	# the operator's "stop the first": it is draining already
	sleep 0.5
	kill -0 "$old" 2>/dev/null || fail "the old daemon exited with wrk's connections still open" || return 1
	wait "$w" "$f"
	local out errs
	out=$(cat "$T_DIR/wrk")
	expect_match "$out" 'Requests/sec' "wrk ran" &&
	expect_no_match "$out" 'Socket errors|Non-2xx' "wrk errors (connections from before the switch)" || return 1
	errs=$(grep -vc '^200$' "$T_DIR/fresh")
	echo "    note: upgrade under load: $(grep -oE '[0-9]+ requests in' <<<"$out") keep-alive, $(wc -l <"$T_DIR/fresh") fresh connections, $errs failed"
	expect_eq "$errs" 0 "fresh connections that failed during the switch" || return 1
	# the old daemon leaves once its connections are done, taking its pins along
	wait_pid_exit "$old" 5 || fail "the old daemon did not exit after its connections ended" || return 1
	check_sanitizers || return 1
	expect_match "$(cat "$PS_LOG")" 'a new pathsplice took over the listener: draining' "old log" || return 1
	[ -z "$(ls -d "$PS_PIN"-old-* 2>/dev/null)" ] || fail "the old daemon's pins are left" || return 1
	[ -e "$PS_PIN/services" ] || fail "the new daemon's pins are missing" || return 1
	expect_match "$(body /service1/after)" '^[ab] GET /service1/after$' "the new daemon serves" || return 1
	PS_PID=$PS2_PID
	PS_LOG=$T_DIR/pathsplice2.log
	stop_pathsplice
}

# The admin endpoint shows the host's processes: loopback unless an address is
# named; ":PORT" is refused rather than read as "every address".
test_admin_binds_loopback_unless_an_address_is_named() {
	local pa padm out rc
	alloc_port pa padm
	start_backend a "$pa" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $pa
	EOT
	out=$("$PATHSPLICE" run --listen 127.0.0.1:$((T_PORT + 30)) --registry "$T_DIR/registry.json" \
		--host test --pin-dir "$PS_PIN" --admin ":$padm" 2>&1)
	rc=$?
	expect_eq "$rc" 2 "--admin :PORT is a usage error" &&
	expect_match "$out" 'would listen on every address' "the reason" || return 1
	local PS_ADMIN_ARGS=()	# the default
	start_pathsplice "$T_DIR/registry.json" || return 1
	expect_match "$(ss -Hltnp 'sport = :9180')" "127\.0\.0\.1:9180 .*pid=$PS_PID," "default: loopback 9180" &&
	expect_no_match "$(ss -Hltnp 'sport = :9180')" "(0\.0\.0\.0|\*):9180 .*pid=$PS_PID," "not every address" &&
	stop_pathsplice || return 1
	start_pathsplice "$T_DIR/registry.json" --admin "0.0.0.0:$padm" || return 1
	expect_match "$(ss -Hltnp "sport = :$padm")" "0\.0\.0\.0:$padm .*pid=$PS_PID," "named: every address" &&
	expect_match "$(cat "$PS_LOG")" 'not loopback: it shows this host' "warned" &&
	expect_match "$(curl -s --max-time 5 "http://127.0.0.1:$padm/load")" '"cpus"' "it answers" &&
	stop_pathsplice
}
