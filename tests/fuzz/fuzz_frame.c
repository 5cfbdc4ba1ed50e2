// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the HTTP framer (include/http_frame.h).
 *
 * Input: three control bytes, then the stream.
 *   byte 0: bit 0 side (0 request, 1 response), bits 1-3 head_max (index
 *           into head_maxes), bits 4-7 split pattern (0: after every byte,
 *           else segments of 1..2^pattern bytes from a PRNG seeded by byte 1)
 *   byte 1: split seed
 *   byte 2: response i answers a HEAD request if bit (i % 8) is set
 *
 * The stream is framed whole, whole without a path buffer, and in segments
 * with the framer state copied to fresh memory between them; all three must
 * see the same events at the same offsets with the same state. The driver
 * (tests/unit/frame_driver.h) checks the invariants of every event. Last, an
 * independent whole-buffer reader (the oracle below) finds where each head
 * and message ends the plain RFC 9112 way, and every boundary the framer
 * reports before refusing anything must be one the oracle finds too.
 */
#include <stdio.h>

#include "../unit/frame_driver.h"

static const __u32 head_maxes[8] = { 0, 1, 7, 24, 64, 256, 8192, 65535 };

static void die(const char *what, const struct fd_run *r, unsigned at)
{
	fprintf(stderr, "fuzz_frame: %s (event %u of %u, kind %u, head_max %u)\n", what, at,
		r ? r->n : 0, r ? r->fr->kind : 0, r ? r->fr->head_max : 0);
	abort();
}

/* ---- the oracle ---- */

enum { OR_END = 0, OR_INVALID = 1 };

struct oracle {
	const __u8 *b;
	size_t len;
	__u8 kind;
	uint64_t head_bits;
	uint64_t finals;	/* final response heads so far */
	int stop;		/* OR_END or OR_INVALID */
	unsigned n;
	struct fd_event ev[FD_MAX_EVENTS];	/* only ev, off and the compared fields */
};

static struct oracle orc;

static void or_event(struct oracle *o, int ev, size_t off, const struct ps_frame *attrs)
{
	if (o->n == FD_MAX_EVENTS)
		return;
	memset(&o->ev[o->n], 0, sizeof(o->ev[0]));
	o->ev[o->n].ev = ev;
	o->ev[o->n].off = off;
	if (attrs)
		o->ev[o->n].fr = *attrs;
	o->n++;
}

/* Index of the first "\r\n" in [from, to), or `to`. */
static size_t or_crlf(const struct oracle *o, size_t from, size_t to)
{
	for (size_t i = from; i + 1 < to; i++)
		if (o->b[i] == '\r' && o->b[i + 1] == '\n')
			return i;
	return to;
}

static int or_ieq(const __u8 *p, size_t n, const char *s)
{
	if (n != strlen(s))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (ps_lower(p[i]) != (__u8)s[i])
			return 0;
	return 1;
}

static int or_ows(__u8 c)
{
	return c == ' ' || c == '\t';
}

