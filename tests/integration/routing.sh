# Routing: longest whole-segment prefix, round-robin, keep-alive re-routing.

# two instances of /service1, one of /service2, one of /service2/admin
routing_setup() {
	local p1 p2 p3 p4
	alloc_port p1 p2 p3 p4
	start_backend s1a "$p1" && start_backend s1b "$p2" &&
		start_backend s2a "$p3" && start_backend adm "$p4" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		s1a service1 /service1 $p1
		s1b service1 /service1 $p2
		s2a service2 /service2 $p3
		adm admin /service2/admin $p4
	EOT
	start_pathsplice "$T_DIR/registry.json" "$@"
}

test_routes_by_whole_segment_prefix() {
	routing_setup || return 1
	expect_match "$(body /service1)" '^s1[ab] GET /service1$' "/service1" &&
	expect_match "$(body /service1/x/y)" '^s1[ab] GET /service1/x/y$' "/service1/x/y" &&
	expect_match "$(body '/service1?q=1')" '^s1[ab] GET /service1\?q=1$' "/service1?q" &&
	expect_match "$(body /service2/)" '^s2a ' "/service2/" &&
	expect_match "$(body /service2/admin/users)" '^adm ' "longest prefix /service2/admin" &&
	expect_match "$(body /service2/administrator)" '^s2a ' "/service2/administrator is not /service2/admin" &&
	expect_eq "$(status /service12)" 404 "/service12" &&
	expect_eq "$(status /)" 404 "/" &&
	stop_pathsplice
}

test_absolute_form_target_routes_by_path() {
	routing_setup || return 1
	local out
	out=$("$TOOLS/ps-client" raw "127.0.0.1:$PS_PORT" \
		'GET http://example.test/service2/abs HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n')
	expect_match "$out" 'HTTP/1.1 200' "absolute-form status" &&
	expect_match "$out" 's2a GET http://example.test/service2/abs' "absolute-form routed to service2" &&
	stop_pathsplice
}

test_round_robin_spreads_connections() {
	routing_setup || return 1
	local i out a b
	out=$(for i in $(seq 1 20); do body /service1/rr; done)
	a=$(grep -c '^s1a ' <<<"$out")
	b=$(grep -c '^s1b ' <<<"$out")
	expect_eq "$a" 10 "requests on s1a" && expect_eq "$b" 10 "requests on s1b" &&
	stop_pathsplice
}

test_keepalive_switches_service_on_one_connection() {
	routing_setup || return 1
	local out
	out=$(curl -sS --max-time 10 -w 'connects=%{num_connects}\n' \
		"$(url /service1/a)" "$(url /service2/b)" "$(url /service1/c)" \
		"$(url /service2/admin/d)" "$(url /service1/e)")
	expect_match "$(sed -n 1p <<<"$out")" '^s1[ab] GET /service1/a$' "1st" &&
	expect_match "$(sed -n 3p <<<"$out")" '^s2a GET /service2/b$' "2nd" &&
	expect_match "$(sed -n 5p <<<"$out")" '^s1[ab] GET /service1/c$' "3rd" &&
	expect_match "$(sed -n 7p <<<"$out")" '^adm GET /service2/admin/d$' "4th" &&
	expect_match "$(sed -n 9p <<<"$out")" '^s1[ab] GET /service1/e$' "5th" &&
	expect_eq "$(grep -c 'connects=1' <<<"$out")" 1 "client connections" &&
	expect_match "$(cat "$PS_LOG")" 'hand-back on client side: reason 1' "kernel handed the switch back" &&
	stop_pathsplice
}

test_keepalive_same_service_stays_in_kernel() {
	routing_setup || return 1
	local out
	out=$("$TOOLS/ps-client" keepalive "127.0.0.1:$PS_PORT" /service1/1 /service1/2 /service1/3 /service1/4)
	expect_eq "$(grep -c '^200 s1[ab] s1[ab] GET /service1/[1-4]$' <<<"$out")" 4 "responses" &&
	expect_match "$out" 'conns 1' "one connection" &&
	expect_no_match "$(cat "$PS_LOG")" 'hand-back' "no hand-back for same-service requests" &&
	stop_pathsplice
}

# An instance that closes idle keep-alive connections (as gunicorn does
# after 2 s) does not close the client's: its next request goes to a new
# instance connection (requests 1 s apart, the instance closing after
# 0.3 s). A response that says Connection: close still ends
# the client connection. In each data-path mode.
test_instance_closing_idle_connection_keeps_the_client() {
	local p1 out mode kept=0
	alloc_port p1
	start_backend s1a "$p1" --idle-close 300 || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		s1a service1 /service1 $p1
	EOT
	for mode in "--direct-callers on" "--direct-callers off" "--direct off"; do
		# shellcheck disable=SC2086 # mode is two words
		start_pathsplice "$T_DIR/registry.json" $mode || return 1
		out=$("$TOOLS/ps-client" keepalive --gap 1000 "127.0.0.1:$PS_PORT" /service1/a /service1/b \
			/service1/c 2>&1)
		expect_eq "$out" "200 s1a s1a GET /service1/a
200 s1a s1a GET /service1/b
200 s1a s1a GET /service1/c
conns 1" "$mode: three answers on one client connection" || return 1
		kept=$((kept + 2))
		expect_eq "$(grep -c 'closed between exchanges: client connection kept' "$PS_LOG")" "$kept" \
			"$mode: the instance closed twice, the client saw none" &&
		out=$("$TOOLS/ps-client" keepalive "127.0.0.1:$PS_PORT" '/service1/d?close=1' /service1/e 2>&1)
		expect_match "$out" 'closed the connection after response 1 of 2' "$mode: Connection: close ends it" &&
		stop_pathsplice || return 1
	done
}

