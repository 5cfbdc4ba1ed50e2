# The HTTP registry source: polled with conditional requests, and a registry
# server that fails in every way keeps the last good state.
#
# ps-regserver serves $T_DIR/registry.json; $T_DIR/mode switches it between
# ok, 500, garbage, slow and close for the next request.

# http_registry_setup [pathsplice args]: backends a, b; a registry server
# serving "a service1"; pathsplice polling it every 200 ms
http_registry_setup() {
	alloc_port P1 P2 REG_PORT
	start_backend a "$P1" && start_backend b "$P2" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $P1
	EOT
	echo ok >"$T_DIR/mode"
	"$TOOLS/ps-regserver" --listen "127.0.0.1:$REG_PORT" --file "$T_DIR/registry.json" \
		--mode-file "$T_DIR/mode" >"$T_DIR/regserver.out" 2>"$T_DIR/regserver.log" &
	T_PIDS+=($!)
	wait_port "$REG_PORT" || { fail "ps-regserver did not listen on $REG_PORT"; return 1; }
	REG_URL=http://127.0.0.1:$REG_PORT/registry.json
	start_pathsplice "$REG_URL" --poll-interval 200ms "$@"
}

# regserver_stat FIELD: a ps-regserver counter (requests, not_modified, ok, failed)
regserver_stat() {
	curl -sS --max-time 5 "http://127.0.0.1:$REG_PORT/__stats" | grep -oE "\"$1\":[0-9]+" | cut -d: -f2
}

test_http_registry_change_is_applied_within_the_poll_interval() {
	http_registry_setup || return 1
	local t0 ms
	expect_eq "$(reached /service1 3)" "a " "before the change" || return 1
	t0=$(now_ms)
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $P1
		b service1 /service1 $P2
	EOT
	ms=$(routed_within "$t0" /service1 '^b ' 3) || return 1
	echo "    note: registry change -> first request routed by it: ${ms} ms (poll interval 200 ms)"
	expect_eq "$(reached /service1 6)" "a b " "after adding b" &&
	expect_match "$(cat "$PS_LOG")" 'registry: service1 /service1: instance b 127\.0\.0\.1:[0-9]+ added' "change log" &&
	stop_pathsplice
}

test_http_registry_unchanged_costs_a_304() {
	http_registry_setup || return 1
	local requests not_modified ok
	sleep 1.5
	requests=$(regserver_stat requests)
	not_modified=$(regserver_stat not_modified)
	ok=$(regserver_stat ok)
	echo "    note: ${requests} registry requests in 1.5 s: ${ok} answered with the registry, ${not_modified} with 304"
	[ "$requests" -ge 4 ] || fail "only $requests registry requests in 1.5 s at a 200 ms poll interval" &&
	expect_eq "$ok" 1 "registry bodies sent" &&
	expect_eq "$not_modified" "$((requests - 1))" "conditional requests answered 304" &&
	expect_eq "$(reached /service1 3)" "a " "routing" &&
	stop_pathsplice
}

# http_failure_keeps_state MODE LOG_REGEX: with the server in MODE, a new
# registry is not applied, the reason is logged, routing stays as it was;
# back in mode ok, the new registry applies at once
http_failure_keeps_state() {
	local mode=$1 reason=$2 t0 ms
	http_registry_setup || return 1
	expect_eq "$(reached /service1 3)" "a " "before the failure" || return 1
	echo "$mode" >"$T_DIR/mode"
	write_registry "$T_DIR/registry.json" <<-EOT
		b service1 /service1 $P2
	EOT
	log_within "registry: $REG_URL: $reason \(keeping the last good state; retrying\)" 15 &&
	expect_eq "$(reached /service1 4)" "a " "routing while the registry fails ($mode)" || return 1
	t0=$(now_ms)
	echo ok >"$T_DIR/mode"
	ms=$(routed_within "$t0" /service1 '^b ' 10) || return 1
	echo "    note: registry back ($mode before) -> first request routed by it: ${ms} ms (retry backoff at most 5 s)"
	expect_eq "$(reached /service1 4)" "b " "after the recovery" &&
	expect_match "$(cat "$PS_LOG")" "registry: $REG_URL readable again after [0-9]+ failed read" "recovery log"
}

test_http_registry_500_keeps_the_last_good_state() {
	http_failure_keeps_state 500 'HTTP 500 Internal Server Error' && stop_pathsplice
}

test_http_registry_garbage_keeps_the_last_good_state() {
	http_failure_keeps_state garbage "line 1, column 1: JSON syntax error: invalid token near '<'" && stop_pathsplice
}

test_http_registry_closed_connection_keeps_the_last_good_state() {
	http_failure_keeps_state close 'connection closed without an answer' && stop_pathsplice
}

# a registry that does not answer is given up on after the request timeout
# (5 s); a daemon waiting on one still stops at once
test_http_registry_timeout_keeps_the_last_good_state() {
	http_failure_keeps_state slow 'no answer within [0-9]+ ms' || return 1
	local t0 ms
	echo slow >"$T_DIR/mode"
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $P1
	EOT
	sleep 0.5	# a request is in flight now
	t0=$(now_ms)
	stop_pathsplice || return 1
	ms=$(($(now_ms) - t0))
	echo "    note: SIGTERM -> exit with a registry request in flight: ${ms} ms"
}

test_http_registry_unreachable_at_start_is_waited_for() {
	alloc_port P1 REG_PORT
	start_backend a "$P1" || return 1
	REG_URL=http://127.0.0.1:$REG_PORT/registry.json
	start_pathsplice "$REG_URL" --poll-interval 200ms || return 1
	expect_eq "$(status /service1)" 503 "before the registry answers" &&
	expect_match "$(cat "$PS_LOG")" "$REG_URL: connect: Connection refused" "the reason is logged" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $P1
	EOT
	"$TOOLS/ps-regserver" --listen "127.0.0.1:$REG_PORT" --file "$T_DIR/registry.json" \
		>"$T_DIR/regserver.out" 2>"$T_DIR/regserver.log" &
	T_PIDS+=($!)
	routed_within "$(now_ms)" /service1 '^a ' 10 >/dev/null &&
	stop_pathsplice
}
