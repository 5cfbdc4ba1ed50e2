# The etcd registry source: one key per instance under a prefix, followed
# through etcd's JSON gateway (range read, then watch), across etcd restarts
# and compactions; a bad value under one key spares the others.
#
# Every test runs its own etcd (Debian's etcd-server) on 127.0.0.1 with its
# data in $T_DIR/etcd, and writes keys with curl through the same gateway.

ETCD_PREFIX=/pathsplice/

# etcd_start: (re)start this test's etcd on its ports and data dir
etcd_start() {
	local i
	command -v etcd >/dev/null || { fail "etcd is not installed (scripts/deps.sh installs etcd-server)"; return 1; }
	[ -n "${ETCD_PORT:-}" ] || alloc_port ETCD_PORT ETCD_PEER
	ETCD_URL=http://127.0.0.1:$ETCD_PORT
	etcd --name pstest --data-dir "$T_DIR/etcd" \
		--listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-cluster "pstest=http://127.0.0.1:$ETCD_PEER" \
		--heartbeat-interval 50 --election-timeout 500 >>"$T_DIR/etcd.log" 2>&1 &
	ETCD_PID=$!
	disown "$ETCD_PID"	# a SIGKILL of it is no job news
	T_PIDS+=("$ETCD_PID")
	for ((i = 0; i < 200; i++)); do
		curl -sf --max-time 1 -X POST "$ETCD_URL/v3/kv/range" -d '{"key":"AA=="}' >/dev/null &&
			return 0
		sleep 0.05
	done
	tail -20 "$T_DIR/etcd.log" >&2
	fail "etcd did not answer on $ETCD_URL within 10 s"
}

etcd_b64() {
	printf '%s' "$1" | base64 -w0
}

# etcd_put KEY VALUE: prints the revision of the write
etcd_put() {
	local out
	out=$(curl -sS --max-time 5 -X POST "$ETCD_URL/v3/kv/put" \
		-d "{\"key\":\"$(etcd_b64 "$1")\",\"value\":\"$(etcd_b64 "$2")\"}") || return 1
	grep -oE '"revision":"[0-9]+"' <<<"$out" | grep -oE '[0-9]+'
}

etcd_del() {
	curl -sS --max-time 5 -X POST "$ETCD_URL/v3/kv/deleterange" \
		-d "{\"key\":\"$(etcd_b64 "$1")\"}" >/dev/null
}

# etcd_compact REV: drop the history before REV
etcd_compact() {
	curl -sS --max-time 5 -X POST "$ETCD_URL/v3/kv/compaction" \
		-d "{\"revision\":\"$1\",\"physical\":true}" >/dev/null
}

# etcd_instance ID NAME PATH PORT: put the instance record under the prefix
etcd_instance() {
	etcd_put "$ETCD_PREFIX$1" \
		"{\"id\":\"$1\",\"name\":\"$2\",\"path\":\"$3\",\"host\":\"test\",\"port\":$4}"
}

# etcd_setup: backends a, b, c; etcd with instance a of service1;
# pathsplice following the prefix
etcd_setup() {
	alloc_port P1 P2 P3
	start_backend a "$P1" && start_backend b "$P2" && start_backend c "$P3" &&
		etcd_start && etcd_instance a service1 /service1 "$P1" >/dev/null || return 1
	ETCD_SPEC=etcd://127.0.0.1:$ETCD_PORT$ETCD_PREFIX
	start_pathsplice "$ETCD_SPEC" --poll-interval 200ms &&
	expect_eq "$(reached /service1 3)" "a " "the first state"
}

test_etcd_registry_follows_puts_and_deletes() {
	etcd_setup || return 1
	local t0 ms
	t0=$(now_ms)
	etcd_instance b service2 /service2 "$P2" >/dev/null
	ms=$(routed_within "$t0" /service2/x '^b GET /service2/x$' 3) || return 1
	echo "    note: etcd put (new instance) -> first request routed by it: ${ms} ms"
	t0=$(now_ms)
	etcd_instance a service1 /service1 "$P3" >/dev/null	# a moves to c's port
	ms=$(routed_within "$t0" /service1 '^c ' 3) || return 1
	echo "    note: etcd put (changed instance) -> first request routed by it: ${ms} ms"
	expect_eq "$(reached /service1 4)" "c " "service1 after the change" || return 1
	t0=$(now_ms)
	etcd_del "${ETCD_PREFIX}b"
	ms=$(status_within "$t0" /service2/x 404 3) || return 1
	echo "    note: etcd delete -> first request that no longer reaches it: ${ms} ms"
	expect_match "$(cat "$PS_LOG")" 'registry: service service2 /service2 added' "added log" &&
	expect_match "$(cat "$PS_LOG")" 'registry: service service2 /service2 removed' "removed log" &&
	stop_pathsplice
}

