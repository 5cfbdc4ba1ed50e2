/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ps-client: raw-socket HTTP/1.1 scenarios for pathsplice's integration
 * tests, the ones curl cannot produce: true pipelining, half-close, a reader
 * that stalls, byte-exact bulk transfers, WebSocket echo, hand-made bytes.
 *
 *   ps-client MODE HOST:PORT [ARGS] [OPTIONS]
 *
 * Exit status: 0 success, 1 failure (one line on stderr says why), 2 usage.
 * Output is line-oriented for grep; see usage() for each mode's lines.
 *
 * Every wait (connect, send, receive) is bounded by one deadline, --timeout
 * seconds from the start, so a hung proxy makes a test fail, never hang.
 * The socket is non-blocking and every wait is a poll() against it.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "pattern.h"
#include "ps_http.h"
#include "ps_ws.h"
#include "selftest.h"

#define IN_BUF_INIT	(256 * 1024)
#define IN_BUF_MAX	(256 * 1024 * 1024)	/* what we hold while a peer echoes */
#define SEND_PIECE	(256 * 1024)		/* generated body bytes per send */
#define MAX_HEADERS	32
#define WS_MSG_MAX	(64 * 1024 * 1024)
#define STALL_READ	1024			/* bytes the stall mode reads first */
#define STALL_RCVBUF	(16 * 1024)
#define LINE_MAX_SHOWN	200			/* of a body's first line */
#define READ_NOTHING	(-2)			/* read_available(): no data yet */

/* Command-line options; each mode reads the ones that concern it. */
static struct {
	double timeout;			/* --timeout SEC */
	const char *headers[MAX_HEADERS]; /* -H 'Name: value' */
	int n_headers;
	bool chunked;			/* upload --chunked */
	bool has_body_bytes;		/* halfclose --body-bytes N */
	uint64_t body_bytes;
	long drip_ms;			/* raw --drip MS */
	bool shut;			/* raw --shut */
	bool reset;			/* raw --reset */
	long idle_ms;			/* raw --idle MS */
	long gap_ms;			/* keepalive --gap MS */
	bool resume;			/* stall --resume */
	const char *first;		/* stall --first: a request before the stalled one */
	int rcvbuf;			/* stall --rcvbuf: SO_RCVBUF */
	uint64_t ws_binary;		/* ws --binary-bytes N */
	uint64_t repeat;		/* upload --repeat N */
	const char *method;		/* upload --method M */
	pid_t stop_pid;			/* fanout --stop-pid PID */
	long stop_ms;			/* fanout --stop-ms MS */
} g_opt = {
	.timeout = 20,
	.idle_ms = 2000,
	.ws_binary = 1024 * 1024,
	.rcvbuf = STALL_RCVBUF,
	.repeat = 1,
	.method = "POST",
	.stop_ms = 300,
};

static const char *g_mode = "";
static const char *g_authority;	/* HOST:PORT as given: the Host header */

struct client {
	int fd;
	struct ps_in in;
	double deadline;	/* CLOCK_MONOTONIC seconds */
	bool nowait;		/* reads return EAGAIN instead of waiting */
	bool peer_eof;		/* the peer finished sending */
	uint64_t read_limit;	/* stop reading after this many bytes; 0: no limit */
	uint64_t bytes_read;
	char phase[96];		/* what a read is for, should it time out */
};

/* ------------------------------------------------------------------------ */
/* Failing                                                                   */

/* One line on stderr, after whatever stdout has (it shows how far we got). */
__attribute__((noreturn, format(printf, 1, 2)))
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "ps-client %s: ", g_mode);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Fails with the reason the last ps_in call gave. */
__attribute__((noreturn))
static void fail_in(const struct client *c, const char *what)
{
	fail("%s: %s%s%s", what, c->in.err ? c->in.err : "read failed",
	     c->in.sys_errno ? ": " : "", c->in.sys_errno ? strerror(c->in.sys_errno) : "");
}

/* Last resort if a wait ever escaped the deadline: still exit 1, never hang. */
static void on_alarm(int sig)
{
	static const char msg[] = "ps-client: overall timeout (watchdog)\n";

	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	_exit(1);
}

/* Milliseconds in a (positive) number of seconds, rounded up: no -lm. */
static long ms_ceil(double seconds)
{
	return (long)(seconds * 1000.0 + 0.999);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts a --timeout period for the waits that follow. */
static void arm_deadline(struct client *c)
{
	c->deadline = now() + g_opt.timeout;
	alarm((unsigned)g_opt.timeout + 6);
}

/* Waits for events on the socket until the deadline; returns revents. */
static short wait_fd(struct client *c, short events, const char *what)
{
	for (;;) {
		struct pollfd pfd = { c->fd, events, 0 };
		double left = c->deadline - now();

		if (left <= 0)
			fail("timed out after %gs %s", g_opt.timeout, what);
		int n = poll(&pfd, 1, (int)ms_ceil(left));

		if (n > 0)
			return pfd.revents;
		if (n < 0 && errno != EINTR)
			fail("poll: %s", strerror(errno));
	}
}

/* ------------------------------------------------------------------------ */
/* Connection                                                                */

/* The ps_in source: waits for data (unless nowait), honours read_limit. */
static ssize_t client_read(void *ctx, void *dst, size_t n)
{
	struct client *c = ctx;

	if (c->read_limit) {
		if (c->bytes_read >= c->read_limit) {
			errno = ENOBUFS;
			return -1;
		}
		if (n > c->read_limit - c->bytes_read)
			n = (size_t)(c->read_limit - c->bytes_read);
	}
	for (;;) {
		ssize_t r = recv(c->fd, dst, n, 0);

		if (r >= 0) {
			c->bytes_read += (uint64_t)r;
			c->peer_eof |= r == 0;
			return r;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || c->nowait)
			return -1;
		wait_fd(c, POLLIN, c->phase[0] ? c->phase : "waiting for data");
	}
}

/* Splits HOST:PORT or [V6]:PORT; false if it is not of that form. */
static bool split_hostport(const char *s, char *host, size_t host_size, const char **port)
{
	const char *colon = strrchr(s, ':');
	size_t n;

	if (!colon || colon == s || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return false;
	n = (size_t)(colon - s);
	if (s[0] == '[' && colon[-1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= host_size)
		return false;
	memcpy(host, s, n);
	host[n] = '\0';
	*port = colon + 1;
	return true;
}

/* One non-blocking connect attempt, bounded by the deadline. */
static int try_connect(struct client *c, const struct addrinfo *ai, int rcvbuf)
{
	int err = 0;
	socklen_t len = sizeof(err);

	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return errno;
	/* Before connect(), or the window scale is already negotiated for a large buffer. */
	if (rcvbuf)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS) {
			err = errno;
		} else {
			wait_fd(c, POLLOUT, "connecting");
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
				err = errno;
		}
	}
	if (err) {
		close(c->fd);
		c->fd = -1;
	}
	return err;
}

/* Connects to HOST:PORT (rcvbuf: SO_RCVBUF to set first, or 0). */
static void client_connect(struct client *c, const char *hostport, int rcvbuf)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	const char *port;
	char host[256];
	int one = 1, err = 0;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	arm_deadline(c);
	if (!split_hostport(hostport, host, sizeof(host), &port))
		fail("bad address %s", hostport);
	if ((err = getaddrinfo(host, port, &hints, &res)))
		fail("%s: %s", hostport, gai_strerror(err));
	for (const struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next)
		err = try_connect(c, ai, rcvbuf);
	freeaddrinfo(res);
	if (c->fd < 0)
		fail("connect to %s: %s", hostport, strerror(err));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	uint8_t *buf = malloc(IN_BUF_INIT);

	if (!buf)
		fail("out of memory");
	ps_in_init(&c->in, buf, IN_BUF_INIT, IN_BUF_MAX, client_read, c);
}

