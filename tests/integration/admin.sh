# The admin endpoint (/load, /culprit, /stats, /metrics) and `pathsplice status`.
#
# Every daemon here gets its own admin port (--admin 127.0.0.1:PORT); counters
# are checked as exact differences against what the test itself sent.

# admin_setup [extra pathsplice args]: backends a and b of service1, the
# daemon with its admin endpoint on AD_PORT
admin_setup() {
	alloc_port AD_PA AD_PB AD_PORT
	start_backend a "$AD_PA" && start_backend b "$AD_PB" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $AD_PA
		b service1 /service1 $AD_PB
	EOT
	start_pathsplice "$T_DIR/registry.json" --admin "127.0.0.1:$AD_PORT" "$@" || return 1
	wait_port "$AD_PORT" 5 || fail "the admin endpoint does not listen on $AD_PORT"
}

admin_url() {
	echo "http://127.0.0.1:$AD_PORT$1"
}

# admin_get PATH [curl args]: the body; fails unless 200
admin_get() {
	local path=$1
	shift
	curl -sS --fail --max-time 10 "$@" "$(admin_url "$path")"
}

# stat_total FIELD: a field of /stats "totals"
stat_total() {
	admin_get /stats | jq -r --arg f "$1" '.totals[$f]'
}

# check_metrics FILE: strict reader of the Prometheus text format 0.0.4.
# Every line a HELP, a TYPE or a sample `name{label="value",...} value`;
# HELP and TYPE once per family and before its samples; the samples of a
# family together; counters end in _total; no series twice.
check_metrics() {
	awk '
	function bad(why) { printf "    metrics line %d: %s: %s\n", NR, why, $0 > "/dev/stderr"; err = 1; exit 1 }
	function enter(n) { if (cur != "" && cur != n) done[cur] = 1; cur = n }
	/^# HELP / {
		if (NF < 4) bad("HELP without text")
		if ($3 in help) bad("second HELP"); if ($3 in samples) bad("HELP after samples")
		help[$3] = 1; enter($3); next
	}
	/^# TYPE / {
		if (NF != 4 || $4 !~ /^(counter|gauge)$/) bad("bad TYPE")
		if ($3 in type) bad("second TYPE"); if ($3 in samples) bad("TYPE after samples")
		type[$3] = $4; enter($3); next
	}
	/^#/ { bad("stray comment") }
	/^$/ { bad("empty line") }
	{
		if (!match($0, /^[a-zA-Z_:][a-zA-Z0-9_:]*/)) bad("bad metric name")
		name = substr($0, 1, RLENGTH); rest = substr($0, RLENGTH + 1)
		if (!(name in help) || !(name in type)) bad("sample before its HELP and TYPE")
		if (name != cur || (name in done)) bad("samples of a family not together")
		if (type[name] == "counter" && name !~ /_total$/) bad("counter not named _total")
		series = name
		if (substr(rest, 1, 1) == "{") {
			lv = "[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\[\\\\\"n])*\""
			if (!match(rest, "^[{](" lv "(," lv ")*)?[}]")) bad("bad labels")
			series = series substr(rest, 1, RLENGTH); rest = substr(rest, RLENGTH + 1)
		}
		if (rest !~ /^ [-+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) bad("bad value")
		if (series in seen) bad("series twice"); seen[series] = 1
		samples[name] = 1; n++
	}
	END { if (!err && n == 0) { print "    metrics: no samples" > "/dev/stderr"; exit 1 } }
	' "$1" || return 1
	if [ -x /usr/bin/promtool ]; then
		/usr/bin/promtool check metrics <"$1" || fail "promtool check metrics" || return 1
	fi
}

# metric_sum FILE NAME: the sum of a family's samples
metric_sum() {
	awk -v n="$2" 'index($0, n "{") == 1 || index($0, n " ") == 1 { s += $NF } END { print s + 0 }' "$1"
}

