# One-shot requests (HTTP/1.1 GET or HEAD, Connection: close) go over instance
# connections kept from earlier ones: the instance is not told to close, the
# client is, and the instance connection goes back to the pool.

reuse_setup() {
	local p1
	alloc_port p1 RU_ADMIN
	start_backend b1 "$p1" || return 1
	BACKEND_PORT=$p1
	write_registry "$T_DIR/registry.json" <<-EOT
		b1 svc /svc $p1
	EOT
	start_pathsplice "$T_DIR/registry.json" --admin "127.0.0.1:$RU_ADMIN" "$@" || return 1
	wait_port "$RU_ADMIN" 5 || fail "the admin endpoint does not listen on $RU_ADMIN"
}

# reused: one-shot requests sent on a kept connection so far
reused() {
	curl -sS --max-time 5 "http://127.0.0.1:$RU_ADMIN/stats" | jq -r .proxy.reused
}

test_one_shot_requests_reuse_instance_connections() {
	reuse_setup || return 1
	local i out conns0 conns1 hdrs
	conns0=$(backend_stat "$BACKEND_PORT" conns)
	for ((i = 0; i < 20; i++)); do
		out+=$(curl -sS --max-time 5 -H 'Connection: close' "$(url "/svc/r$i")")$'\n'
	done
	expect_eq "$(grep -c '^b1 GET /svc/r[0-9]*$' <<<"$out")" 20 "answers" || return 1
	conns1=$(backend_stat "$BACKEND_PORT" conns)
	# one connection for the requests (reused 19 times), one for each look at the stats
	echo "    20 one-shot requests: $((conns1 - conns0 - 1)) instance connection(s), $(reused) reused"
	[ $((conns1 - conns0 - 1)) -le 2 ] || { fail "instance connections: $((conns1 - conns0 - 1))"; return 1; }
	expect_eq "$(reused)" 19 "requests on a kept connection" || return 1
	# the client hears that the connection closes, and it does
	hdrs=$(curl -sS --max-time 5 -D - -o /dev/null -H 'Connection: close' "$(url /svc/h)" | tr -d '\r')
	expect_match "$hdrs" $'\nConnection: close' "Connection: close to the client" &&
	expect_match "$("$TOOLS/ps-client" halfclose "127.0.0.1:$PS_PORT" /svc/hc)" '^200 ' \
		"a client that half-closes after its request" &&
	# other methods (not safe to send twice), HTTP/1.0: a connection of their own
	expect_match "$(curl -sS --max-time 5 -H 'Connection: close' -d x=1 "$(url /svc/p)")" \
		'^b1 POST /svc/p$' "POST with Connection: close" &&
	expect_match "$(curl -sS --max-time 5 -H 'Connection: close' -X DELETE "$(url /svc/d)")" \
		'^b1 DELETE /svc/d$' "DELETE with Connection: close" &&
	expect_eq "$(curl -sS --max-time 5 -H 'Connection: close' -I -o /dev/null -w '%{http_code}' \
		"$(url /svc/head)")" 200 "HEAD with Connection: close" &&
	expect_match "$(curl -sS --max-time 5 -0 "$(url /svc/old)")" '^b1 GET /svc/old$' "HTTP/1.0" &&
	expect_eq "$(reused)" 22 "only GET and HEAD reused a connection" &&
	stop_pathsplice
}

# The instance closes a kept connection just as a request arrives on it: the
# request goes again on a new connection and the client never notices.
test_kept_connection_closed_under_a_request_is_retried() {
	reuse_setup || return 1
	local out
	out=$(curl -sS --max-time 5 -H 'Connection: close' "$(url '/svc/one?fresh=1')")
	expect_eq "$out" "b1 GET /svc/one?fresh=1" "first request" || return 1
	out=$(curl -sS --max-time 5 -H 'Connection: close' "$(url '/svc/two?fresh=1')")
	expect_eq "$out" "b1 GET /svc/two?fresh=1" "second request, after the retry" &&
	expect_eq "$(reused)" 1 "the kept connection was tried" &&
	log_within "closed a kept connection: request sent again" 1 &&
	stop_pathsplice
}

# A draining daemon lets go of its kept connections at once.
test_kept_connections_are_closed_when_draining() {
	reuse_setup || return 1
	local i open line
	curl -sS --max-time 5 -o /dev/null -H 'Connection: close' "$(url /svc/a)" || return 1
	open=$(ss -Htn state established "( dport = :$BACKEND_PORT )" | wc -l)
	expect_eq "$open" 1 "kept connection to the instance" || return 1
	# a client that stays keeps the daemon draining, not the pool
	exec 3<>"/dev/tcp/127.0.0.1/$PS_PORT" || return 1
	printf 'GET /svc/k HTTP/1.1\r\nHost: t\r\n\r\n' >&3
	read -r -t 5 line <&3 || { exec 3<&-; fail "no answer to the staying client"; return 1; }
	kill -TERM "$PS_PID"
	for ((i = 0; i < 40; i++)); do
		open=$(ss -Htn state established "( dport = :$BACKEND_PORT )" | wc -l)
		[ "$open" -le 1 ] && break
		sleep 0.05
	done
	exec 3<&-
	expect_eq "$open" 1 "instance connections while draining (the staying client's only)" &&
	stop_pathsplice
}