static void client_close(struct client *c)
{
	close(c->fd);
	free(c->in.buf);
	c->fd = -1;
	c->in.buf = NULL;
}

/* Reads whatever has arrived, without waiting: as ps_in_fill(), or READ_NOTHING. */
static ssize_t read_available(struct client *c)
{
	c->nowait = true;
	ssize_t r = ps_in_fill(&c->in);
	c->nowait = false;
	if (r < 0 && c->in.sys_errno == EAGAIN) {
		c->in.sys_errno = 0;
		c->in.err = NULL;
		return READ_NOTHING;
	}
	return r;
}

/*
 * Sends everything. Whatever arrives meanwhile is read into the input
 * buffer, so a peer that answers or echoes while we send can never block
 * us both on full socket buffers. Returns 0, or -1 with errno set if the
 * peer stopped taking data (EPIPE, ECONNRESET).
 */
static int send_all(struct client *c, const void *data, size_t n)
{
	const uint8_t *p = data;

	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN)
			return -1;
		bool can_read = !c->peer_eof && ps_in_has_room(&c->in);
		short rev = wait_fd(c, POLLOUT | (can_read ? POLLIN : 0), "sending");

		if ((rev & POLLIN) && can_read && read_available(c) == -1)
			c->peer_eof = true; /* a read error: the send will say which */
	}
	return 0;
}

/* If the peer already answered, its status code (for error messages), else 0. */
static int early_status(struct client *c)
{
	while (ps_in_has_room(&c->in) && read_available(c) > 0)
		;
	const char *p = (const char *)ps_in_data(&c->in);

	if (ps_in_len(&c->in) < 12 || memcmp(p, "HTTP/1.", 7) != 0)
		return 0;
	return atoi(p + 9);
}

/* send_all() that fails with the best explanation available. */
static void send_or_fail(struct client *c, const void *data, size_t n, const char *what)
{
	if (send_all(c, data, n) == 0)
		return;
	int err = errno, status = early_status(c);

	if (status)
		fail("sending %s: peer answered %d and stopped reading (%s)", what, status,
		     strerror(err));
	fail("sending %s: %s", what, strerror(err));
}

/* ------------------------------------------------------------------------ */
/* Requests and responses                                                    */

static bool user_sent_header(const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < g_opt.n_headers; i++)
		if (!strncasecmp(g_opt.headers[i], name, n) && g_opt.headers[i][n] == ':')
			return true;
	return false;
}

/* A request head: the Host header, the -H headers, then `extra` (CRLF lines). */
static char *request_head(const char *method, const char *path, const char *extra, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (!f)
		fail("out of memory");
	fprintf(f, "%s %s HTTP/1.1\r\n", method, path);
	if (!user_sent_header("host"))
		fprintf(f, "Host: %s\r\n", g_authority);
	fprintf(f, "User-Agent: ps-client\r\n");
	for (int i = 0; i < g_opt.n_headers; i++)
		fprintf(f, "%s\r\n", g_opt.headers[i]);
	fprintf(f, "%s\r\n", extra);
	if (fclose(f) != 0)
		fail("out of memory");
	return buf;
}

static void send_request(struct client *c, const char *method, const char *path, const char *extra)
{
	size_t len;
	char *head = request_head(method, path, extra, &len);

	send_or_fail(c, head, len, "the request head");
	free(head);
}

/* What the modes need of a response head, copied out of the input buffer. */
struct response {
	int status;
	bool close;		/* the peer ends the connection after it */
	bool has_length;
	uint64_t length;
	bool upgrade_websocket;
	bool conn_upgrade;
	char instance[128];	/* "-" if absent */
	char accept[64];
	struct ps_body body;
};

static void copy_field(char *dst, size_t size, struct ps_str s, const char *fallback)
{
	if (!s.p) {
		snprintf(dst, size, "%s", fallback);
		return;
	}
	snprintf(dst, size, "%.*s", (int)s.n, s.p);
}

/*
 * Reads the next final response head (interim 1xx responses are skipped,
 * 101 is final). `what` names it in failures.
 */
static void read_response(struct client *c, struct response *r, bool head_request, const char *what)
{
	struct ps_head h;

	snprintf(c->phase, sizeof(c->phase), "reading %s", what);
	for (;;) {
		const char *head, *err;
		size_t len;
		int rc = ps_in_head(&c->in, PS_HEAD_MAX, false, &head, &len);

		if (rc == 0)
			fail("%s: connection closed before the response", what);
		if (rc < 0)
			fail_in(c, what);
		if ((err = ps_head_parse(head, len, false, &h)))
			fail("%s: bad response head: %s", what, err);
		if (h.status >= 200 || h.status == 101)
			break;
	}
	memset(r, 0, sizeof(*r));
	r->status = h.status;
	r->close = h.conn_close || (h.minor == 0 && !h.conn_keep_alive);
	r->has_length = h.has_length;
	r->length = h.length;
	r->upgrade_websocket = h.upgrade_websocket;
	r->conn_upgrade = h.conn_upgrade;
	copy_field(r->instance, sizeof(r->instance), h.instance, "-");
	copy_field(r->accept, sizeof(r->accept), h.ws_accept, "");
	ps_body_init_response(&r->body, &h, head_request);
	if (r->body.state == PS_BODY_UNTIL_EOF)
		r->close = true;
}

/* What a body turned out to be; fed piece by piece. */
struct body_acc {
	uint64_t len;
	uint32_t crc;
	bool check_pattern;	/* stop at the first byte that is not the pattern */
	int64_t bad;		/* offset of that byte, or -1 */
	uint8_t bad_byte;
	char line[LINE_MAX_SHOWN + 1]; /* first line, without CR/LF */
	size_t line_len;
	bool line_done;
};

static void acc_init(struct body_acc *a, bool check_pattern)
{
	memset(a, 0, sizeof(*a));
	a->crc = (uint32_t)crc32(0, NULL, 0);
	a->check_pattern = check_pattern;
	a->bad = -1;
}

static void acc_feed(struct body_acc *a, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && !a->line_done; i++) {
		if (p[i] == '\n')
			a->line_done = true;
		else if (p[i] != '\r' && a->line_len < LINE_MAX_SHOWN)
			a->line[a->line_len++] = (char)p[i];
	}
	a->crc = (uint32_t)crc32(a->crc, p, (uInt)n);
	if (a->check_pattern && a->bad < 0) {
		int64_t i = ps_pattern_check(p, a->len, n);

		if (i >= 0) {
			a->bad = (int64_t)a->len + i;
			a->bad_byte = p[i];
		}
	}
	a->len += n;
}

/* Reads the whole body into the accumulator (up to a pattern mismatch). */
static void read_body(struct client *c, struct response *r, struct body_acc *a, const char *what)
{
	const uint8_t *data;
	size_t n;
	int rc;

	snprintf(c->phase, sizeof(c->phase), "reading %s", what);
	while ((rc = ps_body_next(&c->in, &r->body, &data, &n)) > 0) {
		acc_feed(a, data, n);
		if (a->bad >= 0)
			return;
	}
	if (rc < 0)
		fail_in(c, what);
}

/* Printable ASCII as is, anything else as \xHH: one token, one line. */
static void put_escaped(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch >= 0x20 && ch < 0x7f && ch != '\\')
			putchar(ch);
		else if (ch == '\\')
			fputs("\\\\", stdout);
		else
			printf("\\x%02x", ch);
	}
}

/* "STATUS INSTANCE FIRST-BODY-LINE" ("-" for an absent instance or empty body). */
static void print_response_line(const struct response *r, const struct body_acc *a)
{
	printf("%d ", r->status);
	put_escaped(r->instance, strlen(r->instance));
	putchar(' ');
	if (a->line_len)
		put_escaped(a->line, a->line_len);
	else
		putchar('-');
	putchar('\n');
}