test_admin_load_matches_proc_loadavg_and_cpu_count() {
	admin_setup || return 1
	local before out after cpus
	before=$(cut -d' ' -f1-3 /proc/loadavg)
	out=$(admin_get /load) || return 1
	after=$(cut -d' ' -f1-3 /proc/loadavg)
	cpus=$(nproc)
	expect_eq "$(jq -r '.cpus' <<<"$out")" "$cpus" "cpus" || return 1
	local got
	got=$(jq -r '.loadavg | map(tostring) | join(" ")' <<<"$out")
	# /proc/loadavg changes every 5 s: the answer is one of the two reads
	awk -v g="$got" -v b="$before" -v a="$after" 'BEGIN {
		split(g, G); split(b, B); split(a, A)
		for (i = 1; i <= 3; i++) if (G[i] + 0 != B[i] + 0) mb = 1
		for (i = 1; i <= 3; i++) if (G[i] + 0 != A[i] + 0) ma = 1
		exit (mb && ma) }' || fail "loadavg [$got] is neither [$before] nor [$after]" || return 1
	awk -v l="$(jq -r '.load' <<<"$out")" -v five="$(cut -d' ' -f2 <<<"$got")" -v c="$cpus" \
		'BEGIN { d = l - five / c; exit !(d < 0.0002 && d > -0.0002) }' ||
		fail "load $(jq -r '.load' <<<"$out") is not loadavg5 / cpus ($got / $cpus)" || return 1
	local hdr
	hdr=$(curl -sS -o /dev/null -D - --max-time 5 "$(admin_url /load)")
	expect_match "$hdr" 'Content-Type: application/json' "content type" &&
	expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$(admin_url /load)")" 405 "POST" &&
	expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$(admin_url /nothing)")" 404 "unknown path" &&
	stop_pathsplice
}

test_admin_culprit_names_a_busy_process_not_an_idle_one() {
	admin_setup || return 1
	local tpid busy idle i out pid found=0
	timeout 10 sh -c 'while :; do :; done' &
	tpid=$!
	T_PIDS+=("$tpid")
	sleep 30 &
	idle=$!
	T_PIDS+=("$idle")
	for ((i = 0; i < 20; i++)); do
		busy=$(cat "/proc/$tpid/task/$tpid/children" 2>/dev/null | awk '{print $1}')
		[ -n "$busy" ] && break
		sleep 0.05
	done
	[ -n "$busy" ] || fail "the busy loop did not start" || return 1
	sleep 0.3
	# the machine is shared: another busy process may win a round, so ask a
	# few times (answers are cached for 1 s)
	for ((i = 0; i < 5; i++)); do
		out=$(admin_get /culprit) || return 1
		pid=$(jq -r '.pid' <<<"$out")
		[ "$pid" != "$idle" ] || fail "the idle sleep was named: $out" || return 1
		[ "$pid" != "$PS_PID" ] || fail "pathsplice named itself: $out" || return 1
		if [ "$pid" = "$busy" ]; then
			found=1
			break
		fi
		sleep 1.1
	done
	[ $found = 1 ] || fail "the busy loop (pid $busy) was never named; last: $out" || return 1
	echo "    note: culprit $(jq -c . <<<"$out")"
	expect_eq "$(jq -r '.user' <<<"$out")" "$(id -un)" "user" &&
	expect_match "$(jq -r '.command' <<<"$out")" '^sh -c while :; do :; done$' "command" &&
	awk -v c="$(jq -r '.cpu' <<<"$out")" 'BEGIN { exit !(c >= 50 && c <= 110) }' ||
		fail "cpu $(jq -r '.cpu' <<<"$out") is not that of one busy CPU" || return 1
	kill "$tpid" 2>/dev/null
	stop_pathsplice
}

