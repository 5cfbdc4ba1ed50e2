/* SPDX-License-Identifier: GPL-2.0 */
/*
 * HTTP/1.1 message reading for the pathsplice test tools (ps-backend and
 * ps-client): an input buffer over any byte source, strict head parsing and
 * a body decoder for Content-Length, chunked and close-delimited bodies.
 *
 * Deliberately independent of include/http_frame.h: the tools judge the
 * daemon's parser from the outside, so they must not share its bugs.
 *
 * The tools are strict where a lenient peer would hide a proxy bug: lines end
 * with CRLF (a bare CR or LF is an error), obsolete line folding, whitespace
 * before a header colon, Content-Length together with Transfer-Encoding and
 * transfer codings other than "chunked" are all rejected.
 */
#ifndef PS_TOOLS_HTTP_H
#define PS_TOOLS_HTTP_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#define PS_HEAD_MAX	(32 * 1024)	/* request or response head, CRLFs included */
#define PS_LINE_MAX	4096		/* chunk-size line or trailer line */
#define PS_TRAILERS_MAX	64		/* trailer lines after the last chunk */
#define PS_CHUNK_MAX	(1ULL << 60)	/* larger chunk sizes are refused */

/* ------------------------------------------------------------------------ */
/* Small lexical helpers                                                     */

struct ps_str {
	const char *p;
	size_t n;
};

