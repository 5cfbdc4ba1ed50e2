// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of the HTTP/1.x framer (include/http_frame.h): what it routes
 * on, where it says heads, bodies and messages end, what it refuses and with
 * which status, and that a stream framed in pieces, handed over between
 * owners after any byte, frames exactly as the same stream framed whole.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <cmocka.h>

#include "frame_driver.h"

#define HEAD_MAX	8192

/* Runs made by a test, freed after it whatever its outcome. */
static struct fd_run *runs[8];
static unsigned nruns;

static int free_runs(void **state)
{
	while (nruns)
		fd_free(runs[--nruns]);
	return 0;
}

static void print_events(const struct fd_run *r)
{
	static const char *names[] = { "NONE", "PREFIX", "PATH_END", "HEAD_END", "MSG_END", "ERROR" };

	for (unsigned k = 0; k < r->n; k++) {
		const struct fd_event *e = &r->ev[k];

		print_message("  %-8s off=%llu flags=%#x status=%u cl=%llu left=%llu prefix=%u error=%u\n",
			      names[e->ev], (unsigned long long)e->off, e->fr.flags, e->fr.status,
			      (unsigned long long)e->fr.cl, (unsigned long long)e->fr.remaining,
			      e->fr.prefix_len, e->fr.error);
	}
}

static void assert_clean(const struct fd_run *r)
{
	if (r->violation) {
		print_events(r);
		fail_msg("framer invariant broken: %s", r->violation);
	}
}

/* Frame `len` bytes whole; response i answers a HEAD request if bit i of head_bits is set. */
static struct fd_run *frame_n(__u8 kind, __u32 head_max, const void *buf, size_t len,
			      uint64_t head_bits)
{
	struct fd_run *r = fd_new(kind, head_max);

	assert_true(nruns < sizeof(runs) / sizeof(runs[0]));
	runs[nruns++] = r;
	r->head_bits = head_bits;
	fd_feed(r, buf, len);
	assert_clean(r);
	return r;
}

static struct fd_run *req(const char *s)
{
	return frame_n(PS_FRAME_REQUEST, HEAD_MAX, s, strlen(s), 0);
}

static struct fd_run *resp(const char *s)
{
	return frame_n(PS_FRAME_RESPONSE, HEAD_MAX, s, strlen(s), 0);
}

/* The status the framer answers `s` with; 0 if it does not refuse it. */
static __u16 req_error(const char *s)
{
	return req(s)->error;
}

static __u16 resp_error(const char *s)
{
	return resp(s)->error;
}

static size_t after(const char *s, const char *needle)
{
	const char *p = strstr(s, needle);

	assert_non_null(p);
	return (size_t)(p - s) + strlen(needle);
}

/* The k-th (from 0) event of type ev. */
static const struct fd_event *nth(const struct fd_run *r, int ev, unsigned k)
{
	for (unsigned i = 0; i < r->n; i++)
		if (r->ev[i].ev == ev && k-- == 0)
			return &r->ev[i];
	print_events(r);
	fail_msg("event %d #%u not found", ev, k);
	return NULL;
}

static unsigned count(const struct fd_run *r, int ev)
{
	unsigned n = 0;

	for (unsigned i = 0; i < r->n; i++)
		n += r->ev[i].ev == ev;
	return n;
}

static void expect_events(const struct fd_run *r, const int *evs, unsigned n)
{
	int same = r->n == n;

	for (unsigned k = 0; same && k < n; k++)
		same = r->ev[k].ev == evs[k];
	if (!same) {
		print_events(r);
		fail_msg("unexpected event sequence");
	}
}

#define EXPECT_EVENTS(r, ...) do {						\
	static const int evs_[] = { __VA_ARGS__ };				\
	expect_events((r), evs_, sizeof(evs_) / sizeof(evs_[0]));		\
} while (0)

/* FNV-1a 64, written out here rather than taken from pathsplice.h. */
static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n--) {
		h ^= (__u8)*p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void assert_prefix(const struct fd_event *e, const char *prefix)
{
	assert_int_equal(e->fr.prefix_len, strlen(prefix));
	assert_int_equal(e->fr.prefix_hash, fnv1a(prefix, strlen(prefix)));
}

/* ---- request line and routing ---- */

static void test_simple_get_frames_head_and_empty_body(void **state)
{
	const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
	struct fd_run *r = req(s);

	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[0].off, after(s, "GET /"));
	assert_int_equal(r->ev[1].off, after(s, "GET / "));
	assert_int_equal(r->ev[2].off, strlen(s));
	assert_int_equal(r->ev[3].off, strlen(s));
	assert_int_equal(r->ev[2].fr.flags, 0);
	assert_int_equal(r->ev[2].fr.cl, 0);
	assert_true(ps_frame_at_start(r->fr));
}

static void test_leading_crlf_before_request_is_ignored(void **state)
{
	const char *s = "\r\n\r\nGET /a HTTP/1.1\r\n\r\n";
	struct fd_run *r = req(s);

	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[0].off, after(s, "GET /"));
	assert_int_equal(r->ev[2].off, strlen(s));
	assert_int_equal(r->ev[2].fr.head_len, strlen("GET /a HTTP/1.1\r\n\r\n"));
}