test_etcd_registry_survives_an_etcd_restart() {
	etcd_setup || return 1
	local t0 ms
	kill -KILL "$ETCD_PID"
	wait_pid_exit "$ETCD_PID" 5
	log_within "registry: $ETCD_SPEC: watch.*\(keeping the last good state" 5 &&
	expect_eq "$(reached /service1 4)" "a " "routing without etcd" || return 1
	sleep 1
	expect_match "$(cat "$PS_LOG")" "registry: $ETCD_SPEC: watch: connect: Connection refused" "etcd down is logged" &&
	expect_eq "$(reached /service1 4)" "a " "routing without etcd, later" || return 1
	etcd_start || return 1
	t0=$(now_ms)
	etcd_instance b service1 /service1 "$P2" >/dev/null
	ms=$(routed_within "$t0" /service1 '^b ' 10) || return 1
	echo "    note: etcd restarted, put -> first request routed by it: ${ms} ms (retry backoff at most 5 s)"
	expect_eq "$(reached /service1 6)" "a b " "both instances after the restart" &&
	stop_pathsplice
}

# The daemon is frozen while etcd restarts, changes are written and the
# history is compacted past them: on waking, its watch cannot resume from
# where it was, so it reads the whole prefix again.
test_etcd_compaction_forces_a_full_reread() {
	etcd_setup || return 1
	local rev
	etcd_instance b service2 /service2 "$P2" >/dev/null
	routed_within "$(now_ms)" /service2 '^b ' 3 >/dev/null || return 1
	kill -STOP "$PS_PID"
	kill -KILL "$ETCD_PID"
	wait_pid_exit "$ETCD_PID" 5
	etcd_start &&
		etcd_instance a service1 /service1 "$P3" >/dev/null &&
		etcd_del "${ETCD_PREFIX}b" &&
		rev=$(etcd_instance d service3 /service3 "$P2") &&
		etcd_compact "$rev"
	kill -CONT "$PS_PID"
	[ -n "$rev" ] || { fail "writing to etcd failed"; return 1; }
	routed_within "$(now_ms)" /service3 '^b ' 10 >/dev/null &&
	expect_eq "$(reached /service1 4)" "c " "service1 moved to c" &&
	expect_eq "$(status /service2)" 404 "service2 deleted" &&
	expect_match "$(cat "$PS_LOG")" "registry: $ETCD_SPEC: revision [0-9]+ is compacted .*reading the whole prefix again" "re-read log" &&
	stop_pathsplice
}

test_etcd_bad_value_is_logged_and_the_other_keys_apply() {
	etcd_setup || return 1
	etcd_put "${ETCD_PREFIX}b" "{\"id\":\"b\",\"name\":\"service2\",\"path\":\"/service2\",\"host\":\"test\",\"port\":\"80a\"}" >/dev/null
	etcd_instance c service3 /service3 "$P3" >/dev/null
	routed_within "$(now_ms)" /service3 '^c ' 3 >/dev/null &&
	expect_eq "$(status /service2)" 404 "the bad key is left out" &&
	log_within "registry: $ETCD_SPEC: key ${ETCD_PREFIX}b \(id \"b\"\): field \"port\": expected an integer 1\.\.65535, got \"80a\"" 2 || return 1
	# a bad value for a good key: it keeps its last good value
	etcd_put "${ETCD_PREFIX}a" '{"id": "a", "name": "service1", ' >/dev/null
	log_within "registry: $ETCD_SPEC: key ${ETCD_PREFIX}a: line 1, column [0-9]+: JSON syntax error.*keeps its last good value" 2 &&
	expect_eq "$(reached /service1 3)" "a " "a keeps its last good value" || return 1
	# an id used by two keys: the whole set is refused until that is fixed
	etcd_put "${ETCD_PREFIX}dup" "{\"id\":\"c\",\"name\":\"service3\",\"path\":\"/service3\",\"host\":\"test\",\"port\":$P3}" >/dev/null
	log_within "registry: $ETCD_SPEC: key ${ETCD_PREFIX}dup \(id \"c\"\): field \"id\": duplicate of key ${ETCD_PREFIX}c" 2 || return 1
	etcd_instance c service3 /service3 "$P2" >/dev/null	# c moves to b's port
	sleep 0.3
	expect_eq "$(reached /service3 3)" "c " "service3 while the set is invalid" || return 1
	etcd_del "${ETCD_PREFIX}dup"
	routed_within "$(now_ms)" /service3 '^b ' 3 >/dev/null || return 1
	# the bad key fixed
	etcd_instance b service2 /service2 "$P2" >/dev/null
	routed_within "$(now_ms)" /service2 '^b ' 3 >/dev/null &&
	stop_pathsplice
}

test_etcd_registry_unreachable_at_start_is_waited_for() {
	alloc_port P1 ETCD_PORT ETCD_PEER
	start_backend a "$P1" || return 1
	ETCD_SPEC=etcd://127.0.0.1:$ETCD_PORT$ETCD_PREFIX
	start_pathsplice "$ETCD_SPEC" || return 1
	expect_eq "$(status /service1)" 503 "before etcd answers" &&
	expect_match "$(cat "$PS_LOG")" "$ETCD_SPEC: range read: connect: Connection refused" "the reason is logged" || return 1
	etcd_start && etcd_instance a service1 /service1 "$P1" >/dev/null &&
	routed_within "$(now_ms)" /service1 '^a ' 10 >/dev/null &&
	stop_pathsplice
}