/* RFC 9110 tchar: the characters of a method, a header name or a token. */
static inline bool ps_is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static inline bool ps_is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Case-insensitive comparison of a counted string with a C string. */
static inline bool ps_str_ieq(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* Strips optional whitespace from both ends of [*p, *p + *n). */
static inline void ps_trim_ows(const char **p, size_t *n)
{
	while (*n > 0 && ps_is_ows((*p)[0]))
		(*p)++, (*n)--;
	while (*n > 0 && ps_is_ows((*p)[*n - 1]))
		(*n)--;
}

/* True if the comma-separated list value (Connection, Upgrade) holds token. */
static inline bool ps_list_has(const char *v, size_t n, const char *token)
{
	size_t i = 0;

	while (i <= n) {
		size_t j = i;

		while (j < n && v[j] != ',')
			j++;
		const char *item = v + i;
		size_t len = j - i;

		ps_trim_ows(&item, &len);
		if (ps_str_ieq(item, len, token))
			return true;
		i = j + 1;
	}
	return false;
}

/* Strict unsigned decimal: one or more digits and nothing else, at most max. */
static inline bool ps_parse_dec(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (max - (uint64_t)(s[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

static inline int ps_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Sizes for the chunks of a generated chunked body: a fixed, varied sequence
 * with sizes on both sides of the usual buffer boundaries, so a proxy that
 * parses chunk framing sees chunk headers split at every kind of offset.
 */
static inline size_t ps_chunk_size(uint64_t i)
{
	static const uint32_t sizes[] = {
		1, 2, 3, 10, 15, 16, 17, 100, 255, 256, 1000, 1024,
		4095, 4096, 4097, 8000, 16383, 16384, 16385, 32768, 65535, 65536,
	};

	return sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
}

/* ------------------------------------------------------------------------ */
/* Input buffer                                                              */

/*
 * Reads up to n bytes into dst. Returns the count, 0 at end of stream, or -1
 * with errno set. It may block (ps-backend) or wait with a deadline
 * (ps-client); the buffer does not care.
 */
typedef ssize_t (*ps_read_fn)(void *ctx, void *dst, size_t n);

struct ps_in {
	uint8_t *buf;
	size_t cap;		/* current allocation */
	size_t max_cap;		/* growth limit; == cap for a fixed buffer */
	size_t start, end;	/* the unconsumed bytes are buf[start, end) */
	ps_read_fn read;
	void *ctx;
	const char *err;	/* why the last failing call failed */
	int sys_errno;		/* errno of a failed read, else 0 */
};

/*
 * Sets up a buffer over storage. With a non-zero max_cap the storage must
 * come from malloc(): it is realloc()ed up to max_cap when a caller needs more
 * unconsumed bytes than fit (a client collecting a large echo while it sends).
 */
static inline void ps_in_init(struct ps_in *in, uint8_t *storage, size_t cap, size_t max_cap,
			      ps_read_fn read, void *ctx)
{
	memset(in, 0, sizeof(*in));
	in->buf = storage;
	in->cap = cap;
	in->max_cap = max_cap > cap ? max_cap : cap;
	in->read = read;
	in->ctx = ctx;
}

static inline size_t ps_in_len(const struct ps_in *in)
{
	return in->end - in->start;
}

static inline const uint8_t *ps_in_data(const struct ps_in *in)
{
	return in->buf + in->start;
}

static inline void ps_in_consume(struct ps_in *in, size_t n)
{
	in->start += n;
	if (in->start == in->end)
		in->start = in->end = 0;
}

/* True if a ps_in_fill() now would have room to read into. */
static inline bool ps_in_has_room(const struct ps_in *in)
{
	return in->start > 0 || in->end < in->cap || in->cap < in->max_cap;
}

/*
 * Reads once from the source, after moving the unconsumed bytes to the front
 * and growing the buffer if it is full. Returns the bytes added, 0 at end of
 * stream, -1 on error (in->err says why). Pointers returned by earlier calls
 * are invalid afterwards: only this function moves the bytes.
 */
static inline ssize_t ps_in_fill(struct ps_in *in)
{
	if (in->start > 0) {
		memmove(in->buf, in->buf + in->start, in->end - in->start);
		in->end -= in->start;
		in->start = 0;
	}
	if (in->end == in->cap) {
		size_t cap = in->cap * 2 < in->max_cap ? in->cap * 2 : in->max_cap;
		uint8_t *p = cap > in->cap ? realloc(in->buf, cap) : NULL;

		if (!p) {
			in->err = "input buffer full";
			in->sys_errno = 0;
			return -1;
		}
		in->buf = p;
		in->cap = cap;
	}
	ssize_t n = in->read(in->ctx, in->buf + in->end, in->cap - in->end);
	if (n < 0) {
		in->sys_errno = errno;
		in->err = "read error";
		return -1;
	}
	in->end += (size_t)n;
	return n;
}

/* Makes at least n bytes available. Returns 1, or 0/-1 as ps_in_fill(). */
static inline int ps_in_need(struct ps_in *in, size_t n)
{
	while (ps_in_len(in) < n) {
		ssize_t r = ps_in_fill(in);

		if (r == 0)
			in->err = "connection closed mid-message";
		if (r <= 0)
			return (int)r;
	}
	return 1;
}

/*
 * Finds the end of a CRLF-terminated line that starts the unconsumed bytes,
 * without reading. Returns the line length with its CRLF, 0 if the line is
 * not complete yet, -1 if it is malformed (a bare CR or LF, too long).
 */
static inline ssize_t ps_scan_line(const uint8_t *p, size_t avail, size_t max)
{
	size_t limit = avail < max + 1 ? avail : max + 1;

	for (size_t i = 0; i < limit; i++) {
		if (p[i] == '\n')
			return -1; /* bare LF: an LF after CR is never reached */
		if (p[i] != '\r')
			continue;
		if (i + 1 == avail)
			return 0;
		return p[i + 1] == '\n' ? (ssize_t)(i + 2) : -1;
	}
	return avail > max ? -1 : 0;
}

/*
 * Takes one CRLF-terminated line of at most max bytes (CRLF excluded).
 * *line points into the buffer and stays valid until the next read.
 * Returns 1, 0 on end of stream, -1 on error.
 */
static inline int ps_in_line(struct ps_in *in, size_t max, const char **line, size_t *len)
{
	for (;;) {
		ssize_t n = ps_scan_line(ps_in_data(in), ps_in_len(in), max);

		if (n < 0) {
			in->err = "malformed line (bare CR/LF or too long)";
			return -1;
		}
		if (n > 0) {
			*line = (const char *)ps_in_data(in);
			*len = (size_t)n - 2;
			ps_in_consume(in, (size_t)n);
			return 1;
		}
		ssize_t r = ps_in_fill(in);
		if (r == 0)
			in->err = "connection closed mid-line";
		if (r <= 0)
			return (int)r;
	}
}

/*
 * Takes a whole message head (start line, header lines and the empty line)
 * of at most max bytes. With skip_empty_lines, CRLFs before it are dropped, as
 * RFC 9112 asks of a server reading a request. *head points into the buffer
 * and stays valid until the next read. Returns 1; 0 if the stream ended
 * cleanly before the first byte of a head; -1 on error (in->err), with
 * in->err == "head too large" when that was the reason.
 */
static inline int ps_in_head(struct ps_in *in, size_t max, bool skip_empty_lines,
			     const char **head, size_t *len)
{
	size_t scanned = 0; /* bytes already searched for the end of the head */

	for (;;) {
		const uint8_t *p = ps_in_data(in);
		size_t avail = ps_in_len(in);

		while (skip_empty_lines && scanned == 0 && avail >= 2 && p[0] == '\r' &&
		       p[1] == '\n') {
			ps_in_consume(in, 2);
			p = ps_in_data(in);
			avail = ps_in_len(in);
		}
		for (size_t i = scanned; i < avail && i < max; i++) {
			if (p[i] != '\n')
				continue;
			/* Fail fast on a bare LF rather than wait for a CRLFCRLF. */
			if (i == 0 || p[i - 1] != '\r') {
				in->err = "bare LF in head";
				return -1;
			}
			if (i >= 3 && p[i - 2] == '\n' && p[i - 3] == '\r') {
				*head = (const char *)p;
				*len = i + 1;
				ps_in_consume(in, i + 1);
				return 1;
			}
		}
		if (avail >= max) {
			in->err = "head too large";
			return -1;
		}
		/* A lone CR may still turn out to be an empty line to skip. */
		bool lone_cr = skip_empty_lines && scanned == 0 && avail == 1 && p[0] == '\r';

		scanned = lone_cr ? 0 : avail;
		ssize_t r = ps_in_fill(in);
		if (r == 0) {
			if (ps_in_len(in) == 0)
				return 0;
			in->err = "connection closed mid-head";
			return -1;
		}
		if (r < 0)
			return -1;
	}
}

/* ------------------------------------------------------------------------ */
/* Head parsing                                                              */

struct ps_head {
	/* request line */
	struct ps_str method;
	struct ps_str target;
	/* status line */
	int status;
	/* both */
	int minor;			/* the x of HTTP/1.x */
	bool has_length;
	uint64_t length;		/* Content-Length */
	bool chunked;			/* Transfer-Encoding: chunked */
	bool conn_close;		/* Connection tokens */
	bool conn_keep_alive;
	bool conn_upgrade;
	bool upgrade_websocket;		/* Upgrade: websocket */
	bool expect_continue;		/* Expect: 100-continue */
	struct ps_str ws_key;		/* Sec-WebSocket-Key */
	struct ps_str ws_version;	/* Sec-WebSocket-Version */
	struct ps_str ws_accept;	/* Sec-WebSocket-Accept */
	struct ps_str instance;		/* X-Instance */
	unsigned n_headers;
};

/* "HTTP/1.0" or "HTTP/1.1" at p; sets *minor. */
static inline bool ps_parse_version(const char *p, size_t n, int *minor)
{
	if (n != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
		return false;
	*minor = p[7] - '0';
	return true;
}

/* METHOD SP TARGET SP HTTP/1.x */
static inline const char *ps_parse_request_line(const char *p, size_t n, struct ps_head *h)
{
	size_t i = 0;

	while (i < n && ps_is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i == n || p[i] != ' ')
		return "bad method";
	h->method = (struct ps_str){ p, i };
	size_t t = ++i;
	/* Any visible byte: the target is routed by the proxy, not judged here. */
	while (i < n && (unsigned char)p[i] > ' ' && p[i] != 0x7f)
		i++;
	if (i == t || i == n || p[i] != ' ')
		return "bad request target";
	h->target = (struct ps_str){ p + t, i - t };
	if (!ps_parse_version(p + i + 1, n - i - 1, &h->minor))
		return "bad HTTP version";
	return NULL;
}

/* HTTP/1.x SP 3DIGIT [SP reason] */
static inline const char *ps_parse_status_line(const char *p, size_t n, struct ps_head *h)
{
	if (n < 12 || !ps_parse_version(p, 8, &h->minor) || p[8] != ' ')
		return "bad status line";
	for (int i = 9; i < 12; i++)
		if (p[i] < '0' || p[i] > '9')
			return "bad status code";
	if (n > 12 && p[12] != ' ')
		return "bad status line";
	h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	return h->status < 100 ? "bad status code" : NULL;
}

/* Content-Length: a list of equal values is one value (RFC 9110 8.6). */
static inline const char *ps_take_content_length(struct ps_head *h, const char *v, size_t n)
{
	size_t i = 0;

	while (i <= n) {
		size_t j = i;
		uint64_t len;

		while (j < n && v[j] != ',')
			j++;
		const char *item = v + i;
		size_t ilen = j - i;

		ps_trim_ows(&item, &ilen);
		if (!ps_parse_dec(item, ilen, PS_CHUNK_MAX, &len))
			return "bad Content-Length";
		if (h->has_length && h->length != len)
			return "conflicting Content-Length";
		h->has_length = true;
		h->length = len;
		i = j + 1;
	}
	return NULL;
}

/* Records the fields the tools act on; other headers are only validated. */
static inline const char *ps_take_header(struct ps_head *h, const char *name, size_t nlen,
					 const char *v, size_t vlen)
{
	struct ps_str value = { v, vlen };

	if (ps_str_ieq(name, nlen, "content-length"))
		return ps_take_content_length(h, v, vlen);
	if (ps_str_ieq(name, nlen, "transfer-encoding")) {
		/* Only "chunked", once: anything else could be read two ways. */
		if (h->chunked || !ps_str_ieq(v, vlen, "chunked"))
			return "unsupported Transfer-Encoding";
		h->chunked = true;
	} else if (ps_str_ieq(name, nlen, "connection")) {
		h->conn_close |= ps_list_has(v, vlen, "close");
		h->conn_keep_alive |= ps_list_has(v, vlen, "keep-alive");
		h->conn_upgrade |= ps_list_has(v, vlen, "upgrade");
	} else if (ps_str_ieq(name, nlen, "upgrade")) {
		h->upgrade_websocket |= ps_list_has(v, vlen, "websocket");
	} else if (ps_str_ieq(name, nlen, "expect")) {
		h->expect_continue |= ps_str_ieq(v, vlen, "100-continue");
	} else if (ps_str_ieq(name, nlen, "sec-websocket-key")) {
		h->ws_key = value;
	} else if (ps_str_ieq(name, nlen, "sec-websocket-version")) {
		h->ws_version = value;
	} else if (ps_str_ieq(name, nlen, "sec-websocket-accept")) {
		h->ws_accept = value;
	} else if (ps_str_ieq(name, nlen, "x-instance")) {
		h->instance = value;
	}
	return NULL;
}

/* name ":" OWS value OWS, with nothing between the name and the colon. */
static inline const char *ps_parse_header_line(const char *p, size_t n, struct ps_head *h)
{
	size_t i = 0;

	if (n > 0 && ps_is_ows(p[0]))
		return "obsolete header line folding";
	while (i < n && ps_is_tchar((unsigned char)p[i]))
		i++;
	if (i == 0 || i == n || p[i] != ':')
		return "bad header line";
	for (size_t j = i + 1; j < n; j++) {
		unsigned char c = (unsigned char)p[j];

		if ((c < ' ' && c != '\t') || c == 0x7f)
			return "control character in header value";
	}
	const char *v = p + i + 1;
	size_t vlen = n - i - 1;

	ps_trim_ows(&v, &vlen);
	h->n_headers++;
	return ps_take_header(h, p, i, v, vlen);
}

/*
 * Parses a head as returned by ps_in_head(). The ps_str fields point into
 * head. Returns NULL, or the reason the head is malformed.
 */
static inline const char *ps_head_parse(const char *head, size_t len, bool request,
					struct ps_head *h)
{
	const char *err = NULL;
	size_t pos = 0;
	bool first = true;

	memset(h, 0, sizeof(*h));
	for (;;) {
		ssize_t n = ps_scan_line((const uint8_t *)head + pos, len - pos, len);

		if (n <= 0)
			return "bare CR or LF in head";
		const char *line = head + pos;
		size_t llen = (size_t)n - 2;

		pos += (size_t)n;
		if (llen == 0)
			break; /* the empty line that ends the head */
		if (memchr(line, 0, llen))
			return "NUL in head";
		if (first)
			err = request ? ps_parse_request_line(line, llen, h)
				      : ps_parse_status_line(line, llen, h);
		else
			err = ps_parse_header_line(line, llen, h);
		if (err)
			return err;
		first = false;
	}
	if (first)
		return "empty head";
	if (h->chunked && h->has_length)
		return "both Transfer-Encoding and Content-Length";
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Body decoding                                                             */

enum ps_body_state {
	PS_BODY_DONE,		/* no body, or all of it was returned */
	PS_BODY_LENGTH,		/* Content-Length bytes left */
	PS_BODY_UNTIL_EOF,	/* a response delimited by the connection's end */
	PS_BODY_CHUNK_SIZE,	/* next: a chunk-size line */
	PS_BODY_CHUNK_DATA,	/* in a chunk's data */
	PS_BODY_CHUNK_CRLF,	/* next: the CRLF after a chunk's data */
	PS_BODY_TRAILERS,	/* after the last chunk: trailer lines, empty line */
};

struct ps_body {
	enum ps_body_state state;
	uint64_t left;		/* of the Content-Length body or current chunk */
	uint64_t total;		/* body bytes returned so far */
	bool chunked;
	unsigned trailers;
};

/* A request has a body only if its head announces one (RFC 9112 6.3). */
static inline void ps_body_init_request(struct ps_body *b, const struct ps_head *h)
{
	memset(b, 0, sizeof(*b));
	b->chunked = h->chunked;
	if (h->chunked) {
		b->state = PS_BODY_CHUNK_SIZE;
	} else if (h->has_length && h->length > 0) {
		b->state = PS_BODY_LENGTH;
		b->left = h->length;
	}
}

/*
 * A response to HEAD, a 1xx, 204 or 304 has no body; otherwise chunked,
 * Content-Length, or everything until the connection closes.
 */
static inline void ps_body_init_response(struct ps_body *b, const struct ps_head *h,
					 bool head_request)
{
	memset(b, 0, sizeof(*b));
	if (head_request || h->status < 200 || h->status == 204 || h->status == 304)
		return;
	b->chunked = h->chunked;
	if (h->chunked) {
		b->state = PS_BODY_CHUNK_SIZE;
	} else if (!h->has_length) {
		b->state = PS_BODY_UNTIL_EOF;
	} else if (h->length > 0) {
		b->state = PS_BODY_LENGTH;
		b->left = h->length;
	}
}

/* chunk-size [ BWS ";" chunk-ext ] */
static inline bool ps_parse_chunk_size(const char *line, size_t n, uint64_t *size)
{
	uint64_t v = 0;
	size_t i = 0;

	for (; i < n && ps_hex_digit(line[i]) >= 0; i++) {
		if (v > (PS_CHUNK_MAX >> 4))
			return false;
		v = (v << 4) | (uint64_t)ps_hex_digit(line[i]);
	}
	if (i == 0)
		return false;
	while (i < n && ps_is_ows(line[i]))
		i++;
	if (i < n && line[i] != ';')
		return false;
	*size = v;
	return true;
}

/* Takes up to `left` body bytes that are buffered, reading if none are. */
static inline int ps_body_take(struct ps_in *in, uint64_t left, const uint8_t **data, size_t *len)
{
	if (ps_in_len(in) == 0) {
		ssize_t r = ps_in_fill(in);

		if (r == 0)
			in->err = "connection closed mid-body";
		if (r <= 0)
			return -1;
	}
	size_t n = ps_in_len(in) < left ? ps_in_len(in) : (size_t)left;

	*data = ps_in_data(in);
	*len = n;
	ps_in_consume(in, n);
	return 1;
}

/*
 * Returns the next piece of body data: 1 with *data and *len set (pointing into
 * the buffer, valid until the next call), 0 once the body (trailers
 * included) is complete, -1 on a framing or read error (in->err).
 */
static inline int ps_body_next(struct ps_in *in, struct ps_body *b, const uint8_t **data,
			       size_t *len)
{
	const char *line;
	size_t llen;

	for (;;) {
		switch (b->state) {
		case PS_BODY_DONE:
			return 0;
		case PS_BODY_LENGTH:
		case PS_BODY_CHUNK_DATA:
			if (ps_body_take(in, b->left, data, len) < 0)
				return -1;
			b->left -= *len;
			b->total += *len;
			if (b->left == 0)
				b->state = b->chunked ? PS_BODY_CHUNK_CRLF : PS_BODY_DONE;
			return 1;
		case PS_BODY_UNTIL_EOF:
			if (ps_in_len(in) == 0) {
				ssize_t n = ps_in_fill(in);

				if (n < 0)
					return -1;
				if (n == 0) {
					b->state = PS_BODY_DONE;
					return 0;
				}
			}
			*data = ps_in_data(in);
			*len = ps_in_len(in);
			ps_in_consume(in, *len);
			b->total += *len;
			return 1;
		case PS_BODY_CHUNK_SIZE:
			if (ps_in_line(in, PS_LINE_MAX, &line, &llen) <= 0)
				return -1;
			if (!ps_parse_chunk_size(line, llen, &b->left)) {
				in->err = "bad chunk size line";
				return -1;
			}
			b->state = b->left ? PS_BODY_CHUNK_DATA : PS_BODY_TRAILERS;
			break;
		case PS_BODY_CHUNK_CRLF:
			if (ps_in_need(in, 2) <= 0)
				return -1;
			if (memcmp(ps_in_data(in), "\r\n", 2) != 0) {
				in->err = "chunk data not followed by CRLF";
				return -1;
			}
			ps_in_consume(in, 2);
			b->state = PS_BODY_CHUNK_SIZE;
			break;
		case PS_BODY_TRAILERS:
			if (ps_in_line(in, PS_LINE_MAX, &line, &llen) <= 0)
				return -1;
			if (llen == 0) {
				b->state = PS_BODY_DONE;
				return 0;
			}
			if (++b->trailers > PS_TRAILERS_MAX || !memchr(line, ':', llen)) {
				in->err = "bad trailer section";
				return -1;
			}
			break;
		}
	}
}

#endif /* PS_TOOLS_HTTP_H */
