# The controller with a file registry: live changes, drain, errors, `check`.

file_setup() {
	alloc_port P1 P2 P3
	start_backend a "$P1" && start_backend b "$P2" && start_backend c "$P3" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $P1
	EOT
	start_pathsplice "$T_DIR/registry.json" "$@"
}

test_file_registry_rewritten_in_place_is_applied() {
	file_setup || return 1
	local ms
	expect_eq "$(reached /service1 4)" "a " "before the change" || return 1
	# in place: same inode, truncated and rewritten
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $P1
		b service1 /service1 $P2
	EOT
	ms=$(routed_within "$(now_ms)" /service1 '^b ' 2) || return 1
	echo "    note: file write -> first request routed by it: ${ms} ms"
	expect_eq "$(reached /service1 6)" "a b " "after adding b" &&
	expect_match "$(cat "$PS_LOG")" 'registry: service1 /service1: instance b 127\.0\.0\.1:[0-9]+ added' "change log" &&
	stop_pathsplice
}

test_file_registry_replaced_by_rename_is_applied() {
	file_setup || return 1
	write_registry "$T_DIR/registry.json.tmp" <<-EOT
		c service1 /service1 $P3
		b service2 /service2 $P2
	EOT
	mv "$T_DIR/registry.json.tmp" "$T_DIR/registry.json"
	routed_within "$(now_ms)" /service2/x '^b GET /service2/x$' 2 >/dev/null &&
	routed_within "$(now_ms)" /service1 '^c ' 2 >/dev/null &&
	expect_eq "$(reached /service1 4)" "c " "a is gone from service1" &&
	expect_match "$(cat "$PS_LOG")" 'registry: service service2 /service2 added: 1 instance' "service added log" &&
	expect_match "$(cat "$PS_LOG")" 'registry: service1: instance a 127\.0\.0\.1:[0-9]+ removed: draining' "drain log" &&
	# a service removed from the file disappears at once
	write_registry "$T_DIR/registry.json" <<-EOT
		c service1 /service1 $P3
	EOT
	status_within "$(now_ms)" /service2/x 404 2 &&
	expect_match "$(cat "$PS_LOG")" 'registry: service service2 /service2 removed' "service removed log" &&
	stop_pathsplice
}

test_bad_registry_keeps_the_last_good_state() {
	file_setup || return 1
	echo '{"instances": [ {"id": "a", ' >"$T_DIR/registry.json"
	sleep 0.3
	expect_eq "$(reached /service1 3)" "a " "garbage keeps routing" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $P1
		b service1 /service1 99999
	EOT
	sleep 0.3
	expect_eq "$(reached /service1 3)" "a " "a bad field keeps routing" &&
	expect_match "$(cat "$PS_LOG")" 'registry.json: instance #2 \(id "b"\): field "port"' "the bad field is named" &&
	expect_match "$(cat "$PS_LOG")" 'keeping the last good state' "the log says so" || return 1
	rm "$T_DIR/registry.json"
	sleep 0.3
	expect_eq "$(reached /service1 3)" "a " "a deleted file keeps routing" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		b service1 /service1 $P2
	EOT
	routed_within "$(now_ms)" /service1 '^b ' 3 >/dev/null &&
	expect_eq "$(reached /service1 3)" "b " "the good file applies" &&
	expect_match "$(cat "$PS_LOG")" 'readable again after' "recovery is logged" &&
	stop_pathsplice
}

test_removed_instance_finishes_in_flight_and_takes_no_new_request() {
	file_setup || return 1
	local out conns
	# a slow request in flight on a, then a second request on the same connection
	curl -sS --max-time 10 -o "$T_DIR/slow.out" -o "$T_DIR/next.out" -w '%{http_code}\n' \
		"$(url '/service1/slow?sleep_ms=1500')" "$(url /service1/next)" >"$T_DIR/codes" &
	local cpid=$!
	sleep 0.4
	write_registry "$T_DIR/registry.json" <<-EOT
		b service1 /service1 $P2
	EOT
	routed_within "$(now_ms)" /service1 '^b ' 2 >/dev/null || return 1
	conns=$(backend_stat "$P1" conns)
	wait "$cpid"
	expect_eq "$(tr '\n' ' ' <"$T_DIR/codes")" "200 200 " "both requests answered" &&
	expect_match "$(cat "$T_DIR/slow.out")" '^a GET /service1/slow' "in-flight request finished on a" &&
	expect_match "$(cat "$T_DIR/next.out")" '^b GET /service1/next$' "next request on the connection went to b" &&
	out=$(reached /service1 6) &&
	expect_eq "$out" "b " "new connections" &&
	expect_eq "$(backend_stat "$P1" conns)" "$((conns + 1))" "connections accepted by the removed instance" &&
	stop_pathsplice
}

test_drain_timeout_closes_what_is_left() {
	file_setup --drain-timeout 1s || return 1
	local t0 t1 code
	t0=$(date +%s%N)
	(curl -s -o /dev/null --max-time 10 -w '%{http_code}' "$(url '/service1/slow?sleep_ms=6000')" \
		>"$T_DIR/code"; echo $? >"$T_DIR/rc") &
	local cpid=$!
	sleep 0.3
	write_registry "$T_DIR/registry.json" <<-EOT
		b service1 /service1 $P2
	EOT
	wait "$cpid"
	t1=$((($(date +%s%N) - t0) / 1000000))
	code=$(cat "$T_DIR/code")
	expect_eq "$(cat "$T_DIR/rc")" 52 "curl: empty reply (connection closed)" &&
	[ "$t1" -lt 4000 ] || fail "closed after ${t1} ms, expected about 1.3 s (drain timeout 1 s)" &&
	expect_match "$(cat "$PS_LOG")" 'drain timeout: closed 1 connection' "drain timeout log" &&
	expect_eq "$(reached /service1 2)" "b " "b serves" &&
	stop_pathsplice
}