/* Path events of the request target starting at `t`, as far as the data goes. */
static void or_path(struct oracle *o, size_t t, size_t end)
{
	const __u8 *b = o->b;
	size_t ps = t, pe;
	struct ps_frame a = { 0 };

	if (t >= end)
		return;
	if (b[t] == '*') {
		if (t + 1 < end && b[t + 1] == ' ')
			or_event(o, PS_EV_PATH_END, t + 2, &a);
		return;
	}
	if (b[t] != '/') {
		/* absolute-form: scheme "://" authority, then the path */
		size_t c = t;

		while (c < end && b[c] != ':' && b[c] != ' ')
			c++;
		if (c + 3 > end || b[c] != ':' || b[c + 1] != '/' || b[c + 2] != '/')
			return;
		for (ps = c + 3; ps < end && b[ps] != '/' && b[ps] != '?' && b[ps] != ' '; ps++)
			;
		if (ps == end)
			return;
		if (b[ps] != '/') {
			a.prefix_len = 1;
			a.prefix_hash = fd_fnv((const __u8 *)"/", 1);
			or_event(o, PS_EV_PATH_END, ps + 1, &a);
			return;
		}
	}
	for (pe = ps; pe < end && b[pe] != '?' && b[pe] != ' '; pe++) {
		size_t rel = pe - ps;

		if (rel == 0 || (b[pe] == '/' && rel < PS_FRAME_PATH_MAX)) {
			a.prefix_len = rel ? rel : 1;
			a.prefix_hash = fd_fnv(b + ps, a.prefix_len);
			or_event(o, PS_EV_PREFIX, pe + 1, &a);
		}
	}
	if (pe < end) {
		a.prefix_len = pe - ps;
		a.prefix_hash = fd_fnv(b + ps, pe - ps);
		or_event(o, PS_EV_PATH_END, pe + 1, &a);
	}
}

struct or_head {
	__u16 flags;
	__u16 status;
	uint64_t cl;
};

/* Header lines in [p, he - 2): what framing needs. 0, or OR_INVALID. */
static int or_headers(struct oracle *o, size_t p, size_t he, struct or_head *h)
{
	const __u8 *b = o->b;
	int seen_cl = 0;

	while (p < he - 2) {
		size_t le = or_crlf(o, p, he), colon = p, vs, ve;

		while (colon < le && b[colon] != ':')
			colon++;
		if (colon == le)
			return OR_INVALID;
		for (vs = colon + 1; vs < le && or_ows(b[vs]); vs++)
			;
		for (ve = le; ve > vs && or_ows(b[ve - 1]); ve--)
			;
		if (or_ieq(b + p, colon - p, "content-length")) {
			uint64_t v = 0;

			if (vs == ve)
				return OR_INVALID;
			for (size_t i = vs; i < ve; i++) {
				if (b[i] < '0' || b[i] > '9')
					return OR_INVALID;
				v = v * 10 + (b[i] - '0');
				if (v > PS_FRAME_CL_MAX)
					return OR_INVALID;
			}
			if (seen_cl && v != h->cl)
				return OR_INVALID;
			seen_cl = 1;
			h->cl = v;
			h->flags |= PS_FF_HAS_CL;
		} else if (or_ieq(b + p, colon - p, "transfer-encoding") ||
			   or_ieq(b + p, colon - p, "connection")) {
			int te = ps_lower(b[p]) == 't';

			if (te)
				h->flags |= PS_FF_HAS_TE;
			for (size_t e = vs; e < ve;) {
				size_t es = e, ee;

				while (e < ve && b[e] != ',')
					e++;
				for (ee = e; ee > es && or_ows(b[ee - 1]); ee--)
					;
				while (es < ee && or_ows(b[es]))
					es++;
				e++;
				if (es == ee)
					continue;	/* empty list element */
				if (te) {
					h->flags &= ~PS_FF_CHUNKED;
					if (or_ieq(b + es, ee - es, "chunked"))
						h->flags |= PS_FF_CHUNKED;
				} else if (or_ieq(b + es, ee - es, "close")) {
					h->flags |= PS_FF_CONN_CLOSE;
				} else if (or_ieq(b + es, ee - es, "keep-alive")) {
					h->flags |= PS_FF_CONN_KEEP;
				} else if (or_ieq(b + es, ee - es, "upgrade")) {
					h->flags |= PS_FF_CONN_UPGRADE;
				}
			}
		} else if (or_ieq(b + p, colon - p, "upgrade")) {
			h->flags |= PS_FF_UPGRADE;
		}
		p = le + 2;
	}
	if (!seen_cl)
		h->cl = 0;
	return 0;
}