/*
 * Sends `total` pattern bytes as a request body, Content-Length framed or
 * chunked in varied chunk sizes (the terminating chunk included). Returns
 * the CRC-32 of the body.
 */
static uint32_t send_pattern_body(struct client *c, uint64_t total, bool chunked)
{
	uint8_t *buf = malloc(SEND_PIECE);
	uint32_t crc = (uint32_t)crc32(0, NULL, 0);
	uint64_t off = 0, seq = 0;
	const size_t slack = 32; /* a chunk header and CRLF */

	if (!buf)
		fail("out of memory");
	while (off < total) {
		size_t len = 0;

		/* Several chunks per send: tiny chunks must not mean tiny writes. */
		while (off < total && len + slack < SEND_PIECE) {
			size_t n = SEND_PIECE - len - slack;

			if (n > total - off)
				n = (size_t)(total - off);
			if (chunked) {
				if (n > ps_chunk_size(seq))
					n = ps_chunk_size(seq);
				seq++;
				len += (size_t)sprintf((char *)buf + len, "%zx\r\n", n);
			}
			ps_pattern_fill(buf + len, off, n);
			crc = (uint32_t)crc32(crc, buf + len, (uInt)n);
			len += n;
			off += n;
			if (chunked) {
				memcpy(buf + len, "\r\n", 2);
				len += 2;
			}
		}
		send_or_fail(c, buf, len, "the request body");
	}
	if (chunked)
		send_or_fail(c, "0\r\n\r\n", 5, "the last chunk");
	free(buf);
	return crc;
}

/* Fails unless the peer has closed and sent nothing after the response. */
static void expect_eof(struct client *c, const char *what)
{
	snprintf(c->phase, sizeof(c->phase), "waiting for EOF %s", what);
	ssize_t r = ps_in_len(&c->in) ? 1 : ps_in_fill(&c->in);

	if (r > 0)
		fail("more bytes %s, want EOF", what);
	if (r < 0)
		fail_in(c, what);
}

