/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ps-backend: the HTTP/1.1 server that stands behind pathsplice in its
 * integration tests and benchmarks.
 *
 *   ps-backend --listen 127.0.0.1:PORT --name NAME [--pidfile FILE] [--idle-close MS]
 *
 * Every response names the instance (X-Instance: NAME), so a test can see
 * where the proxy routed a request; query parameters choose what the response
 * looks like (sizes, chunking, echo, status, delay, close), and the
 * /__stats path reports totals a test can watch while another connection is
 * in flight. See usage() for the full list.
 *
 * One thread per connection with blocking sockets: simple to follow, and
 * requests on one connection are answered strictly in order, which is what
 * pipelining needs. Bodies are streamed in IO_SIZE pieces, never held whole,
 * so a response or upload of several GiB costs no memory.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "pattern.h"
#include "ps_http.h"
#include "ps_server.h"
#include "ps_ws.h"
#include "selftest.h"

#define IO_SIZE		(64 * 1024)	/* input buffer, output buffer, body pieces */
#define THREAD_STACK	(512 * 1024)	/* room for sanitizer builds too */
#define LINGER_MS	2000		/* how long a closing connection drains input */
#define NAME_MAX_LEN	64
#define SLEEP_MAX_MS	600000
#define METHOD_MAX	32

static const char *g_name;
static const char *g_pidfile;
static long g_idle_close_ms;	/* --idle-close MS */

/* Totals since start, reported by /__stats. */
static struct {
	atomic_uint_fast64_t requests;	/* request heads parsed */
	atomic_uint_fast64_t bytes_out;	/* body bytes sent (WebSocket payloads too) */
	atomic_uint_fast64_t conns;	/* connections accepted */
} g_stats;

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

/*
 * Response bytes are collected here and sent in IO_SIZE writes, so a head
 * and a small body leave in one segment (no Nagle or delayed-ACK stalls,
 * fewer syscalls for the benchmark). A failed send makes the buffer drop
 * everything after it: the peer is gone, and callers check `failed` only
 * where it saves work.
 */
struct out {
	int fd;
	bool failed;
	size_t len;
	uint64_t body_pending;	/* body bytes in buf, counted once they are sent */
	uint8_t buf[IO_SIZE];
};

static void out_flush(struct out *o)
{
	size_t done = 0;

	while (!o->failed && done < o->len) {
		ssize_t n = send(o->fd, o->buf + done, o->len - done, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			o->failed = true;
		else
			done += (size_t)n;
	}
	/* Counted per flush, so /__stats shows a large response's progress. */
	if (!o->failed)
		atomic_fetch_add(&g_stats.bytes_out, o->body_pending);
	o->len = 0;
	o->body_pending = 0;
}

/* Returns free space at the end of the buffer (flushing if there is none). */
static uint8_t *out_reserve(struct out *o, size_t *room)
{
	if (o->len == IO_SIZE)
		out_flush(o);
	*room = IO_SIZE - o->len;
	return o->buf + o->len;
}

/* Adds n bytes written at out_reserve()'s pointer; body bytes are counted. */
static void out_commit(struct out *o, size_t n, bool body)
{
	o->len += n;
	if (body)
		o->body_pending += n;
}

static void out_append(struct out *o, const void *data, size_t n, bool body)
{
	const uint8_t *p = data;

	while (n > 0) {
		size_t room;
		uint8_t *dst = out_reserve(o, &room);
		size_t take = n < room ? n : room;

		memcpy(dst, p, take);
		out_commit(o, take, body);
		p += take;
		n -= take;
	}
}

/* Head text; nothing the backend formats comes near the 1 KiB limit. */
__attribute__((format(printf, 2, 3)))
static void out_printf(struct out *o, const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n > 0)
		out_append(o, text, (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1, false);
}

/* ------------------------------------------------------------------------ */
/* Connection and request state                                              */

/* What the query string asks for. Unknown parameters are ignored. */
struct query {
	bool has_bytes;
	uint64_t bytes;		/* bytes=N: N pattern bytes */
	bool chunked;		/* chunked=1 */
	bool echo;		/* echo=1 */
	bool sink;		/* sink=1 */
	bool close;		/* close=1 */
	bool fresh;		/* fresh=1 */
	bool extra;		/* extra=1 */
	bool unasked_101;	/* switch=1 */
	enum { HEAD_WHOLE, HEAD_SPLIT, HEAD_CUT, HEAD_GARBLED } head;	/* head=KIND */
	int status;		/* status=N, default 200 */
	uint64_t sleep_ms;	/* sleep_ms=N */
	bool stats;		/* path ends in /__stats */
};

struct request {
	char method[METHOD_MAX];
	char target[PS_HEAD_MAX];	/* as received, query included */
	int minor;			/* HTTP/1.minor */
	bool head;			/* HEAD: send headers only */
	bool keep_alive;		/* the connection survives this response */
	struct query q;
	struct ps_body body;
};

struct conn {
	int fd;
	struct ps_in in;
	struct request req;
	struct out out;
	uint8_t inbuf[IO_SIZE];
	uint8_t scratch[IO_SIZE];	/* generated body pieces before chunking */
	unsigned served;		/* requests so far on this connection */
};

/* How a response body is delimited. */
enum framing {
	FRAME_NONE,	/* 204, 304: no body at all */
	FRAME_LENGTH,	/* Content-Length */
	FRAME_CHUNKED,	/* Transfer-Encoding: chunked */
	FRAME_CLOSE,	/* HTTP/1.0 peer, length unknown: ends with the connection */
};

struct response {
	int status;
	enum framing framing;
	uint64_t length;		/* FRAME_LENGTH only */
	const char *content_type;
};

/* Writes body bytes in the response's framing; chunks of varied sizes. */
struct body_writer {
	struct out *out;
	enum framing framing;
	bool suppressed;	/* HEAD, 204, 304: the body is computed, not sent */
	uint64_t chunk_seq;	/* position in the ps_chunk_size() sequence */
};

static ssize_t sock_read(void *ctx, void *dst, size_t n)
{
	const struct conn *c = ctx;
	ssize_t r;

	do
		r = recv(c->fd, dst, n, 0);
	while (r < 0 && errno == EINTR);
	return r;
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Status";
	}
}