# 7 requests on fresh connections and 5 on one keep-alive connection: the
# counters move by exactly 12 requests, 8 connections and the bytes curl
# counted each way.
test_admin_stats_and_metrics_count_exactly_what_was_sent() {
	admin_setup || return 1
	local req0 conn0 tob0 toc0 acc0 i out
	out=$(admin_get /stats) || return 1
	acc0=$(jq -r '.proxy.accepted' <<<"$out")
	req0=$(jq -r '.totals.requests' <<<"$out")
	conn0=$(jq -r '.totals.connections_total' <<<"$out")
	tob0=$(jq -r '.totals.bytes_to_backend' <<<"$out")
	toc0=$(jq -r '.totals.bytes_to_client' <<<"$out")
	: >"$T_DIR/curl.w"
	for ((i = 0; i < 7; i++)); do
		curl -sS --max-time 10 -o /dev/null \
			-w '%{http_code} %{num_connects} %{size_request} %{size_header} %{size_download}\n' \
			"$(url /service1/fresh$i)" >>"$T_DIR/curl.w" || return 1
	done
	curl -sS --max-time 10 -w '%{http_code} %{num_connects} %{size_request} %{size_header} %{size_download}\n' \
		-o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
		"$(url /service1/ka1)" "$(url /service1/ka2)" "$(url /service1/ka3)" \
		"$(url /service1/ka4)" "$(url /service1/ka5?bytes=100000)" >>"$T_DIR/curl.w" || return 1
	expect_eq "$(awk '$1 == 200' "$T_DIR/curl.w" | wc -l)" 12 "answers" &&
	expect_eq "$(awk '{ s += $2 } END { print s }' "$T_DIR/curl.w")" 8 "connections curl opened" ||
		return 1
	local sent recv
	sent=$(awk '{ s += $3 } END { print s }' "$T_DIR/curl.w")
	recv=$(awk '{ s += $4 + $5 } END { print s }' "$T_DIR/curl.w")
	expect_eq "$(status /nowhere)" 404 "a path of no service" || return 1

	out=$(admin_get /stats) || return 1
	expect_eq "$(jq -r '.totals.requests' <<<"$out")" $((req0 + 12)) "stats: requests" &&
	expect_eq "$(jq -r '.totals.connections_total' <<<"$out")" $((conn0 + 8)) "stats: connections" &&
	expect_eq "$(jq -r '.totals.bytes_to_backend' <<<"$out")" $((tob0 + sent)) "stats: bytes to backends" &&
	expect_eq "$(jq -r '.totals.bytes_to_client' <<<"$out")" $((toc0 + recv)) "stats: bytes to clients" &&
	expect_eq "$(jq -r '.services[] | select(.path == "/service1") | .requests' <<<"$out")" \
		$((req0 + 12)) "stats: the service's requests" &&
	expect_eq "$(jq -r '[.services[0].instances[].requests] | add' <<<"$out")" $((req0 + 12)) \
		"stats: the instances add up" &&
	expect_eq "$(jq -r '[.services[0].instances[].state] | join(",")' <<<"$out")" "up,up" "states" &&
	expect_match "$(jq -r '.uptime_seconds' <<<"$out")" '^[0-9]+$' "uptime" &&
	expect_eq "$(jq -r '.proxy.answers."404"' <<<"$out")" 1 "stats: the 404 the daemon answered" &&
	expect_eq "$(jq -r '.proxy.accepted' <<<"$out")" $((acc0 + 9)) "stats: connections accepted" ||
		return 1

	curl -sS --fail --max-time 10 -D "$T_DIR/metrics.h" -o "$T_DIR/metrics" "$(admin_url /metrics)" ||
		return 1
	expect_match "$(cat "$T_DIR/metrics.h")" 'Content-Type: text/plain; version=0\.0\.4' \
		"metrics content type" &&
	check_metrics "$T_DIR/metrics" &&
	expect_eq "$(metric_sum "$T_DIR/metrics" pathsplice_instance_requests_total)" $((req0 + 12)) \
		"metrics: requests" &&
	expect_eq "$(metric_sum "$T_DIR/metrics" pathsplice_instance_connections_total)" $((conn0 + 8)) \
		"metrics: connections" &&
	expect_eq "$(metric_sum "$T_DIR/metrics" pathsplice_instance_request_bytes_total)" $((tob0 + sent)) \
		"metrics: request bytes" &&
	expect_eq "$(metric_sum "$T_DIR/metrics" pathsplice_instance_response_bytes_total)" $((toc0 + recv)) \
		"metrics: response bytes" &&
	expect_match "$(cat "$T_DIR/metrics")" \
		"pathsplice_instance_up\{service=\"service1\",path=\"/service1\",instance_id=\"a\",address=\"127\.0\.0\.1:$AD_PA\"\} 1" \
		"metrics: instance a up" &&
	expect_match "$(cat "$T_DIR/metrics")" 'pathsplice_service_up\{service="service1",path="/service1"\} 1' \
		"metrics: service up" &&
	expect_match "$(cat "$T_DIR/metrics")" '^pathsplice_answers_total\{status="404"\} 1$' \
		"metrics: the 404" &&
	expect_eq "$(metric_sum "$T_DIR/metrics" pathsplice_connections_accepted_total)" $((acc0 + 9)) \
		"metrics: connections accepted" &&
	stop_pathsplice
}