static void test_leading_bare_lf_before_request_rejected(void **state)
{
	assert_int_equal(req_error("\nGET / HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("\r\rGET / HTTP/1.1\r\n\r\n"), 400);
}

static void test_absolute_form_routes_by_its_path(void **state)
{
	struct fd_run *r = req("GET http://example.com:8080/svc/x?q=1 HTTP/1.1\r\n\r\n");

	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_PREFIX, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_prefix(&r->ev[0], "/");
	assert_prefix(&r->ev[1], "/svc");
	assert_prefix(&r->ev[2], "/svc/x");
	assert_memory_equal(r->path, "/svc/x", 6);
	assert_true(r->ev[3].fr.flags & PS_FF_ABSOLUTE);
}

static void test_absolute_form_without_path_routes_as_root(void **state)
{
	struct fd_run *r = req("GET http://example.com HTTP/1.1\r\n\r\n");

	EXPECT_EVENTS(r, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_prefix(&r->ev[0], "/");
	assert_int_equal(r->path[0], '/');
	assert_true(r->ev[1].fr.flags & PS_FF_ABSOLUTE);
}

static void test_absolute_form_with_query_and_no_path_routes_as_root(void **state)
{
	struct fd_run *r = req("GET https://example.com?a=/b HTTP/1.1\r\n\r\n");

	EXPECT_EVENTS(r, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_prefix(&r->ev[0], "/");
}

static void test_absolute_form_needs_two_slashes(void **state)
{
	assert_int_equal(req_error("GET http:/example.com/ HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("GET mailto:a@b HTTP/1.1\r\n\r\n"), 400);
}

static void test_asterisk_form_ends_path_without_prefix(void **state)
{
	struct fd_run *r = req("OPTIONS * HTTP/1.1\r\n\r\n");

	EXPECT_EVENTS(r, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[0].fr.prefix_len, 0);
	assert_int_equal(req_error("OPTIONS *x HTTP/1.1\r\n\r\n"), 400);
}

static void test_prefix_events_are_whole_segments_of_path(void **state)
{
	const char *s = "GET /svc/x?q HTTP/1.1\r\n\r\n";
	struct fd_run *r = req(s);

	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_PREFIX, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_prefix(&r->ev[0], "/");
	assert_prefix(&r->ev[1], "/svc");
	assert_prefix(&r->ev[2], "/svc/x");
	/* each is known as soon as the byte after it arrives */
	assert_int_equal(r->ev[0].off, after(s, "GET /"));
	assert_int_equal(r->ev[1].off, after(s, "GET /svc/"));
	assert_int_equal(r->ev[2].off, after(s, "GET /svc/x?"));
}

static void test_path_ending_in_space_is_last_prefix(void **state)
{
	struct fd_run *r = req("GET /svc HTTP/1.1\r\n\r\n");

	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_prefix(&r->ev[1], "/svc");
}

static void test_prefix_hash_is_fnv1a_of_prefix_bytes(void **state)
{
	struct fd_run *r = req("GET /svc/x HTTP/1.1\r\n\r\n");

	/* published FNV-1a 64 vector, so the reference itself is right */
	assert_int_equal(fnv1a("a", 1), 0xaf63dc4c8601ec8cULL);
	assert_int_equal(nth(r, PS_EV_PREFIX, 0)->fr.prefix_hash, 0xaf63a24c860189feULL);
	assert_int_equal(nth(r, PS_EV_PREFIX, 1)->fr.prefix_hash, 0x9be15f9c5c913590ULL);
	assert_int_equal(nth(r, PS_EV_PATH_END, 0)->fr.prefix_hash, 0x0ac031420168a94fULL);
	assert_int_equal(nth(r, PS_EV_PATH_END, 0)->fr.prefix_hash, fd_fnv((const __u8 *)"/svc/x", 6));
}

static void test_path_buffer_holds_path_without_query(void **state)
{
	struct fd_run *r = req("GET /a/b.html?x=/y HTTP/1.1\r\n\r\n");

	assert_int_equal(nth(r, PS_EV_PATH_END, 0)->fr.path_len, 9);
	assert_memory_equal(r->path, "/a/b.html", 9);
}

static void test_path_longer_than_buffer_keeps_first_128_bytes(void **state)
{
	char path[201], line[300];
	struct fd_run *r;
	const struct fd_event *end;

	/* "/" + 126 'a' + "/" + 20 'b' + "/" + 52 'c': segment ends at 127 and 148 */
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[127] = '/';
	memset(path + 128, 'b', 20);
	path[148] = '/';
	memset(path + 149, 'c', 51);
	path[200] = 0;
	snprintf(line, sizeof(line), "GET %s HTTP/1.1\r\n\r\n", path);
	r = req(line);

	/* the prefix ending at 127 bytes fits a service path; the one at 148 cannot */
	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_PREFIX, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[1].fr.prefix_len, 127);
	assert_int_equal(r->ev[1].fr.prefix_hash, fnv1a(path, 127));
	end = nth(r, PS_EV_PATH_END, 0);
	assert_int_equal(end->fr.prefix_len, 200);
	assert_int_equal(end->fr.prefix_hash, fnv1a(path, 200));
	assert_memory_equal(r->path, path, PS_FRAME_PATH_MAX);
}

static void test_prefix_of_128_bytes_is_not_reported(void **state)
{
	char line[300];
	struct fd_run *r;

	/* "/" + 127 'a' + "/b": the prefix before the second '/' is 128 bytes */
	memcpy(line, "GET /", 5);
	memset(line + 5, 'a', 127);
	strcpy(line + 132, "/b HTTP/1.1\r\n\r\n");
	r = req(line);

	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_PATH_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[1].fr.prefix_len, 130);
}

static void test_path_events_same_without_path_buffer(void **state)
{
	const char *s = "GET http://h/svc/x?q HTTP/1.1\r\n\r\nGET http://h HTTP/1.1\r\n\r\n";
	struct fd_run *with = req(s);
	struct fd_run *without = fd_new(PS_FRAME_REQUEST, HEAD_MAX);
	const char *diff;
	unsigned at;

	runs[nruns++] = without;
	without->use_path = 0;
	fd_feed(without, (const __u8 *)s, strlen(s));
	diff = fd_diff(with, without, &at);
	if (diff)
		fail_msg("%s at event %u", diff, at);
}

static void test_before_route_until_path_ends(void **state)
{
	struct ps_frame fr;
	const char *s = "GET /a?b HTTP/1.1\r\n";
	size_t i;

	ps_frame_init(&fr, PS_FRAME_REQUEST, HEAD_MAX);
	assert_false(ps_frame_before_route(&fr));
	for (i = 0; s[i] != '?'; i++) {
		ps_frame_byte(&fr, s[i], NULL);
		assert_true(ps_frame_before_route(&fr));
	}
	assert_int_equal(ps_frame_byte(&fr, '?', NULL), PS_EV_PATH_END);
	assert_false(ps_frame_before_route(&fr));
}

/* Feeds a head byte by byte, in a head until its last byte; returns the
 * event of that one. */
static int feed_head(struct ps_frame *fr, const char *h)
{
	size_t k;

	for (k = 0; h[k + 1]; k++) {
		ps_frame_byte(fr, h[k], NULL);
		assert_true(ps_frame_in_head(fr));
	}
	return ps_frame_byte(fr, h[k], NULL);
}

/* In a head from its first byte to the LF ending it; not in a body, not
 * between messages (the kernel hands back a response head cut by a segment). */
static void test_in_head_from_first_byte_to_head_end(void **state)
{
	struct ps_frame fr;

	ps_frame_init(&fr, PS_FRAME_RESPONSE, HEAD_MAX);
	assert_false(ps_frame_in_head(&fr));
	assert_int_equal(feed_head(&fr, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"), PS_EV_HEAD_END);
	assert_false(ps_frame_in_head(&fr));	/* in the body */
	assert_int_equal(ps_frame_skip(&fr, 2), PS_EV_MSG_END);
	assert_false(ps_frame_in_head(&fr));	/* between messages */
	assert_int_equal(feed_head(&fr, "HTTP/1.1 204 No Content\r\n\r\n"), PS_EV_HEAD_END);
	assert_false(ps_frame_in_head(&fr));	/* an empty body */
	assert_int_equal(ps_frame_skip(&fr, 0), PS_EV_MSG_END);
	assert_false(ps_frame_in_head(&fr));
}

/* Connection: close, or HTTP/1.0 without keep-alive, ends the connection. */
static void test_flags_close(void **state)
{
	assert_false(ps_flags_close(0));
	assert_true(ps_flags_close(PS_FF_CONN_CLOSE));
	assert_true(ps_flags_close(PS_FF_HTTP10));
	assert_false(ps_flags_close(PS_FF_HTTP10 | PS_FF_CONN_KEEP));
	assert_true(ps_flags_close(PS_FF_HTTP10 | PS_FF_CONN_KEEP | PS_FF_CONN_CLOSE));
	assert_false(ps_flags_close(PS_FF_CONN_KEEP));
}

static void test_fragment_or_control_in_target_rejected(void **state)
{
	assert_int_equal(req_error("GET /a#b HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("GET /a?b#c HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("GET /a\tb HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("GET /\x80 HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("GET a HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("GET  / HTTP/1.1\r\n\r\n"), 400);
}

static void test_invalid_method_rejected(void **state)
{
	assert_int_equal(req_error(" GET / HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("G(T / HTTP/1.1\r\n\r\n"), 400);
}

static void test_head_request_sets_head_flag(void **state)
{
	struct fd_run *r = req("HEAD /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n");

	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_HEAD);
	assert_false(nth(req("HEADX / HTTP/1.1\r\n\r\n"), PS_EV_HEAD_END, 0)->fr.flags & PS_FF_HEAD);
	assert_false(nth(req("HEA / HTTP/1.1\r\n\r\n"), PS_EV_HEAD_END, 0)->fr.flags & PS_FF_HEAD);
	/* methods are case-sensitive */
	assert_false(nth(req("head / HTTP/1.1\r\n\r\n"), PS_EV_HEAD_END, 0)->fr.flags & PS_FF_HEAD);
}

static void test_connect_rejected_405(void **state)
{
	assert_int_equal(req_error("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), 405);
	assert_int_equal(req_error("CONNECT / HTTP/1.1\r\n\r\n"), 405);
	assert_int_equal(req_error("CONNECTX / HTTP/1.1\r\n\r\n"), 0);
}

static void test_http10_sets_flag(void **state)
{
	struct fd_run *r = req("GET / HTTP/1.0\r\n\r\n");

	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_HTTP10);
	r = req("GET / HTTP/1.1\r\n\r\n");
	assert_false(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_HTTP10);
}

static void test_http2_request_line_rejected_505(void **state)
{
	assert_int_equal(req_error("GET / HTTP/2.0\r\n\r\n"), 505);
	assert_int_equal(req_error("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
	assert_int_equal(req_error("GET / HTTP/1.2\r\n\r\n"), 505);
}

static void test_malformed_version_rejected_400(void **state)
{
	assert_int_equal(req_error("GET / HTTP/1.1 \r\n\r\n"), 400);
	assert_int_equal(req_error("GET / http/1.1\r\n\r\n"), 400);
	assert_int_equal(req_error("GET / HTTP/1.\r\n\r\n"), 400);
	assert_int_equal(req_error("GET / HTTP/1.10\r\n\r\n"), 400);
	assert_int_equal(req_error("GET / HTTP/x.1\r\n\r\n"), 400);
}

/* ---- header syntax ---- */

static void test_bare_lf_anywhere_in_head_rejected(void **state)
{
	static const char *heads[] = {
		"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	};

	for (unsigned h = 0; h < 2; h++) {
		const char *s = heads[h];
		__u8 kind = h ? PS_FRAME_RESPONSE : PS_FRAME_REQUEST;

		for (const char *crlf = strstr(s, "\r\n"); crlf; crlf = strstr(crlf + 1, "\r\n")) {
			char buf[128];
			size_t at = (size_t)(crlf - s);

			/* drop the CR of one CRLF */
			memcpy(buf, s, at);
			strcpy(buf + at, crlf + 1);
			assert_int_equal(frame_n(kind, HEAD_MAX, buf, strlen(buf), 0)->error,
					 h ? 502 : 400);
			free_runs(NULL);
		}
	}
}

static void test_bare_cr_rejected(void **state)
{
	assert_int_equal(req_error("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), 400);
	assert_int_equal(req_error("GET / HTTP/1.1\rX: a\r\n\r\n"), 400);
	assert_int_equal(req_error("GET / HTTP/1.1\r\nX: a\r\n\r\r\n"), 400);
	assert_int_equal(req_error("GET /a\r HTTP/1.1\r\n\r\n"), 400);
	assert_int_equal(resp_error("HTTP/1.1 200 O\rK\r\n\r\n"), 502);
}

static void test_control_bytes_in_value_rejected(void **state)
{
	static const __u8 ctl[] = { 0x00, 0x01, 0x08, 0x0b, 0x0c, 0x1f, 0x7f };
	static const char pre[] = "GET / HTTP/1.1\r\nX: a", post[] = "b\r\n\r\n";

	for (unsigned k = 0; k < sizeof(ctl); k++) {
		char buf[64];

		memcpy(buf, pre, sizeof(pre) - 1);
		buf[sizeof(pre) - 1] = (char)ctl[k];
		memcpy(buf + sizeof(pre), post, sizeof(post) - 1);
		assert_int_equal(frame_n(PS_FRAME_REQUEST, HEAD_MAX, buf,
					 sizeof(pre) + sizeof(post) - 1, 0)->error, 400);
		assert_int_equal(runs[nruns - 1]->ev[0].ev, PS_EV_PREFIX);
		free_runs(NULL);
	}
}

static void test_obs_text_in_value_accepted(void **state)
{
	struct fd_run *r = req("GET / HTTP/1.1\r\nX: caf\xc3\xa9 \x80\xff\t!\r\n\r\n");

	assert_int_equal(r->error, 0);
	assert_int_equal(count(r, PS_EV_MSG_END), 1);
}

static void test_obs_fold_rejected(void **state)
{
	assert_int_equal(req_error("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), 400);
	assert_int_equal(req_error("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"), 400);
	assert_int_equal(resp_error("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), 502);
}

static void test_space_before_colon_rejected(void **state)
{
	assert_int_equal(req_error("GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello"), 400);
	assert_int_equal(req_error("GET / HTTP/1.1\r\nX\t: 5\r\n\r\n"), 400);
}

static void test_empty_header_name_rejected(void **state)
{
	assert_int_equal(req_error("GET / HTTP/1.1\r\n: v\r\n\r\n"), 400);
}

static void test_header_line_without_colon_rejected(void **state)
{
	assert_int_equal(req_error("GET / HTTP/1.1\r\nX\r\n\r\n"), 400);
}

static void test_header_names_are_case_insensitive(void **state)
{
	struct fd_run *r = req("POST / HTTP/1.1\r\nCONTENT-LENGTH: 3\r\n\r\nabc");

	assert_int_equal(nth(r, PS_EV_HEAD_END, 0)->fr.cl, 3);
	r = req("POST / HTTP/1.1\r\ntransfer-ENCODING: Chunked\r\n\r\n0\r\n\r\n");
	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_CHUNKED);
}

static void test_similar_header_names_are_not_framing(void **state)
{
	struct fd_run *r = req("GET / HTTP/1.1\r\nContent-Lengths: 5\r\nContent-Lengt: 5\r\n"
			       "Transfer-Encodings: chunked\r\nConnectio: close\r\nUpgrades: x\r\n\r\n");

	assert_int_equal(nth(r, PS_EV_HEAD_END, 0)->fr.flags, 0);
	assert_int_equal(count(r, PS_EV_MSG_END), 1);
}

/* ---- Content-Length ---- */

static void test_content_length_body_is_skipped(void **state)
{
	const char *s = "POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
	struct fd_run *r = req(s);
	const struct fd_event *head = nth(r, PS_EV_HEAD_END, 0);

	assert_int_equal(head->off, after(s, "\r\n\r\n"));
	assert_true(head->fr.flags & PS_FF_HAS_CL);
	assert_int_equal(head->fr.cl, 5);
	assert_int_equal(head->fr.remaining, 5);
	assert_int_equal(nth(r, PS_EV_MSG_END, 0)->off, strlen(s));
}

static void test_body_bytes_are_not_parsed(void **state)
{
	static const char s[] = "POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\n\r\n\x00\x01GET ";
	struct fd_run *r = frame_n(PS_FRAME_REQUEST, HEAD_MAX, s, sizeof(s) - 1, 0);

	assert_int_equal(r->error, 0);
	assert_int_equal(count(r, PS_EV_MSG_END), 1);
}

static void test_identical_content_lengths_accepted(void **state)
{
	struct fd_run *r = req("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nhi");

	assert_int_equal(nth(r, PS_EV_HEAD_END, 0)->fr.cl, 2);
	assert_int_equal(count(r, PS_EV_MSG_END), 1);
}

static void test_differing_content_lengths_rejected(void **state)
{
	assert_int_equal(req_error("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi"), 400);
	assert_int_equal(resp_error("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi"), 502);
}

static void test_content_length_with_ows(void **state)
{
	struct fd_run *r = req("POST / HTTP/1.1\r\nContent-Length: \t 3 \t\r\n\r\nabc");

	assert_int_equal(nth(r, PS_EV_HEAD_END, 0)->fr.cl, 3);
	r = req("POST / HTTP/1.1\r\nContent-Length:3\r\n\r\nabc");
	assert_int_equal(nth(r, PS_EV_HEAD_END, 0)->fr.cl, 3);
}

static void test_content_length_non_digit_rejected(void **state)
{
	static const char *vals[] = { "5a", "abc", "+5", "-1", "5 5", "0x5", "5,5", "5;", "" , "  " };

	for (unsigned k = 0; k < sizeof(vals) / sizeof(vals[0]); k++) {
		char buf[128];

		snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nContent-Length: %s\r\n\r\n", vals[k]);
		if (req_error(buf) != 400)
			fail_msg("Content-Length: \"%s\" accepted", vals[k]);
		free_runs(NULL);
	}
}

static void test_huge_content_length_rejected(void **state)
{
	assert_int_equal(req_error("POST / HTTP/1.1\r\nContent-Length: 1152921504606846977\r\n\r\n"), 400);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400);
	assert_int_equal(resp_error("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n"), 502);
}

static void test_content_length_limit_accepted(void **state)
{
	struct fd_run *r = req("POST / HTTP/1.1\r\nContent-Length: 1152921504606846976\r\n\r\n");

	assert_int_equal(nth(r, PS_EV_HEAD_END, 0)->fr.cl, PS_FRAME_CL_MAX);
	assert_int_equal(ps_frame_body_left(r->fr), PS_FRAME_CL_MAX);
}

/* ---- Transfer-Encoding ---- */

static void test_content_length_with_transfer_encoding_rejected(void **state)
{
	assert_int_equal(req_error("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), 400);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"), 400);
}

static void test_chunked_request_with_extensions_and_trailers(void **state)
{
	const char *s = "POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			"5;name=val\r\nhello\r\n"
			"6 ; a=\"q;\\\"x\"\r\n world\r\n"
			"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
			"0;last\r\nTrailer-A: 1\r\nTrailer-B: x y\r\n\r\n"
			"GET /next HTTP/1.1\r\n\r\n";
	struct fd_run *r = req(s);
	const struct fd_event *head = nth(r, PS_EV_HEAD_END, 0);

	assert_int_equal(head->off, after(s, "chunked\r\n\r\n"));
	assert_int_equal(head->fr.flags, PS_FF_CHUNKED | PS_FF_HAS_TE);
	assert_int_equal(nth(r, PS_EV_MSG_END, 0)->off, after(s, "x y\r\n\r\n"));
	assert_int_equal(count(r, PS_EV_MSG_END), 2);
}

static void test_chunked_without_trailers(void **state)
{
	const char *s = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";

	assert_int_equal(nth(req(s), PS_EV_MSG_END, 0)->off, strlen(s));
}

static void test_malformed_chunks_rejected(void **state)
{
	static const char *bodies[] = {
		"\r\n",				/* no size */
		"g\r\n",			/* not hex */
		"0x5\r\nhello\r\n0\r\n\r\n",
		"-5\r\n",
		"5\nhello\r\n0\r\n\r\n",	/* bare LF after the size */
		"5\r\nhelloX\r\n",		/* data longer than its size */
		"5\r\nhello\n0\r\n\r\n",	/* bare LF after the data */
		"10000000000000000\r\n",	/* 17 hex digits */
		"0\r\n\n",			/* bare LF ending the trailers */
		"0\r\nX: a\nY: b\r\n\r\n",	/* bare LF in a trailer */
		"0\r\n b\r\n\r\n",		/* folded trailer */
		"5;a\x01\r\nhello\r\n",		/* control in an extension */
	};

	for (unsigned k = 0; k < sizeof(bodies) / sizeof(bodies[0]); k++) {
		char buf[256];

		snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%s", bodies[k]);
		if (req_error(buf) != 400)
			fail_msg("chunked body #%u accepted", k);
		free_runs(NULL);
	}
}

static void test_chunk_size_of_15_hex_digits_accepted(void **state)
{
	struct fd_run *r = req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n000000000000005\r\nhello");

	assert_int_equal(r->error, 0);
	assert_int_equal(r->fr->state, PS_FS_CHUNK_CR);
}

static void test_transfer_encoding_other_than_chunked_rejected_501(void **state)
{
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), 501);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 501);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n"), 501);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"), 501);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked x\r\n\r\n"), 501);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n"), 501);
	assert_int_equal(req_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), 501);
}

static void test_transfer_encoding_gzip_then_chunked_is_chunked(void **state)
{
	struct fd_run *r = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");

	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_CHUNKED);
	assert_int_equal(count(r, PS_EV_MSG_END), 1);
	r = req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_CHUNKED);
}

static void test_transfer_encoding_empty_list_elements_ignored(void **state)
{
	/* RFC 9110 5.6.1: empty list elements do not count */
	struct fd_run *r = req("POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked , \r\n\r\n0\r\n\r\n");

	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_CHUNKED);
	r = req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n");
	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_CHUNKED);
	r = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n");
	assert_true(nth(r, PS_EV_HEAD_END, 0)->fr.flags & PS_FF_CHUNKED);
	assert_int_equal(count(r, PS_EV_MSG_END), 1);
}

static void test_http10_with_transfer_encoding_rejected(void **state)
{
	assert_int_equal(req_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
}

/* ---- Connection and Upgrade ---- */

static __u16 head_flags(const char *s)
{
	return nth(req(s), PS_EV_HEAD_END, 0)->fr.flags;
}

static void test_connection_close_flag(void **state)
{
	assert_int_equal(head_flags("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), PS_FF_CONN_CLOSE);
	assert_int_equal(head_flags("GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n"), PS_FF_CONN_CLOSE);
}

static void test_connection_keep_alive_flag(void **state)
{
	assert_int_equal(head_flags("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"),
			 PS_FF_CONN_KEEP | PS_FF_HTTP10);
}

static void test_connection_upgrade_and_upgrade_header_flags(void **state)
{
	assert_int_equal(head_flags("GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n"
				    "Upgrade: websocket\r\n\r\n"),
			 PS_FF_CONN_KEEP | PS_FF_CONN_UPGRADE | PS_FF_UPGRADE);
}

static void test_connection_tokens_must_match_whole(void **state)
{
	assert_int_equal(head_flags("GET / HTTP/1.1\r\nConnection: closed, keep, upgrade2, x-close\r\n\r\n"), 0);
	assert_int_equal(head_flags("GET / HTTP/1.1\r\nConnection: foo close\r\n\r\n"), 0);
	assert_int_equal(head_flags("GET / HTTP/1.1\r\nConnection: ,, close ,\r\n\r\n"), PS_FF_CONN_CLOSE);
}

/* ---- limits ---- */

static void test_head_over_head_max_request_431(void **state)
{
	const char *s = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
	struct fd_run *r = frame_n(PS_FRAME_REQUEST, 24, s, strlen(s), 0);

	assert_int_equal(r->error, 431);
	/* refused on the first byte past the limit, not later */
	assert_int_equal(nth(r, PS_EV_ERROR, 0)->off, 25);
}

static void test_head_of_exactly_head_max_accepted(void **state)
{
	const char *s = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\nGET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
	struct fd_run *r = frame_n(PS_FRAME_REQUEST, (__u32)strlen(s) / 2, s, strlen(s), 0);

	/* the limit applies to each head */
	assert_int_equal(r->error, 0);
	assert_int_equal(count(r, PS_EV_MSG_END), 2);
}

static void test_head_over_head_max_response_502(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nServer: something long\r\n\r\n";
	struct fd_run *r = frame_n(PS_FRAME_RESPONSE, 20, s, strlen(s), 0);

	assert_int_equal(r->error, 502);
	assert_int_equal(nth(r, PS_EV_ERROR, 0)->off, 21);
}

static void test_head_max_is_capped_at_16_bit_positions(void **state)
{
	static char s[70000];
	size_t n = (size_t)snprintf(s, sizeof(s), "POST / HTTP/1.1\r\nTransfer-Encoding: ");
	struct fd_run *r;

	/* a coding of 65536 junk bytes then "chunked" is not chunked: it is refused */
	memset(s + n, 'x', 65536);
	n += 65536;
	n += (size_t)snprintf(s + n, sizeof(s) - n, "chunked\r\n\r\n0\r\n\r\n");
	r = frame_n(PS_FRAME_REQUEST, 1u << 20, s, n, 0);
	assert_int_equal(r->fr->head_max, PS_FRAME_HEAD_MAX);
	assert_int_equal(r->error, 431);
	assert_int_equal(nth(r, PS_EV_ERROR, 0)->off, PS_FRAME_HEAD_MAX + 1);
}

static void test_error_state_is_sticky(void **state)
{
	struct fd_run *r = req("GET /\x01 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
	struct ps_frame copy = *r->fr;

	/* the driver checked every later byte returned PS_EV_ERROR */
	EXPECT_EVENTS(r, PS_EV_PREFIX, PS_EV_ERROR);
	assert_int_equal(ps_frame_byte(&copy, 'G', NULL), PS_EV_ERROR);
	assert_int_equal(copy.state, PS_FS_ERROR);
	assert_int_equal(copy.error, 400);
}

static void test_pipelined_requests_in_one_buffer(void **state)
{
	const char *s = "GET /a HTTP/1.1\r\n\r\n"
			"POST /b/c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
			"HEAD /d HTTP/1.1\r\n\r\n";
	struct fd_run *r = req(s);

	assert_int_equal(count(r, PS_EV_HEAD_END), 3);
	assert_int_equal(count(r, PS_EV_MSG_END), 3);
	assert_int_equal(nth(r, PS_EV_MSG_END, 0)->off, after(s, "GET /a HTTP/1.1\r\n\r\n"));
	assert_int_equal(nth(r, PS_EV_HEAD_END, 1)->fr.cl, 3);
	assert_int_equal(nth(r, PS_EV_MSG_END, 1)->off, after(s, "abc"));
	assert_prefix(nth(r, PS_EV_PREFIX, 2), "/b");
	assert_prefix(nth(r, PS_EV_PATH_END, 2), "/d");
	assert_int_equal(nth(r, PS_EV_HEAD_END, 2)->fr.flags, PS_FF_HEAD);
	assert_int_equal(nth(r, PS_EV_MSG_END, 2)->off, strlen(s));
}

/* ---- responses ---- */

static void test_response_content_length_body(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
	struct fd_run *r = resp(s);

	EXPECT_EVENTS(r, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[0].off, after(s, "\r\n\r\n"));
	assert_int_equal(r->ev[0].fr.status, 200);
	assert_int_equal(r->ev[0].fr.cl, 5);
	assert_int_equal(r->ev[1].off, strlen(s));
}

static void test_response_chunked(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n";
	struct fd_run *r = resp(s);

	EXPECT_EVENTS(r, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_true(r->ev[0].fr.flags & PS_FF_CHUNKED);
	assert_int_equal(r->ev[1].off, strlen(s));
}

static void test_response_chunked_overrides_content_length(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

	assert_int_equal(nth(resp(s), PS_EV_MSG_END, 0)->off, strlen(s));
}

static void test_response_204_and_304_have_no_body(void **state)
{
	static const char *heads[] = {
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
	};

	for (unsigned k = 0; k < 3; k++) {
		struct fd_run *r = resp(heads[k]);

		EXPECT_EVENTS(r, PS_EV_HEAD_END, PS_EV_MSG_END);
		assert_int_equal(r->ev[1].off, strlen(heads[k]));
		free_runs(NULL);
	}
}

static void test_response_to_head_has_no_body_even_with_cl(void **state)
{
	const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
	/* the first response answers HEAD, the second GET */
	struct fd_run *r = frame_n(PS_FRAME_RESPONSE, HEAD_MAX, s, strlen(s), 1);

	EXPECT_EVENTS(r, PS_EV_HEAD_END, PS_EV_MSG_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_true(r->ev[0].fr.flags & PS_FF_REQ_HEAD);
	assert_int_equal(r->ev[1].off, after(s, "\r\n\r\n"));
	assert_false(r->ev[2].fr.flags & PS_FF_REQ_HEAD);
	assert_int_equal(r->ev[3].off, strlen(s));
}

static void test_response_100_continue_then_200(void **state)
{
	const char *s = "HTTP/1.1 100 Continue\r\n\r\n"
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
	struct fd_run *r = resp(s);

	EXPECT_EVENTS(r, PS_EV_HEAD_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[0].off, after(s, "Continue\r\n\r\n"));
	assert_true(r->ev[0].fr.flags & PS_FF_INTERIM);
	assert_int_equal(r->ev[0].fr.status, 100);
	assert_false(r->ev[1].fr.flags & PS_FF_INTERIM);
	assert_int_equal(r->ev[1].fr.status, 200);
	assert_int_equal(r->ev[2].off, strlen(s));
}

static void test_response_interim_keeps_req_head(void **state)
{
	const char *s = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
	struct fd_run *r = frame_n(PS_FRAME_RESPONSE, HEAD_MAX, s, strlen(s), 1);

	EXPECT_EVENTS(r, PS_EV_HEAD_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[0].fr.status, 103);
	assert_int_equal(r->ev[2].off, strlen(s));
}

static void test_response_101_is_tunnel(void **state)
{
	const char *s = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
			"\x81\x05hello HTTP/1.1 200 OK\r\n\r\n";
	struct fd_run *r = resp(s);

	EXPECT_EVENTS(r, PS_EV_HEAD_END);
	assert_true(r->ev[0].fr.flags & PS_FF_TUNNEL);
	assert_int_equal(r->ev[0].fr.remaining, PS_FRAME_INFINITE);
	assert_true(ps_frame_in_body(r->fr));
	assert_int_equal(ps_frame_body_left(r->fr), PS_FRAME_INFINITE);
	assert_int_equal(r->off, strlen(s));
}

static void test_response_without_length_until_close(void **state)
{
	struct fd_run *r = resp("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc\r\n\r\n");

	EXPECT_EVENTS(r, PS_EV_HEAD_END);
	assert_true(r->ev[0].fr.flags & PS_FF_UNTIL_CLOSE);
	assert_int_equal(ps_frame_body_left(r->fr), PS_FRAME_INFINITE);
}

static void test_response_te_without_chunked_until_close(void **state)
{
	struct fd_run *r = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc");

	EXPECT_EVENTS(r, PS_EV_HEAD_END);
	assert_true(r->ev[0].fr.flags & PS_FF_UNTIL_CLOSE);
	assert_int_equal(ps_frame_body_left(r->fr), PS_FRAME_INFINITE);
}

static void test_status_line_without_reason_phrase(void **state)
{
	struct fd_run *r = resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\nHTTP/1.0 404 \r\nContent-Length: 0\r\n\r\n");

	EXPECT_EVENTS(r, PS_EV_HEAD_END, PS_EV_MSG_END, PS_EV_HEAD_END, PS_EV_MSG_END);
	assert_int_equal(r->ev[0].fr.status, 200);
	assert_int_equal(r->ev[2].fr.status, 404);
	assert_true(r->ev[2].fr.flags & PS_FF_HTTP10);
}

static void test_invalid_status_rejected(void **state)
{
	static const char *lines[] = {
		"HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 2x0 OK", "HTTP/1.1 099 OK",
		"HTTP/1.1  200 OK", "HTTP/1.1 OK", "HTTP/1.1", "HTTP/2 200 OK", "HTTP/1.1 200\tOK",
		"HTTP/1.1 200 O\x01K", "http/1.1 200 OK", " HTTP/1.1 200 OK", "\r\nHTTP/1.1 200 OK",
	};

	for (unsigned k = 0; k < sizeof(lines) / sizeof(lines[0]); k++) {
		char buf[64];

		snprintf(buf, sizeof(buf), "%s\r\nContent-Length: 0\r\n\r\n", lines[k]);
		if (resp_error(buf) != 502)
			fail_msg("status line \"%s\" accepted", lines[k]);
		free_runs(NULL);
	}
}

/* ---- split invariance ---- */

struct stream {
	__u8 kind;
	uint64_t head_bits;
	const char *s;
};

static const struct stream streams[] = {
	{ PS_FRAME_REQUEST, 0,
	  "\r\nGET /svc/x?q=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
	  "POST http://h/up/load HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
	  "PUT /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
	  "5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n"
	  "OPTIONS * HTTP/1.0\r\n\r\n" },
	{ PS_FRAME_REQUEST, 0,
	  "GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\nX: \x01\r\n\r\nGET / HTTP/1.1\r\n\r\n" },
	{ PS_FRAME_RESPONSE, 2,
	  "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
	  "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
	  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	  "HTTP/1.1 204 No Content\r\n\r\n"
	  "HTTP/1.1 101 Switching Protocols\r\n\r\ntunnel bytes" },
};

static void check_same(const struct fd_run *whole, const struct fd_run *split, const char *how, size_t at)
{
	unsigned ev;
	const char *diff = fd_diff(whole, split, &ev);

	assert_clean(split);
	if (diff) {
		print_events(whole);
		print_message("split:\n");
		print_events(split);
		fail_msg("%s at event %u when split %s %zu", diff, ev, how, at);
	}
}

static struct fd_run *frame_split(const struct stream *st, const size_t *cuts, size_t ncuts)
{
	struct fd_run *r = fd_new(st->kind, HEAD_MAX);

	r->head_bits = st->head_bits;
	fd_feed_split(r, (const __u8 *)st->s, strlen(st->s), cuts, ncuts);
	return r;
}

static void test_split_at_any_byte_frames_the_same(void **state)
{
	for (unsigned k = 0; k < sizeof(streams) / sizeof(streams[0]); k++) {
		const struct stream *st = &streams[k];
		struct fd_run *whole = frame_n(st->kind, HEAD_MAX, st->s, strlen(st->s), st->head_bits);

		for (size_t at = 0; at <= strlen(st->s); at++) {
			struct fd_run *split = frame_split(st, &at, 1);

			check_same(whole, split, "at", at);
			fd_free(split);
		}
		free_runs(NULL);
	}
}

static void test_byte_at_a_time_with_handover_frames_the_same(void **state)
{
	for (unsigned k = 0; k < sizeof(streams) / sizeof(streams[0]); k++) {
		const struct stream *st = &streams[k];
		size_t len = strlen(st->s), cuts[1024];
		struct fd_run *whole = frame_n(st->kind, HEAD_MAX, st->s, len, st->head_bits);
		struct fd_run *split;

		assert_true(len <= 1024);
		for (size_t i = 0; i < len; i++)
			cuts[i] = i + 1;
		split = frame_split(st, cuts, len);
		check_same(whole, split, "after every byte", len);
		fd_free(split);
		free_runs(NULL);
	}
}

static void test_random_segments_frame_the_same(void **state)
{
	uint32_t seed = 12345;

	for (unsigned round = 0; round < 300; round++) {
		const struct stream *st = &streams[round % (sizeof(streams) / sizeof(streams[0]))];
		size_t len = strlen(st->s), cuts[1024], n = 0, at = 0;
		struct fd_run *whole = frame_n(st->kind, HEAD_MAX, st->s, len, st->head_bits);
		struct fd_run *split;

		while (n < 1024) {
			seed = seed * 1103515245 + 12345;
			at += 1 + (seed >> 16) % 40;
			if (at >= len)
				break;
			cuts[n++] = at;
		}
		split = frame_split(st, cuts, n);
		check_same(whole, split, "randomly, segments", n + 1);
		fd_free(split);
		free_runs(NULL);
	}
}

/* ps_frame_run() takes header values, reason phrases and queries eight
 * bytes at a time: a byte that ends or breaks such a run must be seen at
 * every offset within a word, and a head limit inside a word too. */
static void test_frame_run_words_stop_at_every_offset(void **state)
{
	static const struct {
		__u8 kind;
		const char *fmt;	/* %s: the run */
		const char specials[8];
	} shapes[] = {
		{ PS_FRAME_REQUEST, "GET /a?%s HTTP/1.1\r\n\r\n", "# \x7f\x80\t" },
		{ PS_FRAME_REQUEST, "GET /a HTTP/1.1\r\nX-Run: %s\r\n\r\n", "\t\x7f\x80\n\x01" },
		{ PS_FRAME_RESPONSE, "HTTP/1.1 200 %s\r\nContent-Length: 0\r\n\r\n",
		  "\t\x7f\x80\x1f" },
	};
	static const __u32 limits[] = { HEAD_MAX, 30, 37, 44 };

	for (unsigned k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
		for (const char *sp = shapes[k].specials; *sp; sp++) {
			for (unsigned at = 0; at < 24; at++) {
				char run[25], buf[128];
				int len;

				memset(run, 'v', 24);
				run[24] = 0;
				run[at] = *sp;
				len = snprintf(buf, sizeof(buf), shapes[k].fmt, run);
				for (unsigned l = 0; l < sizeof(limits) / sizeof(limits[0]); l++) {
					struct fd_run *whole = frame_n(shapes[k].kind, limits[l], buf, len, 0);
					struct fd_run *words = fd_new(shapes[k].kind, limits[l]);

					fd_feed_run(words, (const __u8 *)buf, len);
					check_same(whole, words, "through ps_frame_run, offset", at);
					fd_free(words);
					free_runs(NULL);
				}
			}
		}
	}
}

static void test_frame_run_frames_like_byte_at_a_time(void **state)
{
	for (unsigned k = 0; k < sizeof(streams) / sizeof(streams[0]); k++) {
		const struct stream *st = &streams[k];
		size_t len = strlen(st->s);
		struct fd_run *whole = frame_n(st->kind, HEAD_MAX, st->s, len, st->head_bits);
		struct fd_run *run = fd_new(st->kind, HEAD_MAX);

		run->head_bits = st->head_bits;
		fd_feed_run(run, (const __u8 *)st->s, len);
		check_same(whole, run, "through ps_frame_run, length", len);
		assert_memory_equal(whole->path, run->path, sizeof(whole->path));
		fd_free(run);
		free_runs(NULL);
	}
}

#define T(name) cmocka_unit_test_teardown(name, free_runs)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_simple_get_frames_head_and_empty_body),
		T(test_frame_run_frames_like_byte_at_a_time),
		T(test_leading_crlf_before_request_is_ignored),
		T(test_leading_bare_lf_before_request_rejected),
		T(test_absolute_form_routes_by_its_path),
		T(test_absolute_form_without_path_routes_as_root),
		T(test_absolute_form_with_query_and_no_path_routes_as_root),
		T(test_absolute_form_needs_two_slashes),
		T(test_asterisk_form_ends_path_without_prefix),
		T(test_prefix_events_are_whole_segments_of_path),
		T(test_path_ending_in_space_is_last_prefix),
		T(test_prefix_hash_is_fnv1a_of_prefix_bytes),
		T(test_path_buffer_holds_path_without_query),
		T(test_path_longer_than_buffer_keeps_first_128_bytes),
		T(test_prefix_of_128_bytes_is_not_reported),
		T(test_path_events_same_without_path_buffer),
		T(test_before_route_until_path_ends),
		T(test_in_head_from_first_byte_to_head_end),
		T(test_flags_close),
		T(test_fragment_or_control_in_target_rejected),
		T(test_invalid_method_rejected),
		T(test_head_request_sets_head_flag),
		T(test_connect_rejected_405),
		T(test_http10_sets_flag),
		T(test_http2_request_line_rejected_505),
		T(test_malformed_version_rejected_400),
		T(test_bare_lf_anywhere_in_head_rejected),
		T(test_bare_cr_rejected),
		T(test_control_bytes_in_value_rejected),
		T(test_obs_text_in_value_accepted),
		T(test_obs_fold_rejected),
		T(test_space_before_colon_rejected),
		T(test_empty_header_name_rejected),
		T(test_header_line_without_colon_rejected),
		T(test_header_names_are_case_insensitive),
		T(test_similar_header_names_are_not_framing),
		T(test_content_length_body_is_skipped),
		T(test_body_bytes_are_not_parsed),
		T(test_identical_content_lengths_accepted),
		T(test_differing_content_lengths_rejected),
		T(test_content_length_with_ows),
		T(test_content_length_non_digit_rejected),
		T(test_huge_content_length_rejected),
		T(test_content_length_limit_accepted),
		T(test_content_length_with_transfer_encoding_rejected),
		T(test_chunked_request_with_extensions_and_trailers),
		T(test_chunked_without_trailers),
		T(test_malformed_chunks_rejected),
		T(test_chunk_size_of_15_hex_digits_accepted),
		T(test_transfer_encoding_other_than_chunked_rejected_501),
		T(test_transfer_encoding_gzip_then_chunked_is_chunked),
		T(test_transfer_encoding_empty_list_elements_ignored),
		T(test_http10_with_transfer_encoding_rejected),
		T(test_connection_close_flag),
		T(test_connection_keep_alive_flag),
		T(test_connection_upgrade_and_upgrade_header_flags),
		T(test_connection_tokens_must_match_whole),
		T(test_head_over_head_max_request_431),
		T(test_head_of_exactly_head_max_accepted),
		T(test_head_over_head_max_response_502),
		T(test_head_max_is_capped_at_16_bit_positions),
		T(test_error_state_is_sticky),
		T(test_pipelined_requests_in_one_buffer),
		T(test_response_content_length_body),
		T(test_response_chunked),
		T(test_response_chunked_overrides_content_length),
		T(test_response_204_and_304_have_no_body),
		T(test_response_to_head_has_no_body_even_with_cl),
		T(test_response_100_continue_then_200),
		T(test_response_interim_keeps_req_head),
		T(test_response_101_is_tunnel),
		T(test_response_without_length_until_close),
		T(test_response_te_without_chunked_until_close),
		T(test_status_line_without_reason_phrase),
		T(test_invalid_status_rejected),
		T(test_split_at_any_byte_frames_the_same),
		T(test_byte_at_a_time_with_handover_frames_the_same),
		T(test_random_segments_frame_the_same),
		T(test_frame_run_words_stop_at_every_offset),
	};

	return cmocka_run_group_tests_name("http_frame", tests, NULL, NULL);
}