/* ------------------------------------------------------------------------ */
/* Query parameters                                                          */

static bool query_flag(const char *v, size_t n, bool *out)
{
	if (n != 1 || (v[0] != '0' && v[0] != '1'))
		return false;
	*out = v[0] == '1';
	return true;
}

/* The parameters that take 0 or 1. */
static const struct {
	const char *name;
	size_t off;		/* of its bool in struct query */
	const char *bad;
} query_flags[] = {
	{ "chunked", offsetof(struct query, chunked), "bad chunked= value (0 or 1)" },
	{ "echo", offsetof(struct query, echo), "bad echo= value (0 or 1)" },
	{ "sink", offsetof(struct query, sink), "bad sink= value (0 or 1)" },
	{ "close", offsetof(struct query, close), "bad close= value (0 or 1)" },
	{ "switch", offsetof(struct query, unasked_101), "bad switch= value (0 or 1)" },
	{ "extra", offsetof(struct query, extra), "bad extra= value (0 or 1)" },
	{ "fresh", offsetof(struct query, fresh), "bad fresh= value (0 or 1)" },
};

/* Applies one key=value pair; returns the reason it is invalid, or NULL. */
static const char *query_param(struct query *q, const char *k, size_t kn, const char *v, size_t vn)
{
	uint64_t num;

	for (size_t i = 0; i < sizeof(query_flags) / sizeof(query_flags[0]); i++) {
		if (ps_str_ieq(k, kn, query_flags[i].name))
			return query_flag(v, vn, (bool *)((char *)q + query_flags[i].off)) ?
				NULL : query_flags[i].bad;
	}
	if (ps_str_ieq(k, kn, "bytes")) {
		if (!ps_parse_dec(v, vn, PS_CHUNK_MAX, &q->bytes))
			return "bad bytes= value";
		q->has_bytes = true;
	} else if (ps_str_ieq(k, kn, "status")) {
		/* 1xx would not end the exchange; 101 belongs to the upgrade. */
		if (!ps_parse_dec(v, vn, 599, &num) || num < 200)
			return "bad status= value (200-599)";
		q->status = (int)num;
	} else if (ps_str_ieq(k, kn, "sleep_ms")) {
		if (!ps_parse_dec(v, vn, SLEEP_MAX_MS, &q->sleep_ms))
			return "bad sleep_ms= value";
	} else if (ps_str_ieq(k, kn, "head")) {
		if (ps_str_ieq(v, vn, "split"))
			q->head = HEAD_SPLIT;
		else if (ps_str_ieq(v, vn, "cut"))
			q->head = HEAD_CUT;
		else if (ps_str_ieq(v, vn, "garbled"))
			q->head = HEAD_GARBLED;
		else
			return "bad head= value (split, cut or garbled)";
	}
	return NULL;
}