# `pathsplice status` from the pins and from the admin endpoint: one row per
# instance with its state and counts.
test_admin_status_command_shows_states_and_counts() {
	local pc i out row
	alloc_port pc
	admin_setup --check-interval 200ms --check-timeout 200ms --fall 2 --rise 2 || return 1
	# a second service whose only instance has nothing listening
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $AD_PA
		b service1 /service1 $AD_PB
		c service2 /service2 $pc
	EOT
	log_within 'instance c .* down' 5 || return 1
	for ((i = 0; i < 4; i++)); do
		expect_eq "$(status /service1/x)" 200 "request $i" || return 1
	done
	# connections close asynchronously: wait until none is active
	for ((i = 0; i < 40; i++)); do
		[ "$(stat_total connections_active)" = 0 ] && break
		sleep 0.05
	done

	out=$("$PATHSPLICE" status --pin-dir "$PS_PIN" 2>&1) || fail "status --pin-dir failed: $out" || return 1
	printf '%s\n' "$out" | sed 's/^/    | /'
	expect_match "$out" '^pathsplice: 2 services \(1 up\), 3 instances \(2 up, 1 down, 0 draining\)' \
		"summary" &&
	expect_match "$out" "^service1 +/service1 +up +0 +4 +4 " "service1 row" &&
	expect_match "$out" "^  a +127\.0\.0\.1:$AD_PA +up +0 +2 +2 " "instance a row" &&
	expect_match "$out" "^  b +127\.0\.0\.1:$AD_PB +up +0 +2 +2 " "instance b row" &&
	expect_match "$out" "^service2 +/service2 +down +0 +0 +0 " "service2 row" &&
	expect_match "$out" "^  c +127\.0\.0\.1:$pc +down +0 +0 +0 .*connection refused" "instance c row" ||
		return 1

	local via_admin
	via_admin=$("$PATHSPLICE" status --admin "127.0.0.1:$AD_PORT" 2>&1) ||
		fail "status --admin failed: $via_admin" || return 1
	for row in "  a " "  b " "service1 "; do
		expect_eq "$(grep "^$row" <<<"$via_admin")" "$(grep "^$row" <<<"$out")" \
			"--admin and --pin-dir agree on '$row'" || return 1
	done
	expect_eq "$("$PATHSPLICE" status --pin-dir "$PS_PIN" --json |
		jq -r '.services[] | select(.name == "service1") | .requests')" 4 "--json" || return 1

	# errors: nothing pinned, nobody listening, bad usage
	local rc
	out=$("$PATHSPLICE" status --pin-dir /sys/fs/bpf/pstest-nothing-here 2>&1)
	rc=$?
	expect_eq "$rc" 1 "status of an empty pin dir: exit" &&
	expect_match "$out" 'no pathsplice is running with pin dir /sys/fs/bpf/pstest-nothing-here' \
		"status of an empty pin dir: message" || return 1
	out=$("$PATHSPLICE" status --admin "127.0.0.1:$pc" 2>&1)
	rc=$?
	expect_eq "$rc" 1 "status of a closed admin port: exit" &&
	expect_match "$out" "admin endpoint http://127\.0\.0\.1:$pc/stats is unreachable: connect: Connection refused" \
		"status of a closed admin port: message" || return 1
	"$PATHSPLICE" status --admin nonsense >/dev/null 2>&1
	expect_eq $? 2 "usage error" || return 1
	"$PATHSPLICE" status --help | grep -q -- '--pin-dir DIR' || fail "status --help" || return 1
	stop_pathsplice || return 1
	"$PATHSPLICE" status --pin-dir "$PS_PIN" >/dev/null 2>&1
	expect_eq $? 1 "status once the daemon is gone"
}

test_admin_off_listens_on_nothing_but_the_proxy() {
	local pa
	alloc_port pa
	start_backend a "$pa" || return 1
	write_registry "$T_DIR/registry.json" <<-EOT
		a service1 /service1 $pa
	EOT
	start_pathsplice "$T_DIR/registry.json" --admin off || return 1
	expect_eq "$(status /service1)" 200 "serves" || return 1
	local listening
	listening=$(ss -Hltnp | grep "pid=$PS_PID," | awk '{print $4}' | sort -u | tr '\n' ' ')
	expect_eq "$listening" "127.0.0.1:$PS_PORT " "the daemon's listening sockets" &&
	expect_no_match "$(cat "$PS_LOG")" 'admin endpoint on' "no admin endpoint logged" &&
	stop_pathsplice
}
