#!/usr/bin/env bash
# Run every test of pathsplice and end with "N passed, N failed".
#
#   tests/run.sh               everything
#   tests/run.sh PATTERN       only tests whose name matches PATTERN (grep -E)
#
# Unit tests (cmocka, under ASan/UBSan), a short fuzz pass of the HTTP framer,
# and integration tests that drive the ASan/UBSan build of the daemon with
# real sockets, real BPF programs and real backends. Integration tests need
# root (BPF); elsewhere they are reported as skipped.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FILTER=${1:-.}
TEST_TIMEOUT=${TEST_TIMEOUT:-180}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}

passed=0
failed=0
skipped=0
failures=()

report() {
	local name=$1 rc=$2 secs=$3
	if [ "$rc" = 0 ]; then
		passed=$((passed + 1))
		printf 'PASS  %-48s %5ss\n' "$name" "$secs"
	else
		failed=$((failed + 1))
		failures+=("$name")
		printf 'FAIL  %-48s %5ss\n' "$name" "$secs"
	fi
}

selected() {
	printf '%s' "$1" | grep -qE -- "$FILTER"
}

# ---- unit tests: one line per cmocka test case ---------------------------
run_unit() {
	local bin name line bad
	for bin in build/tests/test_*; do
		[ -x "$bin" ] || continue
		name=$(basename "$bin")
		selected "$name" || continue
		bad=0
		while IFS= read -r line; do
			case "$line" in
			"ok "*)
				passed=$((passed + 1))
				[ "${VERBOSE:-0}" = 1 ] && printf 'PASS  %s: %s\n' "$name" "${line#ok * - }" ;;
			"not ok "*)
				bad=$((bad + 1))
				failed=$((failed + 1))
				failures+=("$name: ${line#not ok * - }")
				printf 'FAIL  %s: %s\n' "$name" "${line#not ok * - }" ;;
			"exit "*)
				if [ "${line#exit }" != 0 ] && [ $bad = 0 ]; then
					failed=$((failed + 1))
					failures+=("$name: exited with ${line#exit }")
					printf 'FAIL  %s: exited with %s\n' "$name" "${line#exit }"
				fi ;;
			"#"*|"1.."*) ;;
			*) [ $bad -gt 0 ] || [ "${VERBOSE:-0}" = 1 ] && echo "      $line" ;;
			esac
		done < <(CMOCKA_MESSAGE_OUTPUT=TAP "$bin" 2>&1; echo "exit $?")
		printf 'unit  %-48s %s\n' "$name" "$([ $bad = 0 ] && echo ok || echo "$bad failed")"
	done
}

# ---- fuzz pass ----------------------------------------------------------
run_fuzz() {
	local bin name start rc log
	for bin in build/tests/fuzz_*; do
		[ -x "$bin" ] || continue
		name=$(basename "$bin")
		selected "$name" || continue
		log=$(mktemp)
		start=$SECONDS
		corpus=tests/fuzz/corpus/${name#fuzz_}
		work=$(mktemp -d)
		"$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 "$work" "$corpus" >"$log" 2>&1
		rc=$?
		report "$name (${FUZZ_SECONDS}s)" "$rc" $((SECONDS - start))
		[ "$rc" = 0 ] || tail -40 "$log"
		grep -E '^stat::number_of_executed_units' "$log" | sed 's/^/      /'
		rm -rf "$log" "$work"
	done
}

# ---- integration tests ----------------------------------------------------
run_integration() {
	local file fn index=0 start rc pid wd
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP  integration tests: they load BPF programs and need root"
		skipped=$((skipped + 1))
		return
	fi
	# shellcheck source=tests/lib.sh
	source tests/lib.sh
	for file in tests/integration/*.sh; do
		# shellcheck disable=SC1090
		source "$file"
	done
	for fn in $(declare -F | awk '{print $3}' | grep '^test_' | grep -v '^test_begin$\|^test_end$'); do
		selected "$fn" || continue
		index=$((index + 1))
		start=$SECONDS
		# each test in its own process group, so a watchdog can stop all of it
		set -m
		(
			set +m
			trap 'test_end; exit 124' TERM
			test_begin "${fn#test_}" "$index"
			"$fn"
			rc=$?
			test_end
			exit $rc
		) &
		pid=$!
		set +m
		# the watchdog must not hold our stdout open once the test is over
		( exec >/dev/null 2>&1; sleep "$TEST_TIMEOUT" & s=$!; trap 'kill $s' TERM; wait $s &&
			kill -TERM -- -"$pid" ) &
		wd=$!
		wait "$pid"
		rc=$?
		kill "$wd" 2>/dev/null
		wait "$wd" 2>/dev/null
		[ "$rc" = 124 ] && echo "    timed out after ${TEST_TIMEOUT}s"
		report "${fn#test_}" "$rc" $((SECONDS - start))
	done
}

begin=$SECONDS
run_unit
run_fuzz
run_integration

echo
if [ ${#failures[@]} -gt 0 ]; then
	echo "failed:"
	printf '  %s\n' "${failures[@]}"
fi
extra=""
[ "$skipped" -gt 0 ] && extra=", $skipped skipped"
echo "$passed passed, $failed failed$extra ($((SECONDS - begin))s)"
[ "$failed" = 0 ]