/* A chunked body from p. Its end, 0 if the data ends first, or -1 if malformed. */
static long or_chunks(struct oracle *o, size_t p)
{
	const __u8 *b = o->b;

	for (;;) {
		size_t le = or_crlf(o, p, o->len), d = p;
		uint64_t size = 0;

		if (le == o->len)
			return 0;
		while (d < le && ps_hex(b[d]) >= 0) {
			size = size * 16 + ps_hex(b[d]);
			d++;
		}
		if (d == p || d - p > 15)
			return -1;
		if (d < le && b[d] != ';' && !or_ows(b[d]))
			return -1;
		p = le + 2;
		if (size == 0)
			break;
		if (p + size >= o->len)
			return 0;
		p += size;
		if (b[p] != '\r')
			return -1;
		if (p + 1 == o->len)
			return 0;
		if (b[p + 1] != '\n')
			return -1;
		p += 2;
	}
	/* trailer lines, then an empty line */
	for (;;) {
		size_t le = or_crlf(o, p, o->len);

		if (le == o->len)
			return 0;
		if (le == p)
			return (long)(le + 2);
		p = le + 2;
	}
}

/* One message from *pos; 1 to go on with the next, 0 to stop. */
static int or_message(struct oracle *o, size_t *pos)
{
	const __u8 *b = o->b;
	size_t p = *pos, le, he, sp1, sp2;
	struct or_head h = { 0 };
	struct ps_frame a = { 0 };
	uint64_t body = 0;

	if (o->kind == PS_FRAME_REQUEST)
		while (p + 1 < o->len && b[p] == '\r' && b[p + 1] == '\n')
			p += 2;
	if (p >= o->len)
		return 0;
	le = or_crlf(o, p, o->len);

	if (o->kind == PS_FRAME_REQUEST) {
		for (sp1 = p; sp1 < le && b[sp1] != ' '; sp1++)
			;
		if (sp1 < le && sp1 - p == 7 && !memcmp(b + p, "CONNECT", 7)) {
			o->stop = OR_INVALID;
			return 0;
		}
		if (sp1 - p == 4 && !memcmp(b + p, "HEAD", 4))
			h.flags |= PS_FF_HEAD;
		if (sp1 + 1 < le && b[sp1 + 1] != '/' && b[sp1 + 1] != '*')
			h.flags |= PS_FF_ABSOLUTE;
		or_path(o, sp1 + 1, le);
		for (sp2 = sp1 + 1; sp2 < le && b[sp2] != ' '; sp2++)
			;
		if (le == o->len)
			return 0;
		if (sp2 + 9 != le || memcmp(b + sp2 + 1, "HTTP/1.", 7) ||
		    (b[le - 1] != '0' && b[le - 1] != '1')) {
			o->stop = OR_INVALID;
			return 0;
		}
		if (b[le - 1] == '0')
			h.flags |= PS_FF_HTTP10;
	} else {
		if (le == o->len)
			return 0;
		if (le - p < 12 || memcmp(b + p, "HTTP/1.", 7) || b[p + 7] < '0' || b[p + 7] > '9' ||
		    b[p + 8] != ' ' || b[p + 9] < '1' || b[p + 9] > '9' ||
		    b[p + 10] < '0' || b[p + 10] > '9' || b[p + 11] < '0' || b[p + 11] > '9' ||
		    (le - p > 12 && b[p + 12] != ' ')) {
			o->stop = OR_INVALID;
			return 0;
		}
		if (b[p + 7] == '0')
			h.flags |= PS_FF_HTTP10;
		h.status = (b[p + 9] - '0') * 100 + (b[p + 10] - '0') * 10 + (b[p + 11] - '0');
		if (o->head_bits >> (o->finals % 64) & 1)
			h.flags |= PS_FF_REQ_HEAD;
	}

	/* the head ends at the first empty line */
	he = le + 2;
	while (he < o->len) {
		size_t next = or_crlf(o, he, o->len);

		if (next == o->len)
			return 0;
		if (next == he)
			break;
		he = next + 2;
	}
	if (he >= o->len)
		return 0;
	he += 2;
	if (or_headers(o, le + 2, he, &h)) {
		o->stop = OR_INVALID;
		return 0;
	}

	a.cl = h.cl;
	a.status = h.status;
	if (o->kind == PS_FRAME_REQUEST) {
		if ((h.flags & PS_FF_HAS_TE) &&
		    ((h.flags & (PS_FF_HAS_CL | PS_FF_HTTP10)) || !(h.flags & PS_FF_CHUNKED))) {
			o->stop = OR_INVALID;
			return 0;
		}
		body = h.cl;
	} else if (h.status < 200 && h.status != 101) {
		a.flags = (h.flags & PS_FF_REQ_HEAD) | PS_FF_INTERIM;
		a.cl = 0;
		or_event(o, PS_EV_HEAD_END, he, &a);
		*pos = he;
		return 1;
	} else if (h.status == 101) {
		a.flags = h.flags | PS_FF_TUNNEL;
		or_event(o, PS_EV_HEAD_END, he, &a);
		return 0;
	} else if ((h.flags & PS_FF_REQ_HEAD) || h.status == 204 || h.status == 304) {
		body = 0;
	} else if ((h.flags & PS_FF_HAS_TE) && !(h.flags & PS_FF_CHUNKED)) {
		a.flags = h.flags | PS_FF_UNTIL_CLOSE;
		or_event(o, PS_EV_HEAD_END, he, &a);
		return 0;
	} else if (h.flags & PS_FF_CHUNKED) {
		body = 0;
	} else if (h.flags & PS_FF_HAS_CL) {
		body = h.cl;
	} else {
		a.flags = h.flags | PS_FF_UNTIL_CLOSE;
		or_event(o, PS_EV_HEAD_END, he, &a);
		return 0;
	}
	if (o->kind == PS_FRAME_RESPONSE)
		o->finals++;
	a.flags = h.flags;
	or_event(o, PS_EV_HEAD_END, he, &a);

	if ((h.flags & PS_FF_CHUNKED) &&
	    !(o->kind == PS_FRAME_RESPONSE &&
	      ((h.flags & PS_FF_REQ_HEAD) || h.status == 204 || h.status == 304))) {
		long end = or_chunks(o, he);

		if (end < 0)
			o->stop = OR_INVALID;
		if (end <= 0)
			return 0;
		*pos = (size_t)end;
	} else {
		if (body > o->len - he)
			return 0;
		*pos = he + body;
	}
	or_event(o, PS_EV_MSG_END, *pos, NULL);
	return 1;
}

