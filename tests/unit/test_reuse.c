// SPDX-License-Identifier: GPL-2.0
/*
 * One-shot requests on kept instance connections: the head edits (same
 * length, in place) and the pool of idle connections (real sockets).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "../../user/reuse.h"

/* Apply fn to a copy of head; the result must keep the length. */
static char *edit(int (*fn)(uint8_t *, size_t), const char *head, int *ret)
{
	static char buf[1024];
	size_t len = strlen(head);

	assert_true(len < sizeof(buf));
	memcpy(buf, head, len + 1);
	*ret = fn((uint8_t *)buf, len);
	assert_int_equal(strlen(buf), len);
	return buf;
}

static void test_request_close_is_blanked(void **state)
{
	int n;
	char *out = edit(reuse_request_head,
			 "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &n);

	assert_int_equal(n, 1);
	assert_string_equal(out, "GET /a HTTP/1.1\r\nHost: x\r\nConnection:      \r\n\r\n");
}

static void test_request_close_among_other_tokens(void **state)
{
	int n;
	char *out = edit(reuse_request_head,
			 "GET / HTTP/1.1\r\nconnection: TE,  CLOSE ,x-y\r\nTE: trailers\r\n\r\n", &n);

	assert_int_equal(n, 1);
	assert_string_equal(out, "GET / HTTP/1.1\r\nconnection: TE,        ,x-y\r\nTE: trailers\r\n\r\n");
}

static void test_request_close_in_two_fields(void **state)
{
	int n;
	char *out = edit(reuse_request_head,
			 "GET / HTTP/1.1\nConnection: close\nConnection:close\n\n", &n);

	assert_int_equal(n, 2);
	assert_string_equal(out, "GET / HTTP/1.1\nConnection:      \nConnection:     \n\n");
}

static void test_request_other_fields_untouched(void **state)
{
	static const char head[] = "GET /close HTTP/1.1\r\nX-Connection: close\r\n"
				   "Connections: close\r\nVia: close\r\nConnection: closed\r\n\r\n"
				   "Connection: close\r\n";
	int n;
	char *out = edit(reuse_request_head, head, &n);

	/* nothing after the head's end is a field either */
	assert_int_equal(n, 0);
	assert_string_equal(out, head);
}

static void test_response_keep_alive_becomes_close(void **state)
{
	int r;
	char *out = edit(reuse_response_head,
			 "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive\r\n\r\n", &r);

	assert_int_equal(r, 1);
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: close     \r\n\r\n");
}

static void test_response_already_close(void **state)
{
	int r;
	char *out = edit(reuse_response_head, "HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n", &r);

	assert_int_equal(r, 1);
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n");
}

static void test_response_without_connection_needs_one(void **state)
{
	int r;

	edit(reuse_response_head, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &r);
	assert_int_equal(r, 0);
	edit(reuse_response_head, "HTTP/1.1 200 OK\r\nConnection: x-foo\r\n\r\n", &r);
	assert_int_equal(r, 0);
}

static void test_head_end_is_before_the_empty_line(void **state)
{
	static const char crlf[] = "HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
	static const char lf[] = "HTTP/1.1 200 OK\nA: b\n\n";

	assert_int_equal(reuse_head_end((const uint8_t *)crlf, strlen(crlf)), strlen(crlf) - 2);
	assert_int_equal(reuse_head_end((const uint8_t *)lf, strlen(lf)), strlen(lf) - 1);
}

/* ---- the pool ------------------------------------------------------------ */

static int is_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

static void test_pool_gives_back_the_newest_first(void **state)
{
	struct pool *p = pool_new(4, 1000);
	int a[2], b[2];

	pair(a);
	pair(b);
	pool_put(p, 7, 1, a[0], 100);
	pool_put(p, 7, 1, b[0], 200);
	assert_int_equal(pool_size(p), 2);
	assert_int_equal(pool_get(p, 7, 1, 300), b[0]);
	assert_int_equal(pool_get(p, 7, 1, 300), a[0]);
	assert_int_equal(pool_get(p, 7, 1, 300), -1);
	assert_int_equal(pool_get(p, 8, 1, 300), -1);
	pool_free(p);
	assert_true(is_open(a[0]) && is_open(b[0]));
	close(a[0]), close(a[1]), close(b[0]), close(b[1]);
}

static void test_pool_drops_stale_connections(void **state)
{
	struct pool *p = pool_new(5, 1000);
	int closed[2], chatty[2], old[2], other_gen[2], good[2];

	pair(closed), pair(chatty), pair(old), pair(other_gen), pair(good);
	close(closed[1]);			/* the instance closed it */
	assert_int_equal(write(chatty[1], "x", 1), 1);	/* it sent something unasked */
	pool_put(p, 1, 5, good[0], 1000);
	pool_put(p, 1, 5, old[0], 0);		/* idle too long by the time it is asked for */
	pool_put(p, 1, 4, other_gen[0], 1000);	/* the slot was reused since */
	pool_put(p, 1, 5, chatty[0], 1000);
	pool_put(p, 1, 5, closed[0], 1000);
	assert_int_equal(pool_get(p, 1, 5, 1500), good[0]);
	assert_int_equal(pool_size(p), 0);
	assert_false(is_open(closed[0]));
	assert_false(is_open(chatty[0]));
	assert_false(is_open(other_gen[0]));
	pool_free(p);
	close(good[0]), close(good[1]), close(chatty[1]), close(old[1]), close(other_gen[1]);
}

static void test_pool_full_closes_the_newcomer(void **state)
{
	struct pool *p = pool_new(1, 1000);
	int a[2], b[2];

	pair(a), pair(b);
	pool_put(p, 3, 1, a[0], 0);
	pool_put(p, 3, 1, b[0], 0);
	assert_false(is_open(b[0]));
	assert_int_equal(pool_size(p), 1);
	pool_free(p);
	assert_false(is_open(a[0]));
	close(a[1]), close(b[1]);
}

static void test_pool_sweep_closes_the_expired_only(void **state)
{
	struct pool *p = pool_new(4, 1000);
	int a[2], b[2];

	pair(a), pair(b);
	pool_put(p, 2, 1, a[0], 0);
	pool_put(p, 2, 1, b[0], 900);
	pool_sweep(p, 1500);
	assert_false(is_open(a[0]));
	assert_int_equal(pool_size(p), 1);
	assert_int_equal(pool_get(p, 2, 1, 1500), b[0]);
	pool_free(p);
	close(a[1]), close(b[0]), close(b[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test(f)
		T(test_request_close_is_blanked),
		T(test_request_close_among_other_tokens),
		T(test_request_close_in_two_fields),
		T(test_request_other_fields_untouched),
		T(test_response_keep_alive_becomes_close),
		T(test_response_already_close),
		T(test_response_without_connection_needs_one),
		T(test_head_end_is_before_the_empty_line),
		T(test_pool_gives_back_the_newest_first),
		T(test_pool_drops_stale_connections),
		T(test_pool_full_closes_the_newcomer),
		T(test_pool_sweep_closes_the_expired_only),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
