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

# one_shot PATH: the body of a GET with Connection: close
one_shot() {
	curl -sS --max-time 5 -H 'Connection: close' "$(url "$1")"
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
		out+=$(one_shot "/svc/r$i")$'\n'
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
	out=$(one_shot '/svc/one?fresh=1')
	expect_eq "$out" "b1 GET /svc/one?fresh=1" "first request" || return 1
	out=$(one_shot '/svc/two?fresh=1')
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

# After a one-shot answer the daemon closes the client's socket at once when
# the client has sent nothing more (the kernel delivers what is still queued),
# and lingers, reading, when it has: no answer is lost to a reset.
test_one_shot_close_loses_no_answer() {
	reuse_setup || return 1
	local out users
	# a client that holds its end open: the daemon's end is already closed
	exec 3<>"/dev/tcp/127.0.0.1/$PS_PORT" || return 1
	printf 'GET /svc/held HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >&3
	out=$(timeout 5 cat <&3 | tr -d '\r')
	users=$(ss -Htnp "( sport = :$PS_PORT )" | grep -c 'users:')
	exec 3<&-
	expect_match "$out" '^HTTP/1.1 200 ' "answer to the held connection" &&
	expect_match "$out" $'\nb1 GET /svc/held$' "its body" &&
	expect_eq "$users" 0 "daemon sockets left on the held connection" || return 1
	# a request sent behind the closing one: the first answer, then a clean end
	out=$("$TOOLS/ps-client" raw "127.0.0.1:$PS_PORT" \
		'GET /svc/first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /svc/second HTTP/1.1\r\nHost: t\r\n\r\n')
	expect_match "$out" 'b1 GET /svc/first' "the first answer" &&
	expect_no_match "$out" 'GET /svc/second' "no answer after Connection: close" &&
	expect_match "$out" '\[eof\]$' "the end is a FIN, not a reset" || return 1
	# 4 MiB still queued when the daemon closes reach a client that stopped reading
	out=$("$TOOLS/ps-client" stall --resume -H 'Connection: close' --timeout 20 \
		"127.0.0.1:$PS_PORT" "/svc/big?bytes=$((4 << 20))" 1)
	expect_match "$out" "^ok $((4 << 20)) " "a slow reader's one-shot download" &&
	stop_pathsplice
}

# A kept connection stays registered with the daemon's event loop while it
# rests; the instance resetting it then is an event with no connection to go
# to. It is ignored, and the next request finds the connection unusable
# before it sends anything: a new connection, no retry.
test_kept_connection_reset_while_resting_is_not_used() {
	reuse_setup || return 1
	local out
	out=$(one_shot /svc/before)
	expect_eq "$out" "b1 GET /svc/before" "first request" || return 1
	expect_eq "$(ss -Htn state established "( dport = :$BACKEND_PORT )" | wc -l)" 1 \
		"kept connection to the instance" || return 1
	# the instance's end goes away with a reset (SOCK_DESTROY)
	ss -HK -tn "( sport = :$BACKEND_PORT )" >/dev/null || { fail "ss -K failed"; return 1; }
	sleep 0.2
	out=$(one_shot /svc/after)
	expect_eq "$out" "b1 GET /svc/after" "request after the reset" &&
	expect_eq "$(reused)" 0 "requests sent on a kept connection" &&
	expect_eq "$(grep -c 'closed a kept connection' "$PS_LOG")" 0 "retries" &&
	stop_pathsplice
}