static void or_run(struct oracle *o, const __u8 *b, size_t len, __u8 kind, uint64_t head_bits)
{
	size_t pos = 0;

	o->b = b;
	o->len = len;
	o->kind = kind;
	o->head_bits = head_bits;
	o->finals = 0;
	o->stop = OR_END;
	o->n = 0;
	while (or_message(o, &pos))
		;
}

/* The framer's boundaries before its first error must be the oracle's. */
static void or_compare(const struct oracle *o, const struct fd_run *r)
{
	uint64_t err_off = UINT64_MAX;
	unsigned k = 0, j = 0;

	for (unsigned i = 0; i < r->n; i++)
		if (r->ev[i].ev == PS_EV_ERROR) {
			err_off = r->ev[i].off;
			break;
		}
	if (r->dropped || o->n == FD_MAX_EVENTS)
		return;
	for (; k < r->n && r->ev[k].ev != PS_EV_ERROR; k++, j++) {
		const struct fd_event *f = &r->ev[k], *e = &o->ev[j];

		if (j == o->n || e->off >= err_off)
			die("oracle: the framer reports a boundary the oracle does not", r, k);
		if (f->ev != e->ev || f->off != e->off)
			die("oracle: different boundary", r, k);
		if ((f->ev == PS_EV_PREFIX || f->ev == PS_EV_PATH_END) &&
		    (f->fr.prefix_len != e->fr.prefix_len || f->fr.prefix_hash != e->fr.prefix_hash))
			die("oracle: different prefix", r, k);
		if (f->ev == PS_EV_HEAD_END &&
		    (f->fr.flags != e->fr.flags || f->fr.cl != e->fr.cl ||
		     (f->fr.kind == PS_FRAME_RESPONSE && f->fr.status != e->fr.status)))
			die("oracle: different head", r, k);
	}
	if (j < o->n && o->ev[j].off < err_off)
		die("oracle: the oracle finds a boundary the framer does not", r, k);
	if (err_off == UINT64_MAX && o->stop == OR_INVALID)
		die("oracle: the framer accepts what the oracle finds malformed", r, k);
}