/* True if the peer has closed: an EOF is already visible, without reading data. */
static bool peer_closed(struct client *c)
{
	char byte;

	if (ps_in_len(&c->in))
		return false;
	return recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* ------------------------------------------------------------------------ */
/* Modes                                                                     */

/* Reads one response and its body, prints its line (print_response_line());
 * returns whether the server said it closes the connection after it. */
static bool read_answer(struct client *c, const char *what)
{
	struct response r;
	struct body_acc a;

	read_response(c, &r, false, what);
	acc_init(&a, false);
	read_body(c, &r, &a, what);
	print_response_line(&r, &a);
	return r.close;
}

/* pipeline: every GET in one write, then the responses in order. */
static int mode_pipeline(const char *addr, char **args, int nargs)
{
	struct client c;
	char *all = NULL;
	size_t all_len = 0;
	FILE *f = open_memstream(&all, &all_len);

	if (!f)
		fail("out of memory");
	for (int i = 0; i < nargs; i++) {
		size_t len;
		char *head = request_head("GET", args[i], "", &len);

		fwrite(head, 1, len, f);
		free(head);
	}
	if (fclose(f) != 0)
		fail("out of memory");

	client_connect(&c, addr, 0);
	send_or_fail(&c, all, all_len, "the pipelined requests");
	free(all);
	for (int i = 0; i < nargs; i++) {
		char what[64];

		snprintf(what, sizeof(what), "response %d of %d", i + 1, nargs);
		if (read_answer(&c, what) && i + 1 < nargs)
			fail("server closed the connection after response %d of %d", i + 1, nargs);
	}
	client_close(&c);
	return 0;
}

/* keepalive: one connection, each GET after the previous response. */
static int mode_keepalive(const char *addr, char **args, int nargs)
{
	struct client c;

	client_connect(&c, addr, 0);
	for (int i = 0; i < nargs; i++) {
		char what[64];
		bool closes;

		snprintf(what, sizeof(what), "response %d of %d", i + 1, nargs);
		if (i && g_opt.gap_ms)
			usleep(g_opt.gap_ms * 1000);
		send_request(&c, "GET", args[i], "");
		closes = read_answer(&c, what);
		if (i + 1 == nargs)
			break;
		if (closes || peer_closed(&c))
			fail("server closed the connection after response %d of %d", i + 1, nargs);
		if (ps_in_len(&c.in))
			fail("unexpected bytes after response %d", i + 1);
	}
	printf("conns 1\n");
	client_close(&c);
	return 0;
}

static uint64_t parse_count(const char *opt, const char *s);
__attribute__((noreturn, format(printf, 1, 2)))
static void usage_error(const char *fmt, ...);

static pid_t g_stopped;	/* a process fanout stopped and has not resumed */

static void resume_stopped(void)
{
	if (g_stopped > 0)
		kill(g_stopped, SIGCONT);
	g_stopped = 0;
}

/*
 * fanout: N connections, each GET A and its answer; then every connection
 * sends GET B while --stop-pid (if given) is stopped (SIGSTOP, for
 * --stop-ms), so that whatever the kernel does with those requests piles up
 * for that process; the answers to B are read once it runs again.
 */
static int mode_fanout(const char *addr, char **args, int nargs)
{
	uint64_t n = parse_count("fanout", args[0]);
	struct client *cs;
	char what[64];

	(void)nargs;
	if (n == 0 || n > 4096)
		usage_error("fanout: 1 to 4096 connections");
	cs = calloc(n, sizeof(*cs));
	if (!cs)
		fail("out of memory");
	for (uint64_t i = 0; i < n; i++) {
		client_connect(&cs[i], addr, 0);
		snprintf(what, sizeof(what), "first answer on connection %llu", (unsigned long long)i + 1);
		send_request(&cs[i], "GET", args[1], "");
		if (read_answer(&cs[i], what))
			fail("%s: the server closes the connection", what);
	}
	if (g_opt.stop_pid > 0) {
		if (kill(g_opt.stop_pid, SIGSTOP))
			fail("stop %d: %s", (int)g_opt.stop_pid, strerror(errno));
		g_stopped = g_opt.stop_pid;
		atexit(resume_stopped);	/* a failure below must not leave it stopped */
	}
	for (uint64_t i = 0; i < n; i++)
		send_request(&cs[i], "GET", args[2], "");
	if (g_stopped) {
		usleep(g_opt.stop_ms * 1000);
		resume_stopped();
	}
	for (uint64_t i = 0; i < n; i++) {
		arm_deadline(&cs[i]);
		snprintf(what, sizeof(what), "second answer on connection %llu", (unsigned long long)i + 1);
		if (read_answer(&cs[i], what))
			fail("%s: the server closes the connection", what);
		client_close(&cs[i]);
	}
	free(cs);
	printf("conns %llu\n", (unsigned long long)n);
	return 0;
}

/*
 * halfclose: a request with Connection: close, then shutdown(SHUT_WR) at
 * once; the whole response must still arrive, followed by a clean EOF.
 */
static int mode_halfclose(const char *addr, char **args, int nargs)
{
	struct client c;
	struct response r;
	struct body_acc a;
	uint32_t sent_crc = 0;
	char extra[128];

	client_connect(&c, addr, 0);
	if (g_opt.has_body_bytes) {
		snprintf(extra, sizeof(extra), "Connection: close\r\nContent-Length: %llu\r\n",
			 (unsigned long long)g_opt.body_bytes);
		send_request(&c, "POST", args[0], extra);
		sent_crc = send_pattern_body(&c, g_opt.body_bytes, false);
	} else {
		send_request(&c, "GET", args[0], "Connection: close\r\n");
	}
	if (shutdown(c.fd, SHUT_WR) < 0)
		fail("shutdown: %s", strerror(errno));
	read_response(&c, &r, false, "response");
	acc_init(&a, false);
	read_body(&c, &r, &a, "response body");
	expect_eof(&c, "after the response");

	printf("%d %llu ", r.status, (unsigned long long)a.len);
	put_escaped(r.instance, strlen(r.instance));
	printf("\nbody ");
	if (a.line_len)
		put_escaped(a.line, a.line_len);
	else
		putchar('-');
	putchar('\n');
	if (g_opt.has_body_bytes)
		printf("sent %llu %08x\n", (unsigned long long)g_opt.body_bytes, sent_crc);
	client_close(&c);
	return 0;
}

/* upload: POST BYTES pattern bytes; print the answer and what we sent. */
static int mode_upload(const char *addr, char **args, int nargs)
{
	struct client c;
	struct response r;
	struct body_acc a;
	uint64_t bytes;
	char extra[128];

	if (!ps_parse_dec(args[1], strlen(args[1]), PS_CHUNK_MAX, &bytes))
		fail("bad byte count %s", args[1]);
	if (g_opt.chunked)
		snprintf(extra, sizeof(extra), "Transfer-Encoding: chunked\r\n");
	else
		snprintf(extra, sizeof(extra), "Content-Length: %llu\r\n", (unsigned long long)bytes);

	client_connect(&c, addr, 0);
	for (uint64_t i = 0; i < g_opt.repeat; i++) {
		char what[64], want[32];

		if (i)
			arm_deadline(&c);	/* --timeout is per upload */
		snprintf(what, sizeof(what), "response %llu of %llu", (unsigned long long)i + 1,
			 (unsigned long long)g_opt.repeat);
		send_request(&c, g_opt.method, args[0], extra);
		uint32_t crc = send_pattern_body(&c, bytes, g_opt.chunked);

		read_response(&c, &r, false, what);
		acc_init(&a, false);
		read_body(&c, &r, &a, what);
		if (r.status < 200 || r.status > 299)
			fail("HTTP %d from %s (%s): %.*s", r.status, r.instance, what,
			     (int)a.line_len, a.line);
		if (g_opt.repeat == 1) {
			put_escaped(a.line, a.line_len);
			printf("\nsent %llu %08x\n", (unsigned long long)bytes, crc);
			break;
		}
		/* several on one connection: a sink's answer must account
		 * for exactly the bytes sent (other servers: the status) */
		snprintf(want, sizeof(want), "%llu %08x", (unsigned long long)bytes, crc);
		if (strstr(args[0], "sink=1") &&
		    (a.line_len != strlen(want) || memcmp(a.line, want, a.line_len)))
			fail("%s: the instance received \"%.*s\", sent \"%s\"", what,
			     (int)a.line_len, a.line, want);
		if (r.close || peer_closed(&c))
			fail("server closed the connection after %s", what);
	}
	if (g_opt.repeat > 1)
		printf("ok %llu uploads of %llu\n", (unsigned long long)g_opt.repeat,
		       (unsigned long long)bytes);
	client_close(&c);
	return 0;
}

/* ---- resend: a retransmission that overlaps acknowledged bytes --------- */

/* Acknowledged bytes sent again in one segment with new ones. Few: the
 * first retransmission (a tail loss probe) must carry all of them, or the
 * peer's answer to it acknowledges the old bytes and they are dropped. */
#define RESEND_OLD	200
#define RESEND_NEW	200

static void tcp_setopt(int fd, int opt, const void *v, socklen_t len, const char *what)
{
	if (setsockopt(fd, IPPROTO_TCP, opt, v, len))
		fail("%s: %s", what, strerror(errno));
}

static void tcp_getopt(int fd, int opt, void *v, socklen_t len, const char *what)
{
	if (getsockopt(fd, IPPROTO_TCP, opt, v, &len))
		fail("%s: %s", what, strerror(errno));
}

static void tcp_setint(int fd, int opt, int v, const char *what)
{
	tcp_setopt(fd, opt, &v, sizeof(v), what);
}

/* In repair mode: the sequence number of a queue's next byte. */
static uint32_t queue_seq(int fd, int queue)
{
	uint32_t seq;

	tcp_setint(fd, TCP_REPAIR_QUEUE, queue, "TCP_REPAIR_QUEUE");
	tcp_getopt(fd, TCP_QUEUE_SEQ, &seq, sizeof(seq), "TCP_QUEUE_SEQ");
	return seq;
}

/* Wait until the peer has acknowledged every byte sent. */
static void wait_acked(struct client *c, const char *what)
{
	struct tcp_info ti;

	for (;;) {
		tcp_getopt(c->fd, TCP_INFO, &ti, sizeof(ti), "TCP_INFO");
		if (!ti.tcpi_unacked)
			return;
		if (now() > c->deadline)
			fail("timed out after %gs waiting for %s to be acknowledged",
			     g_opt.timeout, what);
		usleep(2000);
	}
}

static void send_pattern_range(struct client *c, uint64_t from, uint64_t to, uint32_t *crc)
{
	uint8_t buf[16384];

	while (from < to) {
		size_t n = to - from < sizeof(buf) ? (size_t)(to - from) : sizeof(buf);

		ps_pattern_fill(buf, from, n);
		*crc = (uint32_t)crc32(*crc, buf, (uInt)n);
		send_or_fail(c, buf, n, "the request body");
		from += n;
	}
}

/*
 * The connection moves, in TCP repair mode (as CRIU restores one), to a new
 * socket whose send queue starts RESEND_OLD bytes before what the peer has
 * acknowledged: its retransmission timer then sends those bytes again in one
 * segment with RESEND_NEW new ones, and the peer's TCP queues it whole.
 */
static void resend_overlap(struct client *c, uint64_t at)
{
	struct sockaddr_in local, peer;
	struct tcp_repair_window win;
	struct tcp_repair_opt opts[4];
	struct tcp_info ti;
	socklen_t len;
	uint32_t snd, rcv, tsval;
	int fd, mss, one = 1, nopt = 0;
	uint8_t buf[RESEND_OLD + RESEND_NEW];

	len = sizeof(local);
	if (getsockname(c->fd, (struct sockaddr *)&local, &len))
		fail("getsockname: %s", strerror(errno));
	len = sizeof(peer);
	if (getpeername(c->fd, (struct sockaddr *)&peer, &len))
		fail("getpeername: %s", strerror(errno));
	tcp_setint(c->fd, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR (needs CAP_NET_ADMIN)");
	snd = queue_seq(c->fd, TCP_SEND_QUEUE);
	rcv = queue_seq(c->fd, TCP_RECV_QUEUE);
	tcp_getopt(c->fd, TCP_REPAIR_WINDOW, &win, sizeof(win), "TCP_REPAIR_WINDOW");
	tcp_getopt(c->fd, TCP_MAXSEG, &mss, sizeof(mss), "TCP_MAXSEG");
	tcp_getopt(c->fd, TCP_INFO, &ti, sizeof(ti), "TCP_INFO");
	tcp_getopt(c->fd, TCP_TIMESTAMP, &tsval, sizeof(tsval), "TCP_TIMESTAMP");
	close(c->fd);	/* in repair mode: nothing is sent */

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail("socket: %s", strerror(errno));
	c->fd = fd;
	/* repair mode forces the bind past other sockets on the port (an
	 * ephemeral port is shared by connections to other peers); SO_REUSEADDR
	 * set after it would take that back */
	tcp_setint(fd, TCP_REPAIR, TCP_REPAIR_ON, "TCP_REPAIR");
	if (bind(fd, (struct sockaddr *)&local, sizeof(local)))
		fail("bind to the connection's own address: %s", strerror(errno));
	tcp_setint(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE");
	tcp_setint(fd, TCP_QUEUE_SEQ, (int)(snd - RESEND_OLD), "TCP_QUEUE_SEQ (send)");
	tcp_setint(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE");
	tcp_setint(fd, TCP_QUEUE_SEQ, (int)rcv, "TCP_QUEUE_SEQ (receive)");
	if (connect(fd, (struct sockaddr *)&peer, sizeof(peer)))
		fail("connect in repair mode: %s", strerror(errno));
	/* the peer drops a segment whose timestamp is older than the last one
	 * (PAWS), or missing: its clock goes on */
	opts[nopt++] = (struct tcp_repair_opt){ TCPOPT_MAXSEG, (uint32_t)mss };
	if (ti.tcpi_options & TCPI_OPT_TIMESTAMPS) {
		opts[nopt++] = (struct tcp_repair_opt){ TCPOPT_TIMESTAMP, 0 };
		tcp_setint(fd, TCP_TIMESTAMP, (int)tsval, "TCP_TIMESTAMP");
	}
	if (ti.tcpi_options & TCPI_OPT_WSCALE)
		opts[nopt++] = (struct tcp_repair_opt){ TCPOPT_WINDOW,
			ti.tcpi_snd_wscale | (uint32_t)ti.tcpi_rcv_wscale << 16 };
	if (ti.tcpi_options & TCPI_OPT_SACK)
		opts[nopt++] = (struct tcp_repair_opt){ TCPOPT_SACK_PERMITTED, 0 };
	tcp_setopt(fd, TCP_REPAIR_OPTIONS, opts, (socklen_t)(nopt * sizeof(opts[0])),
		   "TCP_REPAIR_OPTIONS");
	tcp_setopt(fd, TCP_REPAIR_WINDOW, &win, sizeof(win), "TCP_REPAIR_WINDOW");
	/* queued as sent already: only the retransmission timer sends it */
	tcp_setint(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE");
	ps_pattern_fill(buf, at - RESEND_OLD, sizeof(buf));
	if (send(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
		fail("queueing the resent bytes: %s", strerror(errno));
	wait_acked(c, "the resent segment");
	tcp_setint(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP, "TCP_REPAIR off");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))
		fail("O_NONBLOCK: %s", strerror(errno));
}

/* resend: POST BYTES pattern bytes, halfway sending acknowledged ones again. */
static int mode_resend(const char *addr, char **args, int nargs)
{
	struct client c;
	struct response r;
	struct body_acc a;
	uint64_t bytes, half;
	uint32_t crc = (uint32_t)crc32(0, NULL, 0);
	char extra[64];

	(void)nargs;
	if (!ps_parse_dec(args[1], strlen(args[1]), PS_CHUNK_MAX, &bytes) ||
	    bytes < 4 * (RESEND_OLD + RESEND_NEW))
		fail("bad byte count %s (at least %d)", args[1], 4 * (RESEND_OLD + RESEND_NEW));
	half = bytes / 2;
	snprintf(extra, sizeof(extra), "Content-Length: %llu\r\n", (unsigned long long)bytes);
	client_connect(&c, addr, 0);
	send_request(&c, "POST", args[0], extra);
	send_pattern_range(&c, 0, half, &crc);
	wait_acked(&c, "the first half");
	resend_overlap(&c, half);
	/* the new bytes went in the resent segment */
	{
		uint8_t buf[RESEND_NEW];

		ps_pattern_fill(buf, half, sizeof(buf));
		crc = (uint32_t)crc32(crc, buf, sizeof(buf));
	}
	send_pattern_range(&c, half + RESEND_NEW, bytes, &crc);

	read_response(&c, &r, false, "response");
	acc_init(&a, false);
	read_body(&c, &r, &a, "response body");
	if (r.status < 200 || r.status > 299)
		fail("HTTP %d from %s: %.*s", r.status, r.instance, (int)a.line_len, a.line);
	put_escaped(a.line, a.line_len);
	printf("\nsent %llu %08x\n", (unsigned long long)bytes, crc);
	client_close(&c);
	return 0;
}

/* download: GET BYTES pattern bytes and verify every one. */
static int mode_download(const char *addr, char **args, int nargs)
{
	struct client c;
	struct response r;
	struct body_acc a;
	uint64_t bytes;

	if (!ps_parse_dec(args[1], strlen(args[1]), PS_CHUNK_MAX, &bytes))
		fail("bad byte count %s", args[1]);
	client_connect(&c, addr, 0);
	send_request(&c, "GET", args[0], "");
	read_response(&c, &r, false, "response");
	if (r.status != 200)
		fail("HTTP %d from %s, want 200", r.status, r.instance);
	if (r.has_length && r.length != bytes)
		fail("Content-Length %llu, want %llu", (unsigned long long)r.length,
		     (unsigned long long)bytes);
	acc_init(&a, true);
	read_body(&c, &r, &a, "response body");
	if (a.bad >= 0)
		fail("body byte at offset %lld is 0x%02x, want 0x%02x", (long long)a.bad, a.bad_byte,
		     ps_pattern_byte((uint64_t)a.bad));
	if (a.len != bytes)
		fail("body has %llu bytes, want %llu", (unsigned long long)a.len,
		     (unsigned long long)bytes);
	printf("ok %llu %08x\n", (unsigned long long)a.len, a.crc);
	client_close(&c);
	return 0;
}

/*
 * stall: a small receive buffer, the first 1 KiB of a large response, then
 * no reading for SECONDS with the connection open. With --resume, then read
 * the rest and verify it as download does.
 */
static int mode_stall(const char *addr, char **args, int nargs)
{
	struct client c;
	char *end;
	double seconds = strtod(args[1], &end);

	if (*end || !(seconds >= 0))
		fail("bad SECONDS %s", args[1]);
	client_connect(&c, addr, g_opt.rcvbuf);
	if (g_opt.first) {
		/* the stalled request is then the second of a keep-alive connection */
		struct response r0;
		struct body_acc a0;

		send_request(&c, "GET", g_opt.first, "");
		read_response(&c, &r0, false, "first response");
		acc_init(&a0, false);
		read_body(&c, &r0, &a0, "first response body");
		if (r0.status != 200)
			fail("HTTP %d for the first request, want 200", r0.status);
	}
	send_request(&c, "GET", args[0], "");
	c.read_limit = c.bytes_read + STALL_READ;
	snprintf(c.phase, sizeof(c.phase), "reading the first 1 KiB");
	if (ps_in_need(&c.in, STALL_READ) <= 0)
		fail_in(&c, "reading the first 1 KiB");
	const char *p = (const char *)ps_in_data(&c.in);

	if (memcmp(p, "HTTP/1.", 7) != 0 || p[9] != '2')
		fail("want a 2xx response, got \"%.12s\"", p);

	alarm(0); /* the stall is deliberate: no deadline while it lasts */
	struct timespec ts = { (time_t)seconds, 0 };

	ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	printf("stalled\n");
	if (!g_opt.resume) {
		client_close(&c);
		return 0;
	}

	struct response r;
	struct body_acc a;

	fflush(stdout);
	c.read_limit = 0;
	arm_deadline(&c);
	read_response(&c, &r, false, "response");
	acc_init(&a, true);
	read_body(&c, &r, &a, "response body after the stall");
	if (a.bad >= 0)
		fail("body byte at offset %lld is 0x%02x, want 0x%02x", (long long)a.bad, a.bad_byte,
		     ps_pattern_byte((uint64_t)a.bad));
	if (r.has_length && a.len != r.length)
		fail("body has %llu bytes, Content-Length %llu", (unsigned long long)a.len,
		     (unsigned long long)r.length);
	printf("ok %llu %08x\n", (unsigned long long)a.len, a.crc);
	client_close(&c);
	return 0;
}

/* --- WebSocket client side ------------------------------------------------ */

static void random_bytes(uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);

		if (r < 0 && errno != EINTR)
			fail("getrandom: %s", strerror(errno));
		if (r > 0) {
			p += r;
			n -= (size_t)r;
		}
	}
}

/* One masked frame with a fresh mask key (RFC 6455 5.3). */
static void ws_send(struct client *c, int opcode, const void *payload, size_t n)
{
	uint8_t mask[4];
	uint8_t *frame = malloc(PS_WS_HDR_MAX + n);

	if (!frame)
		fail("out of memory");
	random_bytes(mask, sizeof(mask));
	size_t hdr = ps_ws_frame_header(frame, true, opcode, n, mask);

	memcpy(frame + hdr, payload, n);
	ps_ws_mask(frame + hdr, n, mask, 0);
	send_or_fail(c, frame, hdr + n, "a WebSocket frame");
	free(frame);
}

struct ws_msg {
	int opcode;
	uint8_t *data;
	size_t len;
};

/* Appends one frame's payload from the input buffer to a message. */
static void ws_take_payload(struct client *c, const struct ps_ws_frame *f, struct ws_msg *m)
{
	if (m->len + f->len > WS_MSG_MAX)
		fail("WebSocket message over %d bytes", WS_MSG_MAX);
	if (ps_in_need(&c->in, (size_t)f->len) <= 0)
		fail_in(c, "reading a WebSocket frame");
	uint8_t *p = realloc(m->data, m->len + (size_t)f->len + 1);

	if (!p)
		fail("out of memory");
	m->data = p;
	memcpy(m->data + m->len, ps_in_data(&c->in), (size_t)f->len);
	m->len += (size_t)f->len;
	ps_in_consume(&c->in, (size_t)f->len);
}

/* Waits for a complete frame header and takes it. */
static void ws_recv_header(struct client *c, struct ps_ws_frame *f)
{
	const char *err;
	int r;

	snprintf(c->phase, sizeof(c->phase), "waiting for a WebSocket frame");
	while ((r = ps_ws_parse_header(ps_in_data(&c->in), ps_in_len(&c->in), f, &err)) == 0) {
		ssize_t n = ps_in_fill(&c->in);

		if (n == 0)
			fail("connection closed while waiting for a WebSocket frame");
		if (n < 0)
			fail_in(c, "waiting for a WebSocket frame");
	}
	if (r < 0)
		fail("bad WebSocket frame from the server: %s", err);
	if (f->masked)
		fail("the server sent a masked frame (RFC 6455 5.1)");
	ps_in_consume(&c->in, f->hdr_len);
}

/*
 * Receives the next message (its continuation frames joined) or control
 * frame. Pings from the server are answered and skipped, and so are pongs
 * that arrive between the fragments of a message.
 */
static void ws_recv(struct client *c, struct ws_msg *m)
{
	memset(m, 0, sizeof(*m));
	for (;;) {
		struct ps_ws_frame f;

		ws_recv_header(c, &f);
		if (ps_ws_is_control(f.opcode)) {
			struct ws_msg ctl = { f.opcode, NULL, 0 };

			ws_take_payload(c, &f, &ctl);
			if (f.opcode == PS_WS_PING)
				ws_send(c, PS_WS_PONG, ctl.data, ctl.len);
			else if (!m->opcode) {
				*m = ctl;
				return;
			} else if (f.opcode == PS_WS_CLOSE)
				fail("close frame in the middle of a fragmented message");
			free(ctl.data);
			continue;
		}
		if ((f.opcode == PS_WS_CONT) != (m->opcode != 0))
			fail("WebSocket continuation frame out of sequence");
		if (!m->opcode)
			m->opcode = f.opcode;
		ws_take_payload(c, &f, m);
		if (f.fin)
			return;
	}
}

static const char *ws_opcode_name(int opcode)
{
	switch (opcode) {
	case PS_WS_TEXT: return "text";
	case PS_WS_BINARY: return "binary";
	case PS_WS_CLOSE: return "close";
	case PS_WS_PING: return "ping";
	case PS_WS_PONG: return "pong";
	default: return "continuation";
	}
}

/* Sends a message and fails unless the identical message comes back. */
static void ws_echo(struct client *c, int opcode, const uint8_t *data, size_t len)
{
	struct ws_msg m;

	ws_send(c, opcode, data, len);
	ws_recv(c, &m);
	if (m.opcode != opcode)
		fail("sent a %s frame, got a %s frame back", ws_opcode_name(opcode),
		     ws_opcode_name(m.opcode));
	if (m.len != len)
		fail("sent a %zu-byte %s message, got %zu bytes back", len, ws_opcode_name(opcode),
		     m.len);
	for (size_t i = 0; i < len; i++)
		if (m.data[i] != data[i])
			fail("%s echo differs at byte %zu: 0x%02x, want 0x%02x",
			     ws_opcode_name(opcode), i, m.data[i], data[i]);
	free(m.data);
}

/* The opening handshake (RFC 6455 4.1), Sec-WebSocket-Accept verified. */
static void ws_handshake(struct client *c, const char *path)
{
	uint8_t nonce[16];
	char key[PS_WS_KEY_LEN + 1], want[PS_WS_ACCEPT_LEN + 1], extra[256];
	struct response r;

	random_bytes(nonce, sizeof(nonce));
	ps_base64_encode(nonce, sizeof(nonce), key);
	ps_ws_accept(key, strlen(key), want);
	snprintf(extra, sizeof(extra),
		 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
		 "Sec-WebSocket-Version: 13\r\n", key);
	send_request(c, "GET", path, extra);
	read_response(c, &r, false, "handshake");
	if (r.status != 101)
		fail("handshake: HTTP %d from %s, want 101", r.status, r.instance);
	if (!r.upgrade_websocket || !r.conn_upgrade)
		fail("handshake: 101 without Upgrade: websocket and Connection: Upgrade");
	if (strcmp(r.accept, want) != 0)
		fail("handshake: Sec-WebSocket-Accept \"%s\", want \"%s\"", r.accept, want);
	printf("101 ");
	put_escaped(r.instance, strlen(r.instance));
	putchar('\n');
}

/* The closing handshake: our close frame, the echo of its code, then EOF. */
static void ws_close(struct client *c)
{
	static const uint8_t normal[2] = { 0x03, 0xe8 }; /* 1000 */
	struct ws_msg m;

	ws_send(c, PS_WS_CLOSE, normal, sizeof(normal));
	ws_recv(c, &m);
	if (m.opcode != PS_WS_CLOSE)
		fail("sent close, got a %s frame", ws_opcode_name(m.opcode));
	if (m.len < 2 || m.data[0] != normal[0] || m.data[1] != normal[1])
		fail("close frame answered without status 1000");
	free(m.data);
	expect_eof(c, "after the close frame");
}

/* ws: handshake, echo each MSG as text, a ping, a binary pattern frame, close. */
static int mode_ws(const char *addr, char **args, int nargs)
{
	static const char ping[] = "ps-client ping";
	struct client c;
	struct ws_msg pong;
	int echoed = 0;

	client_connect(&c, addr, 0);
	ws_handshake(&c, args[0]);
	for (int i = 1; i < nargs; i++, echoed++)
		ws_echo(&c, PS_WS_TEXT, (const uint8_t *)args[i], strlen(args[i]));

	ws_send(&c, PS_WS_PING, ping, strlen(ping));
	ws_recv(&c, &pong);
	if (pong.opcode != PS_WS_PONG || pong.len != strlen(ping) || memcmp(pong.data, ping, pong.len))
		fail("ping not answered by a pong with its payload");
	free(pong.data);

	if (g_opt.ws_binary) {
		uint8_t *data = malloc((size_t)g_opt.ws_binary);

		if (!data)
			fail("out of memory");
		ps_pattern_fill(data, 0, (size_t)g_opt.ws_binary);
		ws_echo(&c, PS_WS_BINARY, data, (size_t)g_opt.ws_binary);
		free(data);
		echoed++;
	}
	ws_close(&c);
	printf("ws ok %d\n", echoed);
	client_close(&c);
	return 0;
}

/* --- raw ------------------------------------------------------------------ */

/* Decodes \r \n \t \\ \0 \xHH; false on an unknown or short escape. */
static bool unescape(const char *s, uint8_t *out, size_t *len)
{
	size_t n = 0;

	for (; *s; s++) {
		if (*s != '\\') {
			out[n++] = (uint8_t)*s;
			continue;
		}
		switch (*++s) {
		case 'r': out[n++] = '\r'; break;
		case 'n': out[n++] = '\n'; break;
		case 't': out[n++] = '\t'; break;
		case '0': out[n++] = '\0'; break;
		case '\\': out[n++] = '\\'; break;
		case 'x':
			if (ps_hex_digit(s[1]) < 0 || ps_hex_digit(s[2]) < 0)
				return false;
			out[n++] = (uint8_t)(ps_hex_digit(s[1]) << 4 | ps_hex_digit(s[2]));
			s += 2;
			break;
		default:
			return false;
		}
	}
	*len = n;
	return true;
}

/* Response bytes for a terminal: \r \t \\ \xHH escaped, "\n" also ends the line. */
static void put_raw(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		switch (p[i]) {
		case '\n': fputs("\\n\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		default:
			if (p[i] >= 0x20 && p[i] < 0x7f)
				putchar(p[i]);
			else
				printf("\\x%02x", p[i]);
		}
	}
	if (n && p[n - 1] != '\n')
		putchar('\n');
}

/*
 * Waits up to ms (and never past the deadline) for input and reads all that
 * came. Returns "eof", "reset" or "error" once the peer is done, else NULL;
 * *idle tells whether nothing came at all.
 */
static const char *raw_collect(struct client *c, long ms, bool *idle)
{
	struct pollfd pfd = { c->fd, POLLIN, 0 };
	double left = c->deadline - now();

	if (left <= 0) {
		put_raw(ps_in_data(&c->in), ps_in_len(&c->in));
		fail("timed out after %gs", g_opt.timeout);
	}
	if (ms > ms_ceil(left))
		ms = ms_ceil(left);
	*idle = poll(&pfd, 1, (int)ms) == 0;
	if (*idle)
		return NULL;
	for (;;) {
		ssize_t r = read_available(c);

		if (r == 0)
			return "eof";
		if (r == READ_NOTHING)
			return NULL;
		if (r < 0)
			return c->in.sys_errno == ECONNRESET ? "reset" : "error";
	}
}

/*
 * Sends the bytes one at a time, ms apart, collecting any answer meanwhile.
 * Returns why sending stopped early (NULL if it did not); *end is set if the
 * peer closed during the drip.
 */
static const char *raw_drip(struct client *c, const uint8_t *data, size_t len, size_t *sent,
			    const char **end)
{
	for (*sent = 0; *sent < len && !*end; (*sent)++) {
		double next = now() + (double)g_opt.drip_ms / 1000;
		double left;
		bool idle;

		if (send_all(c, data + *sent, 1) < 0)
			return strerror(errno);
		if (*sent + 1 == len)
			break;
		while (!*end && (left = next - now()) > 0)
			*end = raw_collect(c, ms_ceil(left), &idle);
	}
	if (*end)
		return "peer closed";
	*sent = len;
	return NULL;
}

/* raw: send DATA as given, print whatever comes back until EOF or silence. */
static int mode_raw(const char *addr, char **args, int nargs)
{
	struct client c;
	size_t len, sent = 0;
	uint8_t *data = malloc(strlen(args[0]) + 1);
	const char *stop = NULL, *end = NULL;
	bool idle = false;

	if (!data || !unescape(args[0], data, &len)) {
		fprintf(stderr, "ps-client raw: bad escape in DATA (use \\r \\n \\t \\\\ \\0 \\xHH)\n");
		exit(2);
	}
	client_connect(&c, addr, 0);
	if (g_opt.drip_ms > 0)
		stop = raw_drip(&c, data, len, &sent, &end);
	else if (send_all(&c, data, len) < 0)
		stop = strerror(errno);
	else
		sent = len;
	if (g_opt.shut && !stop)
		shutdown(c.fd, SHUT_WR);
	/* After a failed send the peer's answer may still be waiting: read it. */
	while (!end && !idle)
		end = raw_collect(&c, g_opt.idle_ms, &idle);

	put_raw(ps_in_data(&c.in), ps_in_len(&c.in));
	if (stop)
		printf("[send stopped after %zu of %zu bytes: %s]\n", sent, len, stop);
	printf("[%s]\n", end ? end : "idle");
	free(data);
	if (g_opt.reset) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	client_close(&c);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ps-client MODE HOST:PORT [ARGS] [OPTIONS]\n"
		"       ps-client selftest\n"
		"\n"
		"Modes (exit 0 ok, 1 failure with a reason on stderr, 2 usage):\n"
		"  pipeline HOST:PORT PATH...   all GETs in one write, responses in order;\n"
		"                               prints \"STATUS INSTANCE FIRST-BODY-LINE\" each\n"
		"  keepalive HOST:PORT PATH...  one connection, each GET after the previous\n"
		"                               response; same lines, then \"conns 1\"; fails if\n"
		"                               the server closes in between\n"
		"  halfclose HOST:PORT PATH     GET with Connection: close, then shutdown(SHUT_WR);\n"
		"                               reads to EOF; prints \"STATUS BODYLEN INSTANCE\",\n"
		"                               \"body FIRST-BODY-LINE\" and, with --body-bytes,\n"
		"                               \"sent LEN CRC32HEX\"\n"
		"  upload HOST:PORT PATH BYTES  POST BYTES pattern bytes (PATH with ?sink=1);\n"
		"                               prints the body's first line, then\n"
		"                               \"sent LEN CRC32HEX\"; fails unless 2xx; with\n"
		"                               --repeat N, N uploads on one connection, each\n"
		"                               sink answer checked against what was sent; prints\n"
		"                               \"ok N uploads of BYTES\"\n"
		"  resend HOST:PORT PATH BYTES  POST BYTES pattern bytes (PATH with ?sink=1);\n"
		"                               halfway, 200 acknowledged bytes go again in\n"
		"                               one segment with 200 new ones (TCP repair\n"
		"                               mode, root); prints as upload does\n"
		"  download HOST:PORT PATH BYTES  GET (PATH with ?bytes=BYTES), verify length\n"
		"                               and pattern; prints \"ok BYTES CRC32HEX\"\n"
		"  stall HOST:PORT PATH SECONDS  SO_RCVBUF 16 KiB (--rcvbuf), read 1 KiB, stop reading for\n"
		"                               SECONDS, print \"stalled\"; with --resume read\n"
		"                               and verify the rest, print \"ok LEN CRC32HEX\"\n"
		"  ws HOST:PORT PATH [MSG...]   WebSocket handshake (prints \"101 INSTANCE\"),\n"
		"                               each MSG echoed as text, a ping, a binary frame\n"
		"                               of pattern bytes, close; prints \"ws ok N\", N =\n"
		"                               messages echoed (MSGs + the binary one)\n"
		"  fanout HOST:PORT N A B       N connections, each GET A (answer read), then\n"
		"                               each GET B, with --stop-pid stopped meanwhile;\n"
		"                               prints every answer's line, then \"conns N\"\n"
		"  raw HOST:PORT DATA           send DATA (escapes \\r \\n \\t \\\\ \\0 \\xHH), print\n"
		"                               the answer escaped (\\r shown, \\n ends a line)\n"
		"                               until EOF or --idle silence, then \"[eof]\",\n"
		"                               \"[idle]\" or \"[reset]\"\n"
		"  selftest                     check the tools' own parser, SHA-1, base64\n"
		"\n"
		"Options:\n"
		"  --timeout SEC       overall limit per mode (default 20; stall's sleep excluded)\n"
		"  -H, --header 'N: V' extra request header (repeatable; replaces Host)\n"
		"  --body-bytes N      halfclose: POST N pattern bytes before the shutdown\n"
		"  --chunked           upload: send the body chunked\n"
		"  --repeat N          upload: N uploads, one after the other, one connection\n"
		"                      (--timeout applies to each)\n"
		"  --method M          upload: the request method (default POST)\n"
		"  --resume            stall: afterwards read and verify the whole body\n"
		"  --first PATH        stall: GET PATH (read in full) on the connection first\n"
		"  --rcvbuf BYTES      stall: SO_RCVBUF (default 16384)\n"
		"  --binary-bytes N    ws: size of the binary frame (default 1048576, 0: none)\n"
		"  --drip MS           raw: send one byte every MS milliseconds\n"
		"  --shut              raw: shutdown(SHUT_WR) after sending\n"
		"  --no-shut           raw: keep the write side open (the default)\n"
		"  --reset             raw: end with a reset (SO_LINGER 0), not a FIN\n"
		"  --idle MS           raw: silence that ends the read (default 2000)\n"
		"  --gap MS            keepalive: wait MS before each request after the first\n"
		"  --stop-pid PID      fanout: SIGSTOP PID while the second requests go out,\n"
		"                      SIGCONT after --stop-ms (even if ps-client fails)\n"
		"  --stop-ms MS        fanout: how long PID stays stopped (default 300)\n");
}

__attribute__((noreturn, format(printf, 1, 2)))
static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ps-client: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (ps-client --help)\n");
	exit(2);
}

static uint64_t parse_count(const char *opt, const char *s)
{
	uint64_t v;

	if (!ps_parse_dec(s, strlen(s), PS_CHUNK_MAX, &v))
		usage_error("%s: not a number: %s", opt, s);
	return v;
}

static void parse_options(int argc, char **argv)
{
	enum { O_TIMEOUT = 256, O_BODY_BYTES, O_CHUNKED, O_DRIP, O_SHUT, O_NO_SHUT, O_RESET, O_IDLE,
	       O_RESUME, O_BINARY_BYTES, O_FIRST, O_RCVBUF, O_REPEAT, O_METHOD, O_STOP_PID, O_STOP_MS, O_GAP };
	static const struct option longopts[] = {
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "header", required_argument, NULL, 'H' },
		{ "body-bytes", required_argument, NULL, O_BODY_BYTES },
		{ "chunked", no_argument, NULL, O_CHUNKED },
		{ "drip", required_argument, NULL, O_DRIP },
		{ "shut", no_argument, NULL, O_SHUT },
		{ "no-shut", no_argument, NULL, O_NO_SHUT },
		{ "reset", no_argument, NULL, O_RESET },
		{ "idle", required_argument, NULL, O_IDLE },
		{ "gap", required_argument, NULL, O_GAP },
		{ "resume", no_argument, NULL, O_RESUME },
		{ "first", required_argument, NULL, O_FIRST },
		{ "rcvbuf", required_argument, NULL, O_RCVBUF },
		{ "binary-bytes", required_argument, NULL, O_BINARY_BYTES },
		{ "repeat", required_argument, NULL, O_REPEAT },
		{ "method", required_argument, NULL, O_METHOD },
		{ "stop-pid", required_argument, NULL, O_STOP_PID },
		{ "stop-ms", required_argument, NULL, O_STOP_MS },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char *end;
	int opt;

	while ((opt = getopt_long(argc, argv, "H:h", longopts, NULL)) != -1) {
		switch (opt) {
		case O_TIMEOUT:
			g_opt.timeout = strtod(optarg, &end);
			if (*end || !(g_opt.timeout > 0 && g_opt.timeout < 1e6))
				usage_error("--timeout: want seconds > 0, got %s", optarg);
			break;
		case 'H':
			if (g_opt.n_headers == MAX_HEADERS || !strchr(optarg, ':') ||
			    strpbrk(optarg, "\r\n"))
				usage_error("-H: want 'Name: value' (at most %d), got %s", MAX_HEADERS,
					    optarg);
			g_opt.headers[g_opt.n_headers++] = optarg;
			break;
		case O_BODY_BYTES:
			g_opt.has_body_bytes = true;
			g_opt.body_bytes = parse_count("--body-bytes", optarg);
			break;
		case O_CHUNKED: g_opt.chunked = true; break;
		case O_DRIP: g_opt.drip_ms = (long)parse_count("--drip", optarg); break;
		case O_SHUT: g_opt.shut = true; break;
		case O_NO_SHUT: g_opt.shut = false; break;
		case O_RESET: g_opt.reset = true; break;
		case O_IDLE: g_opt.idle_ms = (long)parse_count("--idle", optarg); break;
		case O_GAP: g_opt.gap_ms = (long)parse_count("--gap", optarg); break;
		case O_RESUME: g_opt.resume = true; break;
		case O_FIRST: g_opt.first = optarg; break;
		case O_RCVBUF:
			if (parse_count("--rcvbuf", optarg) > (64 << 20))
				usage_error("--rcvbuf: at most %d", 64 << 20);
			g_opt.rcvbuf = (int)parse_count("--rcvbuf", optarg);
			break;
		case O_METHOD:
			if (!*optarg || strspn(optarg, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(optarg))
				usage_error("--method: want an upper-case token, got %s", optarg);
			g_opt.method = optarg;
			break;
		case O_REPEAT:
			g_opt.repeat = parse_count("--repeat", optarg);
			if (g_opt.repeat == 0)
				usage_error("--repeat: at least 1");
			break;
		case O_BINARY_BYTES:
			g_opt.ws_binary = parse_count("--binary-bytes", optarg);
			if (g_opt.ws_binary > WS_MSG_MAX)
				usage_error("--binary-bytes: at most %d", WS_MSG_MAX);
			break;
		case O_STOP_PID:
			g_opt.stop_pid = (pid_t)parse_count("--stop-pid", optarg);
			break;
		case O_STOP_MS: g_opt.stop_ms = (long)parse_count("--stop-ms", optarg); break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
}

static const struct mode {
	const char *name;
	int min_args, max_args;		/* after HOST:PORT; -1: no limit */
	int (*run)(const char *addr, char **args, int nargs);
} modes[] = {
	{ "pipeline", 1, -1, mode_pipeline },
	{ "keepalive", 1, -1, mode_keepalive },
	{ "halfclose", 1, 1, mode_halfclose },
	{ "upload", 2, 2, mode_upload },
	{ "resend", 2, 2, mode_resend },
	{ "download", 2, 2, mode_download },
	{ "stall", 2, 2, mode_stall },
	{ "ws", 1, -1, mode_ws },
	{ "raw", 1, 1, mode_raw },
	{ "fanout", 3, 3, mode_fanout },
};

int main(int argc, char **argv)
{
	const struct mode *mode = NULL;
	char host[256];
	const char *port;

	if (argc < 2)
		usage_error("no mode given");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	g_mode = argv[1];
	/* getopt sees the mode as its argv[0] and permutes options after it. */
	parse_options(argc - 1, argv + 1);
	char **pos = argv + 1 + optind;
	int npos = argc - 1 - optind;

	if (!strcmp(g_mode, "selftest")) {
		int failures = ps_selftest();

		printf(failures ? "selftest: %d failures\n" : "selftest ok\n", failures);
		return failures ? 1 : 0;
	}
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (!strcmp(g_mode, modes[i].name))
			mode = &modes[i];
	if (!mode)
		usage_error("unknown mode \"%s\"", g_mode);
	if (npos < 1 || !split_hostport(pos[0], host, sizeof(host), &port))
		usage_error("%s: want HOST:PORT first", g_mode);
	if (npos - 1 < mode->min_args || (mode->max_args >= 0 && npos - 1 > mode->max_args))
		usage_error("%s: wrong number of arguments", g_mode);

	g_authority = pos[0];
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	return mode->run(pos[0], pos + 1, npos - 1);
}