/* Reads the options out of a request target; returns NULL or the reason. */
static const char *parse_query(const char *target, struct query *q)
{
	const char *qs = strchr(target, '?');
	size_t path_len = qs ? (size_t)(qs - target) : strlen(target);
	static const char stats_suffix[] = "/__stats";
	size_t slen = sizeof(stats_suffix) - 1;

	memset(q, 0, sizeof(*q));
	q->status = 200;
	q->stats = path_len >= slen && !memcmp(target + path_len - slen, stats_suffix, slen);
	if (!qs)
		return NULL;
	for (const char *p = qs + 1; *p;) {
		size_t n = strcspn(p, "&");
		const char *eq = memchr(p, '=', n);
		size_t kn = eq ? (size_t)(eq - p) : n;
		const char *err = query_param(q, p, kn, eq ? eq + 1 : p + n, eq ? n - kn - 1 : 0);

		if (err)
			return err;
		p += n + (p[n] == '&');
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */

/*
 * Picks the framing for a response whose body has `length` bytes (or an
 * unknown length), and whether the connection survives it.
 */
static void plan_response(struct conn *c, struct response *resp, bool want_chunked,
			  bool length_known, uint64_t length)
{
	struct request *r = &c->req;

	resp->status = r->q.status;
	resp->length = length;
	if (resp->status == 204 || resp->status == 304) {
		resp->framing = FRAME_NONE;
	} else if ((want_chunked || !length_known) && r->minor == 1) {
		resp->framing = FRAME_CHUNKED;
	} else if (!length_known) {
		resp->framing = FRAME_CLOSE; /* an HTTP/1.0 peer cannot read chunks */
		r->keep_alive = false;
	} else {
		resp->framing = FRAME_LENGTH;
	}
}

static void send_head(struct conn *c, const struct response *resp)
{
	const struct request *r = &c->req;
	struct out *o = &c->out;

	out_printf(o, "HTTP/1.1 %d %s\r\nX-Instance: %s\r\n", resp->status,
		   reason_phrase(resp->status), g_name);
	if (resp->framing != FRAME_NONE && resp->content_type)
		out_printf(o, "Content-Type: %s\r\n", resp->content_type);
	if (resp->framing == FRAME_LENGTH)
		out_printf(o, "Content-Length: %llu\r\n", (unsigned long long)resp->length);
	else if (resp->framing == FRAME_CHUNKED)
		out_printf(o, "Transfer-Encoding: chunked\r\n");
	if (!r->keep_alive)
		out_printf(o, "Connection: close\r\n");
	else if (r->minor == 0)
		out_printf(o, "Connection: keep-alive\r\n");
	out_append(o, "\r\n", 2, false);
}

static void body_writer_init(struct body_writer *w, struct conn *c, const struct response *resp)
{
	memset(w, 0, sizeof(*w));
	w->out = &c->out;
	w->framing = resp->framing;
	w->suppressed = c->req.head || resp->framing == FRAME_NONE;
}

static void body_write(struct body_writer *w, const uint8_t *p, size_t n)
{
	if (w->suppressed)
		return;
	if (w->framing != FRAME_CHUNKED) {
		out_append(w->out, p, n, true);
		return;
	}
	while (n > 0) {
		size_t size = ps_chunk_size(w->chunk_seq++);
		char hdr[32];

		if (size > n)
			size = n;
		out_append(w->out, hdr, (size_t)snprintf(hdr, sizeof(hdr), "%zx\r\n", size), false);
		out_append(w->out, p, size, true);
		out_append(w->out, "\r\n", 2, false);
		p += size;
		n -= size;
	}
}

/*
 * Streams `total` pattern bytes, generated straight into the output buffer
 * when no chunk framing has to be interleaved.
 */
static void body_write_pattern(struct body_writer *w, uint64_t total, uint8_t *scratch)
{
	if (w->suppressed)
		return;
	for (uint64_t off = 0; off < total && !w->out->failed;) {
		size_t n = total - off < IO_SIZE ? (size_t)(total - off) : IO_SIZE;

		if (w->framing == FRAME_CHUNKED) {
			ps_pattern_fill(scratch, off, n);
			body_write(w, scratch, n);
		} else {
			size_t room;
			uint8_t *dst = out_reserve(w->out, &room);

			n = n < room ? n : room;
			ps_pattern_fill(dst, off, n);
			out_commit(w->out, n, true);
		}
		off += n;
	}
}

/* Ends the body (the last chunk) and sends everything still buffered. */
static void body_finish(struct body_writer *w)
{
	if (!w->suppressed && w->framing == FRAME_CHUNKED)
		out_append(w->out, "0\r\n\r\n", 5, false);
	out_flush(w->out);
}

/* A response that ends the connection: 400 for bad requests and such. */
static void respond_error(struct conn *c, int status, const char *reason)
{
	char body[256];
	int n = snprintf(body, sizeof(body), "%s\n", reason);

	c->req.keep_alive = false;
	out_printf(&c->out,
		   "HTTP/1.1 %d %s\r\nX-Instance: %s\r\nContent-Type: text/plain\r\n"
		   "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
		   status, reason_phrase(status), g_name, n, body);
	out_flush(&c->out);
}

/*
 * Reads the rest of the request body, computing its length and (if crc is
 * not NULL) its CRC-32. On a framing error answers 400 and returns false.
 */
static bool drain_body(struct conn *c, uint32_t *crc, uint64_t *len)
{
	const uint8_t *data;
	size_t n;
	int r;

	while ((r = ps_body_next(&c->in, &c->req.body, &data, &n)) > 0)
		if (crc)
			*crc = (uint32_t)crc32(*crc, data, (uInt)n);
	if (len)
		*len = c->req.body.total;
	if (r < 0 && !c->in.sys_errno)
		respond_error(c, 400, c->in.err);
	return r == 0;
}

/* A response whose body is a short text (default body, stats, sink). */
static bool respond_text(struct conn *c, const char *text, size_t len)
{
	struct response resp = { .content_type = "text/plain" };
	struct body_writer w;

	if (!drain_body(c, NULL, NULL))
		return false;
	plan_response(c, &resp, c->req.q.chunked, true, len);
	send_head(c, &resp);
	body_writer_init(&w, c, &resp);
	body_write(&w, (const uint8_t *)text, len);
	body_finish(&w);
	return true;
}

/* Default: "NAME METHOD TARGET\n". */
static bool serve_default(struct conn *c)
{
	char *text;
	int n = asprintf(&text, "%s %s %s\n", g_name, c->req.method, c->req.target);

	if (n < 0)
		return false;
	bool ok = respond_text(c, text, (size_t)n);

	free(text);
	return ok;
}

/* extra=1, a broken server: the default answer and, in the same write, a
 * second one nobody asked for. */
static bool serve_extra(struct conn *c)
{
	int n = (int)strlen(g_name) + 1 + (int)strlen(c->req.method) + 1 +
		(int)strlen(c->req.target) + 1;

	if (!drain_body(c, NULL, NULL))
		return false;
	out_printf(&c->out, "HTTP/1.1 200 OK\r\nX-Instance: %s\r\nContent-Type: text/plain\r\n"
		   "Content-Length: %d\r\n\r\n%s %s %s\n", g_name, n, g_name, c->req.method,
		   c->req.target);
	out_printf(&c->out, "HTTP/1.1 200 OK\r\nX-Instance: %s\r\nContent-Length: 6\r\n\r\nextra\n",
		   g_name);
	out_flush(&c->out);
	return true;
}

/* switch=1, a broken server: 101 to a request that asked for no upgrade,
 * then bytes of another protocol. */
static bool serve_unasked_101(struct conn *c)
{
	if (!drain_body(c, NULL, NULL))
		return false;
	out_printf(&c->out, "HTTP/1.1 101 Switching Protocols\r\nX-Instance: %s\r\nUpgrade: x\r\n"
		   "Connection: upgrade\r\n\r\nother protocol\n", g_name);
	out_flush(&c->out);
	return true;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* head=KIND: the default answer with its head in two writes 50 ms apart
 * (split); a broken server: the head's first half, then a close (cut), or a
 * head with two different Content-Lengths (garbled). Returns false to close. */
static bool serve_head(struct conn *c, int kind)
{
	int n = (int)strlen(g_name) + 1 + (int)strlen(c->req.method) + 1 +
		(int)strlen(c->req.target) + 1;

	if (!drain_body(c, NULL, NULL))
		return false;
	out_printf(&c->out, "HTTP/1.1 200 OK\r\nX-Instance: %s\r\nContent-Le", g_name);
	if (kind == HEAD_CUT) {
		out_flush(&c->out);
		return false;
	}
	if (kind == HEAD_SPLIT) {
		out_flush(&c->out);
		sleep_ms(50);
	} else {
		out_printf(&c->out, "ngth: 3\r\nContent-Le");
	}
	out_printf(&c->out, "ngth: %d\r\nContent-Type: text/plain\r\n\r\n%s %s %s\n", n, g_name,
		   c->req.method, c->req.target);
	out_flush(&c->out);
	return true;
}

/* /__stats: "requests R bytes_out B conns C\n". */
static bool serve_stats(struct conn *c)
{
	char text[160];
	int n = snprintf(text, sizeof(text), "requests %llu bytes_out %llu conns %llu\n",
			 (unsigned long long)atomic_load(&g_stats.requests),
			 (unsigned long long)atomic_load(&g_stats.bytes_out),
			 (unsigned long long)atomic_load(&g_stats.conns));

	return respond_text(c, text, (size_t)n);
}

/* sink=1: "LEN CRC32HEX\n" of the request body. */
static bool serve_sink(struct conn *c)
{
	uint32_t crc = (uint32_t)crc32(0, NULL, 0);
	uint64_t len;
	char text[64];

	if (!drain_body(c, &crc, &len))
		return false;
	int n = snprintf(text, sizeof(text), "%llu %08x\n", (unsigned long long)len, crc);

	return respond_text(c, text, (size_t)n);
}

/* bytes=N: N pattern bytes, streamed. */
static bool serve_pattern(struct conn *c)
{
	struct response resp = { .content_type = "application/octet-stream" };
	struct body_writer w;

	if (!drain_body(c, NULL, NULL))
		return false;
	plan_response(c, &resp, c->req.q.chunked, true, c->req.q.bytes);
	send_head(c, &resp);
	body_writer_init(&w, c, &resp);
	body_write_pattern(&w, c->req.q.bytes, c->scratch);
	body_finish(&w);
	return true;
}

/*
 * echo=1: the request body back, piece by piece as it arrives, with its
 * Content-Length, or chunked if the request was. The client has to read
 * while it sends, as with any streaming server.
 */
static bool serve_echo(struct conn *c)
{
	struct request *r = &c->req;
	struct response resp = { .content_type = "application/octet-stream" };
	struct body_writer w;
	const uint8_t *data;
	size_t n;
	int rc;

	plan_response(c, &resp, r->q.chunked || r->body.chunked, !r->body.chunked,
		      r->body.state == PS_BODY_LENGTH ? r->body.left : 0);
	send_head(c, &resp);
	body_writer_init(&w, c, &resp);
	while ((rc = ps_body_next(&c->in, &r->body, &data, &n)) > 0) {
		body_write(&w, data, n);
		if (!w.suppressed)
			out_flush(&c->out); /* stream: do not wait for a full buffer */
	}
	if (rc < 0)
		return false; /* too late for a 400: the response has begun */
	body_finish(&w);
	return true;
}

/* ------------------------------------------------------------------------ */
/* WebSocket                                                                 */

static void ws_send_frame(struct conn *c, int opcode, const uint8_t *payload, size_t n)
{
	uint8_t hdr[PS_WS_HDR_MAX];

	out_append(&c->out, hdr, ps_ws_frame_header(hdr, true, opcode, n, NULL), false);
	out_append(&c->out, payload, n, true);
	out_flush(&c->out);
}

/* A close frame with a status code (1002: protocol error), then we are done. */
static void ws_fail(struct conn *c, uint16_t code)
{
	uint8_t payload[2] = { (uint8_t)(code >> 8), (uint8_t)code };

	ws_send_frame(c, PS_WS_CLOSE, payload, sizeof(payload));
}

/*
 * Echoes one data frame unmasked, streaming its payload through the output
 * buffer so frames of any size cost no memory. Returns false if the peer
 * went away mid-frame.
 */
static bool ws_echo_data(struct conn *c, const struct ps_ws_frame *f)
{
	uint8_t hdr[PS_WS_HDR_MAX];

	out_append(&c->out, hdr, ps_ws_frame_header(hdr, f->fin, f->opcode, f->len, NULL), false);
	for (uint64_t off = 0; off < f->len;) {
		if (ps_in_len(&c->in) == 0 && ps_in_fill(&c->in) <= 0)
			return false;
		size_t room, n = ps_in_len(&c->in);
		uint8_t *dst = out_reserve(&c->out, &room);

		if (n > room)
			n = room;
		if (n > f->len - off)
			n = (size_t)(f->len - off);
		memcpy(dst, ps_in_data(&c->in), n);
		ps_ws_mask(dst, n, f->mask, off);
		out_commit(&c->out, n, true);
		ps_in_consume(&c->in, n);
		off += n;
	}
	out_flush(&c->out);
	return !c->out.failed;
}

/* Answers a control frame; returns false once the connection should end. */
static bool ws_control(struct conn *c, const struct ps_ws_frame *f)
{
	uint8_t payload[PS_WS_CONTROL_MAX];
	size_t n = (size_t)f->len;

	if (ps_in_need(&c->in, n) <= 0)
		return false;
	memcpy(payload, ps_in_data(&c->in), n);
	ps_in_consume(&c->in, n);
	ps_ws_mask(payload, n, f->mask, 0);
	switch (f->opcode) {
	case PS_WS_PING:
		ws_send_frame(c, PS_WS_PONG, payload, n);
		return !c->out.failed;
	case PS_WS_CLOSE:
		ws_send_frame(c, PS_WS_CLOSE, payload, n); /* echo the status code */
		return false;
	default:
		return true; /* an unsolicited pong */
	}
}

/* After the 101: echo frames until a close frame, an error or EOF. */
static void ws_echo_loop(struct conn *c)
{
	for (;;) {
		struct ps_ws_frame f;
		const char *err;
		int r;

		while ((r = ps_ws_parse_header(ps_in_data(&c->in), ps_in_len(&c->in), &f, &err)) == 0)
			if (ps_in_fill(&c->in) <= 0)
				return;
		if (r < 0 || !f.masked) {
			ws_fail(c, 1002); /* RFC 6455 5.1: client frames must be masked */
			return;
		}
		ps_in_consume(&c->in, f.hdr_len);
		if (ps_ws_is_control(f.opcode) ? !ws_control(c, &f) : !ws_echo_data(c, &f))
			return;
	}
}

/* Handshake (RFC 6455 4.2), then echo. The connection ends with it. */
static void serve_websocket(struct conn *c, const struct ps_head *h)
{
	char accept[PS_WS_ACCEPT_LEN + 1];

	if (strcmp(c->req.method, "GET") != 0 || h->ws_key.n != PS_WS_KEY_LEN ||
	    (h->ws_version.n && !ps_str_ieq(h->ws_version.p, h->ws_version.n, "13")) ||
	    c->req.body.state != PS_BODY_DONE) {
		respond_error(c, 400, "bad WebSocket handshake");
		return;
	}
	ps_ws_accept(h->ws_key.p, h->ws_key.n, accept);
	/* No Content-Length: a 1xx response has no body (RFC 9110 8.6). */
	out_printf(&c->out,
		   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Instance: %s\r\n\r\n",
		   accept, g_name);
	out_flush(&c->out);
	ws_echo_loop(c);
}

/* ------------------------------------------------------------------------ */
/* Requests and connections                                                  */

/* Copies what outlives the head buffer (the body reads overwrite it). */
static const char *request_init(struct request *r, const struct ps_head *h)
{
	r->method[0] = r->target[0] = '\0';
	if (h->method.n >= sizeof(r->method))
		return "method too long";
	memcpy(r->method, h->method.p, h->method.n);
	r->method[h->method.n] = '\0';
	memcpy(r->target, h->target.p, h->target.n); /* < PS_HEAD_MAX: it was in the head */
	r->target[h->target.n] = '\0';
	r->minor = h->minor;
	r->head = strcmp(r->method, "HEAD") == 0;
	/* HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive". */
	r->keep_alive = !h->conn_close && (h->minor == 1 || h->conn_keep_alive);
	ps_body_init_request(&r->body, h);
	return parse_query(r->target, &r->q);
}

/* Serves one request whose head was parsed; true keeps the connection. */
static bool serve_request(struct conn *c, const struct ps_head *h)
{
	struct request *r = &c->req;
	const char *err = request_init(r, h);
	bool ok;

	atomic_fetch_add(&g_stats.requests, 1);
	c->served++;
	if (h->upgrade_websocket && h->conn_upgrade) {
		serve_websocket(c, h);
		return false;
	}
	if (err) {
		respond_error(c, 400, err);
		return false;
	}
	if (r->q.fresh && c->served > 1)
		return false;	/* as if an idle timeout struck just as it came */
	if (r->q.close)
		r->keep_alive = false;
	if (r->q.sleep_ms)
		sleep_ms(r->q.sleep_ms);
	/* curl waits a second for this before sending a large body anyway. */
	if (h->expect_continue && h->minor == 1 && r->body.state != PS_BODY_DONE) {
		out_printf(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
		out_flush(&c->out);
	}
	if (r->q.stats)
		ok = serve_stats(c);
	else if (r->q.echo)
		ok = serve_echo(c);
	else if (r->q.sink)
		ok = serve_sink(c);
	else if (r->q.has_bytes)
		ok = serve_pattern(c);
	else if (r->q.extra)
		ok = serve_extra(c);
	else if (r->q.unasked_101)
		ok = serve_unasked_101(c);
	else if (r->q.head != HEAD_WHOLE)
		ok = serve_head(c, r->q.head);
	else
		ok = serve_default(c);
	return ok && r->keep_alive && !c->out.failed;
}

/* Requests back to back from one buffer: pipelined ones are answered in order. */
static void serve_connection(struct conn *c)
{
	for (;;) {
		const char *head, *err;
		size_t len;
		struct ps_head h;
		int r = ps_in_head(&c->in, PS_HEAD_MAX, true, &head, &len);

		if (r == 0)
			return; /* clean close between requests */
		if (r < 0) {
			if (!c->in.sys_errno)
				respond_error(c, strcmp(c->in.err, "head too large") ? 400 : 431,
					      c->in.err);
			return;
		}
		if ((err = ps_head_parse(head, len, true, &h))) {
			respond_error(c, 400, err);
			return;
		}
		if (!serve_request(c, &h))
			return;
	}
}

/*
 * Half-closes, then reads and drops what the peer still sends for a while
 * before closing. Closing with unread input would send a RST that can
 * destroy the response we just sent before the peer reads it (after a 400,
 * a Connection: close, or pipelined requests we will not answer).
 */
static void close_gracefully(int fd)
{
	struct timeval tv = { 0, 100 * 1000 };
	struct timespec start, now;
	char sink[4096];

	shutdown(fd, SHUT_WR);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		ssize_t n = recv(fd, sink, sizeof(sink), 0);

		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >
		    LINGER_MS)
			break;
	}
	close(fd);
}

static void *conn_thread(void *arg)
{
	struct conn *c = arg;

	serve_connection(c);
	close_gracefully(c->fd);
	free(c);
	return NULL;
}

static void start_connection(int fd)
{
	struct conn *c = malloc(sizeof(*c));
	pthread_attr_t attr;
	pthread_t tid;
	int one = 1, err;

	if (!c) {
		fprintf(stderr, "ps-backend: out of memory for a connection\n");
		close(fd);
		return;
	}
	c->fd = fd;
	c->served = 0;
	c->out.fd = fd;
	c->out.failed = false;
	c->out.len = 0;
	c->out.body_pending = 0;
	ps_in_init(&c->in, c->inbuf, sizeof(c->inbuf), 0, sock_read, c);
	/* Responses leave in whole writes already; don't let Nagle hold them. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (g_idle_close_ms) {
		/* a read that waits this long fails: the connection closes */
		struct timeval tv = { g_idle_close_ms / 1000, (g_idle_close_ms % 1000) * 1000 };

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	err = pthread_create(&tid, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (err) {
		fprintf(stderr, "ps-backend: pthread_create: %s\n", strerror(err));
		close(fd);
		free(c);
	}
}

/* ------------------------------------------------------------------------ */
/* Process                                                                   */

static void accept_loop(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd >= 0) {
			atomic_fetch_add(&g_stats.conns, 1);
			start_connection(fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		/* Out of fds or memory: back off, the existing connections go on. */
		fprintf(stderr, "ps-backend: accept: %s\n", strerror(errno));
		if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM)
			exit(1);
		sleep_ms(50);
	}
}

/* Written via a rename so a test polling for the file never reads it half-written. */
static void write_pidfile(const char *path)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 || rename(tmp, path) < 0) {
		fprintf(stderr, "ps-backend: cannot write pidfile %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

/* A benchmark may open thousands of connections: allow as many fds as we may. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* SIGTERM/SIGINT: remove the pidfile and exit 0 at once, mid-request or not. */
static void *signal_thread(void *arg)
{
	sigset_t *set = arg;
	int sig;

	while (sigwait(set, &sig) != 0)
		;
	if (g_pidfile)
		unlink(g_pidfile);
	exit(0);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ps-backend --listen HOST:PORT --name NAME [--pidfile FILE] [--idle-close MS]\n"
		"       ps-backend --self-test\n"
		"\n"
		"HTTP/1.1 test backend: keep-alive, pipelining, chunked and Content-Length\n"
		"request bodies, WebSocket echo. Every response has X-Instance: NAME.\n"
		"\n"
		"Query parameters (any path):\n"
		"  (none)       200, body \"NAME METHOD TARGET\\n\"\n"
		"  bytes=N      N bytes of the test pattern (tests/tools/pattern.h)\n"
		"  chunked=1    send the body chunked, in chunks of varied sizes\n"
		"  echo=1       echo the request body, streamed\n"
		"  sink=1       read the request body, answer \"LEN CRC32HEX\\n\"\n"
		"  status=N     answer with status N (200-599); 204 and 304 have no body\n"
		"  sleep_ms=N   wait N ms before answering\n"
		"  close=1      Connection: close, then close\n"
		"  extra=1      after the answer, a second one nobody asked for\n"
		"  switch=1     101 Switching Protocols, though no upgrade was asked for\n"
		"  head=split   the default answer, its head in two writes 50 ms apart\n"
		"  head=cut     half a head, then a close\n"
		"  head=garbled a head with two different Content-Lengths\n"
		"  fresh=1      answered only as a connection's first request; later ones\n"
		"               close the connection unanswered\n"
		"Paths ending in /__stats answer \"requests R bytes_out B conns C\\n\".\n"
		"A GET with Upgrade: websocket gets 101 and echoes every frame.\n"
		"\n"
		"Options:\n"
		"  --listen HOST:PORT  address to listen on (SO_REUSEADDR)\n"
		"  --name NAME         instance name: [A-Za-z0-9._:-], at most 64 characters\n"
		"  --pidfile FILE      write the pid there once listening; removed on exit\n"
		"  --idle-close MS     close a connection that sends nothing for MS\n"
		"                      (as gunicorn's keepalive ends idle ones)\n"
		"  --self-test         run the shared parser/SHA-1/base64/pattern tests\n"
		"  --help              this text\n"
		"SIGTERM or SIGINT exits 0 at once.\n");
}

static bool valid_name(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n <= NAME_MAX_LEN &&
	       strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") == n;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "name", required_argument, NULL, 'n' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "idle-close", required_argument, NULL, 'i' },
		{ "self-test", no_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *listen_addr = NULL;
	int opt;

	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen_addr = optarg; break;
		case 'n': g_name = optarg; break;
		case 'p': g_pidfile = optarg; break;
		case 'i': {
			uint64_t ms;

			if (!ps_parse_dec(optarg, strlen(optarg), 3600000, &ms) || !ms) {
				fprintf(stderr, "ps-backend: --idle-close: want 1..3600000 ms\n");
				return 2;
			}
			g_idle_close_ms = (long)ms;
			break;
		}
		case 't': {
			int failures = ps_selftest();

			printf(failures ? "selftest: %d failures\n" : "selftest ok\n", failures);
			return failures ? 1 : 0;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !listen_addr || !g_name) {
		usage(stderr);
		return 2;
	}
	if (!valid_name(g_name)) {
		fprintf(stderr, "ps-backend: --name \"%s\": use 1-%d of [A-Za-z0-9._:-]\n", g_name,
			NAME_MAX_LEN);
		return 2;
	}

	int lfd = ps_listen("ps-backend", listen_addr, 4096);

	raise_fd_limit();
	ps_setup_signals("ps-backend", signal_thread);
	if (g_pidfile)
		write_pidfile(g_pidfile);
	accept_loop(lfd);
	return 1;
}