/* ---- the target ---- */

#define MAX_STREAM	8192	/* keeps events within FD_MAX_EVENTS */

static size_t cuts[MAX_STREAM];
static struct fd_run *whole, *nopath, *split, *run;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	__u8 kind;
	__u32 head_max;
	unsigned pattern, at;
	uint32_t seed;
	uint64_t head_bits;
	size_t len, ncuts = 0;
	const __u8 *buf;
	const char *diff;

	if (size < 3 || size - 3 > MAX_STREAM)
		return 0;
	if (!whole) {
		whole = fd_new(PS_FRAME_REQUEST, 0);
		nopath = fd_new(PS_FRAME_REQUEST, 0);
		split = fd_new(PS_FRAME_REQUEST, 0);
		run = fd_new(PS_FRAME_REQUEST, 0);
	}
	kind = data[0] & 1 ? PS_FRAME_RESPONSE : PS_FRAME_REQUEST;
	head_max = head_maxes[(data[0] >> 1) & 7];
	pattern = data[0] >> 4;
	seed = data[1];
	head_bits = data[2] * 0x0101010101010101ULL;
	buf = data + 3;
	len = size - 3;

	fd_reset(whole, kind, head_max);
	whole->head_bits = head_bits;
	fd_feed(whole, buf, len);
	if (whole->violation)
		die(whole->violation, whole, whole->n);

	fd_reset(run, kind, head_max);
	run->head_bits = head_bits;
	fd_feed_run(run, buf, len);
	if (run->violation)
		die(run->violation, run, run->n);
	diff = fd_diff(whole, run, &at);
	if (diff)
		die(diff, whole, at);
	if (memcmp(whole->path, run->path, sizeof(whole->path)))
		die("ps_frame_run: different path buffer", whole, whole->n);

	fd_reset(nopath, kind, head_max);
	nopath->head_bits = head_bits;
	nopath->use_path = 0;
	fd_feed(nopath, buf, len);
	diff = fd_diff(whole, nopath, &at);
	if (diff)
		die(diff, whole, at);

	for (size_t off = 0; off < len;) {
		if (pattern == 0) {
			off++;
		} else {
			seed = seed * 1103515245 + 12345;
			off += 1 + (seed >> 8) % (1u << (pattern > 12 ? 12 : pattern));
		}
		if (off < len)
			cuts[ncuts++] = off;
	}
	fd_reset(split, kind, head_max);
	split->head_bits = head_bits;
	fd_feed_split(split, buf, len, cuts, ncuts);
	if (split->violation)
		die(split->violation, split, split->n);
	diff = fd_diff(whole, split, &at);
	if (diff)
		die(diff, whole, at);
	if (memcmp(whole->path, split->path, sizeof(whole->path)))
		die("different path buffer", whole, whole->n);

	/* error statuses: requests get their own, responses always 502 */
	if (whole->error && (kind == PS_FRAME_RESPONSE) != (whole->error == 502))
		die("error status of the wrong side", whole, whole->n);

	or_run(&orc, buf, len, kind, head_bits);
	or_compare(&orc, whole);

	return 0;
}
