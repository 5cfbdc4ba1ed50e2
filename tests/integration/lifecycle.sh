# Pins, detach, maps, restart after a crash.

lifecycle_setup() {
	local p1
	alloc_port p1
	start_backend b1 "$p1" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		b1 svc /svc $p1
	EOT
	start_pathsplice "$T_DIR/registry.json" "$@"
}

test_bpftool_dump_shows_routing_state_with_field_names() {
	lifecycle_setup || return 1
	local svc inst
	svc=$(bpftool map dump pinned "$PS_PIN/services")
	inst=$(bpftool map dump pinned "$PS_PIN/instances" | head -40)
	expect_match "$svc" '"path": "/svc"' "services: path" &&
	expect_match "$svc" '"n_inst": 1' "services: instance count" &&
	expect_match "$inst" '"id": "b1"' "instances: id" &&
	expect_match "$inst" '"state": 1' "instances: state up" &&
	expect_match "$(bpftool map dump pinned "$PS_PIN/rr")" '"value"' "rr map" &&
	stop_pathsplice
}

test_sigterm_detaches_and_unpins() {
	lifecycle_setup || return 1
	local id
	body /svc/x >/dev/null || return 1
	id=$(bpftool prog show pinned "$PS_PIN/ps_verdict" | awk -F: 'NR==1{print $1}')
	[ -n "$id" ] || { fail "program not pinned"; return 1; }
	stop_pathsplice || return 1
	! bpftool prog show id "$id" >/dev/null 2>&1 || fail "program $id still loaded after exit"
}

test_restart_after_crash_cleans_stale_pins() {
	lifecycle_setup || return 1
	disown "$PS_PID"	# its death is the point: no job notice
	kill -KILL "$PS_PID"
	wait_pid_exit "$PS_PID" 5
	PS_PID=
	[ -d "$PS_PIN" ] || { fail "expected pins left by the killed daemon"; return 1; }
	start_pathsplice "$T_DIR/registry.json" || return 1
	expect_match "$(cat "$PS_LOG")" 'removing stale pins' "stale pins noticed" &&
	expect_match "$(body /svc/again)" '^b1 GET /svc/again$' "serving after restart" &&
	stop_pathsplice
}

test_help_and_usage_errors() {
	expect_match "$("$PATHSPLICE" run --help)" '--listen ADDR:PORT' "run --help" &&
	{ "$PATHSPLICE" run --listen nonsense >/dev/null 2>&1; expect_eq $? 2 "usage error exit"; } &&
	expect_match "$("$PATHSPLICE" run --direct-callers maybe 2>&1)" \
		'^pathsplice: --direct-callers: expected on or off$' "on/off message" &&
	{ "$PATHSPLICE" run --direct maybe >/dev/null 2>&1; expect_eq $? 2 "--direct usage error exit"; } &&
	expect_match "$("$PATHSPLICE" run --idle-timeout 0 2>&1)" \
		'^pathsplice: --idle-timeout: expected a duration like 60s, or off$' "--idle-timeout 0" &&
	{ "$PATHSPLICE" run --idle-timeout soon >/dev/null 2>&1; expect_eq $? 2 "--idle-timeout usage error exit"; } &&
	expect_match "$("$PATHSPLICE" run --response-timeout never 2>&1)" \
		'^pathsplice: --response-timeout: expected a duration like 60s, or off$' "--response-timeout never" &&
	{ "$PATHSPLICE" frobnicate >/dev/null 2>&1; expect_eq $? 2 "unknown command exit"; }
}