test_check_validates_and_shows_what_would_be_served() {
	alloc_port P1
	write_registry "$T_DIR/good.json" <<-EOT
		a service1 /service1 $P1
		b service1 /service1 9002 "check":"/healthz"
		c service2 /service2/ 9003
	EOT
	local out rc
	out=$("$PATHSPLICE" check --registry "$T_DIR/good.json" --host test)
	rc=$?
	expect_eq "$rc" 0 "exit status (valid)" &&
	expect_match "$out" 'host test serves 2 services, 3 instances' "summary" &&
	expect_match "$out" '/service1 service1' "service1" &&
	expect_match "$out" 'b +127\.0\.0\.1:9002 +check /healthz' "instance with its check" &&
	expect_match "$out" '/service2 service2' "normalised path" || return 1
	out=$("$PATHSPLICE" check --registry "$T_DIR/good.json" --host elsewhere)
	expect_match "$out" 'host elsewhere serves 0 services' "another host" || return 1
	write_registry "$T_DIR/bad.json" <<-EOT
		a service1 service1 $P1
	EOT
	out=$("$PATHSPLICE" check --registry "$T_DIR/bad.json" --host test 2>&1)
	rc=$?
	expect_eq "$rc" 1 "exit status (invalid)" &&
	expect_match "$out" 'bad.json: instance #1 \(id "a"\): field "path"' "the field is named" || return 1
	out=$("$PATHSPLICE" check --registry "$T_DIR/missing.json" 2>&1)
	expect_eq "$?" 1 "exit status (missing)" &&
	expect_match "$out" 'missing.json: No such file' "missing file" || return 1
	out=$("$PATHSPLICE" check --registry "ftp://x/y" 2>&1)
	expect_eq "$?" 1 "exit status (scheme)" &&
	expect_match "$out" 'unknown registry scheme' "unknown scheme"
}

# Two services under load while instances come and go every 100 ms: no
# request fails, and a removed instance takes no new connection.
test_registry_churn_under_load_fails_no_request() {
	local secs=${CHURN_SECONDS:-20} q1 q2 q3 q4 i end out errs
	alloc_port P1 P2 P3 q1 q2 q3 q4
	for p in q1 q2 q3 q4; do start_backend "$p" "${!p}" || return 1; done
	start_backend a "$P1" && start_backend b "$P2" && start_backend c "$P3" || return 1
	churn_registry() {	# $1: bitmask of the optional instances present
		{
			echo "a service1 /service1 $P1"
			echo "q1 service2 /service2 $q1"
			(($1 & 1)) && echo "b service1 /service1 $P2"
			(($1 & 2)) && echo "c service1 /service1 $P3"
			(($1 & 4)) && echo "q2 service2 /service2 $q2"
			(($1 & 8)) && echo "q3 service2 /service2 $q3"
			(($1 & 16)) && echo "q4 service2 /service2 $q4"
		} | write_registry "$T_DIR/next.json"
		mv "$T_DIR/next.json" "$T_DIR/registry.json"
	}
	churn_registry 31
	start_pathsplice "$T_DIR/registry.json" || return 1
	# keep-alive load on both services, and a stream of fresh connections
	load_client wrk -t1 -c8 -d"${secs}s" --timeout 5s "$(url /service1/load)" >"$T_DIR/wrk1" 2>&1 &
	local w1=$!
	load_client wrk -t1 -c8 -d"${secs}s" --timeout 5s "$(url /service2/load)" >"$T_DIR/wrk2" 2>&1 &
	local w2=$!
	(
		for ((i = 0; i < secs * 20; i++)); do
			curl -s -o /dev/null --max-time 5 -w '%{http_code}\n' "$(url /service$((i % 2 + 1))/new)"
		done
	) >"$T_DIR/fresh" &
	local f=$!
	end=$(($(date +%s) + secs))
	i=0
	while [ "$(date +%s)" -lt "$end" ]; do
		churn_registry $((RANDOM % 32))
		i=$((i + 1))
		sleep 0.1
	done
	echo "    note: $i registry changes in ${secs}s"
	wait "$w1" "$w2" "$f"
	for w in wrk1 wrk2; do
		out=$(cat "$T_DIR/$w")
		expect_match "$out" 'Requests/sec' "$w ran" || return 1
		expect_no_match "$out" 'Socket errors|Non-2xx' "$w errors" || { cat "$T_DIR/$w" >&2; return 1; }
		echo "    note: $w: $(grep -oE '[0-9]+ requests in' <<<"$out")"
	done
	errs=$(grep -vc '^200$' "$T_DIR/fresh")
	expect_eq "$errs" 0 "fresh-connection requests that did not get 200" || return 1
	# the last state: b and c removed; they take no new connection
	churn_registry 0
	sleep 0.3
	local cb cc
	cb=$(backend_stat "$P2" conns)
	cc=$(backend_stat "$P3" conns)
	for ((i = 0; i < 10; i++)); do body /service1/after >/dev/null; done
	expect_eq "$(backend_stat "$P2" conns)" "$((cb + 1))" "new connections to removed b" &&
	expect_eq "$(backend_stat "$P3" conns)" "$((cc + 1))" "new connections to removed c" &&
	stop_pathsplice
}
