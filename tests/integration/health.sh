# Health: active checks (fall / rise), passive detection, all-down 503.
#
# Short check settings keep these tests fast: interval 200 ms, timeout 200 ms,
# fall 3, rise 2 (the daemon's defaults are 2 s, 2 s, 3, 2).

HC_OPTS=(--check-interval 200ms --check-timeout 200ms --fall 3 --rise 2)

# log_time REGEX: epoch ms of the first log line matching REGEX, empty if none
log_time() {
	local ts
	ts=$(grep -E -- "$1" "$PS_LOG" | head -1 | cut -d' ' -f1)
	[ -n "$ts" ] && echo $(($(date -d "$ts" +%s%N) / 1000000))
}

# inst_field ID FIELD: a field of an instance's entry in the pinned map
inst_field() {
	bpftool -j map dump pinned "$PS_PIN/instances" 2>/dev/null |
		jq -r --arg id "$1" --arg f "$2" \
			'.[] | .formatted.value | select(.id == $id and (.state == 1 or .state == 2)) | .[$f]' |
		head -1
}

test_killed_instance_goes_down_and_survivors_take_the_traffic() {
	local pa pb pc
	alloc_port pa pb pc
	start_backend a "$pa" && start_backend b "$pb" && start_backend c "$pc" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $pa
		b service1 /service1 $pb
		c service1 /service1 $pc
	EOT
	start_pathsplice "$T_DIR/registry.json" "${HC_OPTS[@]}" || return 1
	# bounded load: 4 loops of fresh connections for 4 s
	local end=$(($(date +%s) + 4)) k loaders=()
	for k in 1 2 3 4; do
		(while [ "$(date +%s)" -lt "$end" ]; do
			curl -s -o /dev/null --max-time 5 -w '%{http_code}\n' "$(url /service1/load)"
		done) >"$T_DIR/load$k" &
		loaders+=($!)
	done
	sleep 1
	local t_kill t_down t_up
	t_kill=$(now_ms)
	kill_backend "$pb" || return 1
	wait "${loaders[@]}"
	log_within 'health: service1: instance b .* down' 2 || return 1
	t_down=$(log_time 'health: service1: instance b .* down')
	echo "    note: killed instance marked down $((t_down - t_kill)) ms after SIGKILL ($(grep -oE 'instance b .* down: [^(]*' "$PS_LOG" | head -1))"
	[ $((t_down - t_kill)) -le 900 ] || fail "down after $((t_down - t_kill)) ms > fall x interval (600 ms) + 300 ms" || return 1
	local total bad
	total=$(cat "$T_DIR"/load* | wc -l)
	bad=$(cat "$T_DIR"/load* | grep -vc '^200$')
	echo "    note: $total requests under load, $bad failed (at most one per loop may have been in flight on b)"
	[ "$total" -gt 100 ] || fail "only $total requests ran" || return 1
	[ "$bad" -le 4 ] || fail "$bad requests failed, more than the 4 that can have been in flight" || return 1
	expect_eq "$(reached /service1 8)" "a c " "survivors take all traffic" || return 1
	# back in rotation within rise x interval once it listens again
	start_backend b "$pb" || return 1
	t_kill=$(now_ms)
	log_within 'health: service1: instance b .* up' 2 || return 1
	t_up=$(log_time 'health: service1: instance b .* up')
	echo "    note: restarted instance up $((t_up - t_kill)) ms after it listened again"
	[ $((t_up - t_kill)) -le 700 ] || fail "up after $((t_up - t_kill)) ms > rise x interval (400 ms) + 300 ms" || return 1
	expect_eq "$(reached /service1 9)" "a b c " "b is back" &&
	expect_eq "$(inst_field b state)" 1 "map: state up" &&
	expect_eq "$(inst_field b transitions)" 2 "map: transitions" &&
	stop_pathsplice
}

test_checks_that_hang_or_answer_500_take_instances_down() {
	local pa pb pc
	alloc_port pa pb pc
	start_backend ok "$pa" && start_backend hang "$pb" && start_backend err "$pc" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		ok service1 /service1 $pa "check":"/healthz"
		hang service1 /service1 $pb "check":"/healthz?sleep_ms=3000"
		err service1 /service1 $pc "check":"/healthz?status=500"
	EOT
	start_pathsplice "$T_DIR/registry.json" "${HC_OPTS[@]}" || return 1
	log_within 'instance hang .* down: timeout \(3 checks failed\)' 3 &&
	log_within 'instance err .* down: HTTP 500 \(3 checks failed\)' 3 &&
	expect_no_match "$(cat "$PS_LOG")" 'instance ok .* down' "ok stays up" &&
	expect_eq "$(reached /service1 6)" "ok " "only the healthy instance serves" &&
	expect_eq "$(inst_field err status)" 500 "map: last HTTP status" &&
	expect_eq "$(inst_field hang state)" 2 "map: hang is down" &&
	stop_pathsplice
}

test_all_instances_down_answers_503_naming_the_service() {
	local pa
	alloc_port pa
	start_backend a "$pa" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a orders /orders $pa
	EOT
	start_pathsplice "$T_DIR/registry.json" "${HC_OPTS[@]}" || return 1
	expect_eq "$(status /orders)" 200 "up" || return 1
	kill_backend "$pa" || return 1
	local out i
	out=$(curl -s --max-time 5 -w '\n%{http_code}' "$(url /orders/x)")
	expect_eq "$(tail -1 <<<"$out")" 503 "all down" &&
	expect_match "$out" 'orders' "the body names the service" || return 1
	for i in 1 2 3 4 5; do status /orders >/dev/null; done
	sleep 0.5
	expect_eq "$(grep -c 'service orders has no instance up' "$PS_LOG")" 1 "one log line, not one per request" || return 1
	start_backend a "$pa" || return 1
	log_within 'service orders is back' 2 &&
	expect_eq "$(status /orders)" 200 "back" &&
	stop_pathsplice
}

# A backend that flaps faster than fall x interval never goes down; one that
# flaps slower goes down and up with it.
test_flapping_follows_fall_and_rise() {
	local pa pb i
	alloc_port pa pb
	start_backend a "$pa" && start_backend f "$pb" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $pa
		f service1 /service1 $pb
	EOT
	start_pathsplice "$T_DIR/registry.json" --check-interval 200ms --check-timeout 200ms \
		--fall 4 --rise 2 || return 1
	for ((i = 0; i < 6; i++)); do	# down 300 ms (at most 2 failed checks), up 500 ms
		kill_backend "$pb"
		sleep 0.3
		start_backend f "$pb" || return 1
		sleep 0.5
	done
	local failed
	failed=$(inst_field f checks_failed)
	echo "    note: fast flapping: $failed failed checks, $(inst_field f transitions) transitions"
	[ "${failed:-0}" -ge 3 ] || fail "the checks did not see the flapping ($failed failures)" || return 1
	expect_eq "$(inst_field f transitions)" 0 "fast flapping: no state change" || return 1
	for ((i = 0; i < 2; i++)); do	# down 1.5 s, up 1.5 s
		kill_backend "$pb"
		sleep 1.5
		start_backend f "$pb" || return 1
		sleep 1.5
	done
	expect_eq "$(inst_field f transitions)" 4 "slow flapping: down and up twice" &&
	stop_pathsplice
}