# voluntary context switches of every thread of the daemon so far
daemon_wakeups() {
	cat /proc/"$PS_PID"/task/*/status | awk '$1 == "voluntary_ctxt_switches:" { n += $2 } END { print n }'
}

# A socket the kernel owns is not watched for bytes: the verdict moves each
# request away, and a wake-up per request would be CPU spent on nothing. A
# loopback client the daemon does not accelerate sends 2000 requests on one
# connection and the daemon hardly wakes (it woke about once per request
# before). A request for another service after them is handed back, and the
# daemon learns of it through the hand-back ring, not the socket.
test_spliced_requests_do_not_wake_the_daemon() {
	routing_setup --direct-callers off || return 1
	local paths=() i out before after t0 ms
	for ((i = 0; i < 2000; i++)); do paths+=("/service1/$i"); done
	before=$(daemon_wakeups)
	t0=$(now_ms)
	out=$("$TOOLS/ps-client" keepalive "127.0.0.1:$PS_PORT" "${paths[@]}" /service2/after /service1/back)
	ms=$(($(now_ms) - t0))
	after=$(daemon_wakeups)
	echo "    2002 requests in $ms ms: the daemon woke $((after - before)) times"
	expect_eq "$(grep -c '^200 s1[ab] s1[ab] GET /service1/[0-9]*$' <<<"$out")" 2000 "answers" &&
	expect_match "$out" '200 s2a s2a GET /service2/after' "the switch, after a quiet kernel-owned stretch" &&
	expect_match "$out" '200 s1[ab] s1[ab] GET /service1/back' "and back" &&
	expect_match "$out" 'conns 1' "one connection" || return 1
	# health checks and timers: a few dozen a second
	[ $((after - before)) -lt $((100 + ms / 10)) ] ||
		{ fail "the daemon woke $((after - before)) times for 2002 requests in $ms ms"; return 1; }
	expect_match "$(cat "$PS_LOG")" 'hand-back on client side: reason 1' "kernel handed the switch back" &&
	stop_pathsplice
}

# The hand-back ring has room for a record per socket slot, so it should
# never fill; if it does, what it had no room for is counted, and the daemon
# then looks at every spliced connection. Here it holds 256 records and 300
# connections are handed back (each asks for another service) while the
# daemon is stopped: the 44 without a record must be answered too.
test_handback_ring_overflow_loses_no_request() {
	PATHSPLICE_TEST_HANDBACK_RING=4096 routing_setup --direct-callers off || return 1
	local out n=300
	out=$("$TOOLS/ps-client" fanout "127.0.0.1:$PS_PORT" $n /service1/a /service2/b \
		--stop-pid "$PS_PID" --timeout 30) || { fail "fanout: $out"; return 1; }
	expect_eq "$(grep -c '^200 s1[ab] s1[ab] GET /service1/a$' <<<"$out")" $n "first answers" &&
	expect_eq "$(grep -c '^200 s2a s2a GET /service2/b$' <<<"$out")" $n "answers after the hand-backs" &&
	expect_match "$(cat "$PS_LOG")" 'hand-back ring full' "the ring overflowed" &&
	stop_pathsplice
}

test_pipelined_requests_answer_in_order() {
	routing_setup || return 1
	local out
	out=$("$TOOLS/ps-client" pipeline "127.0.0.1:$PS_PORT" \
		/service1/p1 /service1/p2 /service2/p3 /service1/p4 '/service2/p5?sleep_ms=200' /service2/admin/p6 /service1/p7)
	expect_eq "$(awk '{print $5}' <<<"$out" | tr '\n' ' ')" \
		"/service1/p1 /service1/p2 /service2/p3 /service1/p4 /service2/p5?sleep_ms=200 /service2/admin/p6 /service1/p7 " \
		"targets in order" &&
	expect_eq "$(awk '{print $1}' <<<"$out" | sort -u)" 200 "statuses" &&
	expect_match "$(sed -n 3p <<<"$out")" ' s2a ' "p3 on service2" &&
	expect_match "$(sed -n 6p <<<"$out")" ' adm ' "p6 on admin" &&
	stop_pathsplice
}

test_head_request_keeps_framing() {
	routing_setup || return 1
	local out
	out=$(curl -sS --max-time 10 -I "$(url /service1/h)" -o /dev/null -w '%{http_code}\n' \
		--next -sS --max-time 10 "$(url '/service1/after?bytes=10')" -o /dev/null -w '%{http_code} %{size_download} connects=%{num_connects}\n')
	expect_eq "$(sed -n 1p <<<"$out")" 200 "HEAD" &&
	expect_eq "$(sed -n 2p <<<"$out")" "200 10 connects=0" "GET after HEAD on the same connection" &&
	stop_pathsplice
}
