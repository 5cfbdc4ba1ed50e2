/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A test driver for the HTTP framer (include/http_frame.h), shared by the
 * unit tests and the fuzzer.
 *
 * It feeds a byte stream the way the verdict and the relay do: head and
 * chunk-size bytes one at a time through ps_frame_byte(), bodies skipped
 * with ps_frame_skip() (with n = 0 when a body is empty), and records every
 * event with the stream offset just after the byte that produced it. A
 * stream can be fed in pieces; fd_handover() copies the framer state into
 * fresh memory between pieces, as the kernel hands a socket to userspace.
 *
 * While it runs it checks what must hold for every input and records the
 * first violation in `violation` (NULL while all is well).
 */
#ifndef FRAME_DRIVER_H
#define FRAME_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_frame.h"
#include "pathsplice.h"

#define FD_MAX_EVENTS	16384

struct fd_event {
	int ev;			/* enum ps_frame_event */
	uint64_t off;		/* stream bytes consumed when it happened */
	struct ps_frame fr;	/* framer state right after it */
};

struct fd_run {
	struct ps_frame *fr;		/* heap copy, exactly sizeof(*fr), so ASan sees overreads */
	__u8 path[PS_FRAME_PATH_MAX];	/* the verdict's path buffer; handed over with fr */
	int use_path;			/* pass `path` to ps_frame_byte, or NULL */
	uint64_t head_bits;		/* response: bit (i % 64) set if response i answers HEAD */
	uint64_t off;			/* bytes consumed so far */
	uint64_t heads;			/* final heads seen (HEAD_END without PS_FF_INTERIM) */
	uint64_t msgs;			/* MSG_END seen */
	uint64_t head_bytes;		/* head bytes fed since the framer was last at start */
	__u16 error;			/* sticky error status, 0 before any error */
	const char *violation;		/* first invariant broken, or NULL */
	unsigned n;			/* events recorded */
	unsigned dropped;		/* events past FD_MAX_EVENTS */
	struct fd_event ev[FD_MAX_EVENTS];
};

static inline void fd_violate(struct fd_run *r, const char *what)
{
	if (!r->violation)
		r->violation = what;
}

/* Ready to frame a new stream; the event array is not cleared. */
static inline void fd_reset(struct fd_run *r, __u8 kind, __u32 head_max)
{
	free(r->fr);
	memset(r, 0, offsetof(struct fd_run, ev));
	r->fr = malloc(sizeof(*r->fr));
	if (!r->fr)
		abort();
	ps_frame_init(r->fr, kind, head_max);
	r->use_path = 1;
}

static inline struct fd_run *fd_new(__u8 kind, __u32 head_max)
{
	struct fd_run *r = malloc(sizeof(*r));

	if (!r)
		abort();
	r->fr = NULL;
	fd_reset(r, kind, head_max);
	return r;
}

static inline void fd_free(struct fd_run *r)
{
	if (r) {
		free(r->fr);
		free(r);
	}
}

/* Move the framer state to new memory, as a socket changing owner does. */
static inline void fd_handover(struct fd_run *r)
{
	struct ps_frame *copy = malloc(sizeof(*copy));

	if (!copy)
		abort();
	memcpy(copy, r->fr, sizeof(*copy));
	memset(r->fr, 0xa5, sizeof(*r->fr));
	free(r->fr);
	r->fr = copy;
}

static inline uint64_t fd_fnv(const __u8 *p, size_t n)
{
	uint64_t h = PS_FNV_OFFSET;

	for (size_t i = 0; i < n; i++)
		h = ps_hash_byte(h, p[i]);
	return h;
}

static inline int fd_known_error(__u16 e)
{
	return e == 400 || e == 405 || e == 431 || e == 501 || e == 502 || e == 505;
}

/* Checks that hold at every event, whatever the input. */
static inline void fd_check_event(struct fd_run *r, int ev)
{
	const struct ps_frame *fr = r->fr;
	unsigned plen = fr->prefix_len;

	switch (ev) {
	case PS_EV_PREFIX:
	case PS_EV_PATH_END:
		if (fr->kind != PS_FRAME_REQUEST)
			fd_violate(r, "path event on a response");
		if (plen > fr->path_len || (ev == PS_EV_PATH_END && plen != fr->path_len))
			fd_violate(r, "prefix_len out of range");
		/* only the asterisk-form has no path at all */
		if (plen == 0) {
			if (ev != PS_EV_PATH_END)
				fd_violate(r, "empty prefix");
			break;
		}
		if (ev == PS_EV_PREFIX && plen > PS_FRAME_PATH_MAX)
			fd_violate(r, "prefix event beyond the path buffer");
		if (r->use_path && plen <= PS_FRAME_PATH_MAX) {
			if (fr->prefix_hash != fd_fnv(r->path, plen))
				fd_violate(r, "prefix_hash is not FNV-1a of the prefix bytes");
			if (r->path[0] != '/')
				fd_violate(r, "path does not start with '/'");
			/* a prefix is "/" or ends just before a '/' */
			if (ev == PS_EV_PREFIX && plen > 1 &&
			    (plen >= fr->path_len || plen >= PS_FRAME_PATH_MAX ||
			     r->path[plen] != '/'))
				fd_violate(r, "prefix does not end at a segment boundary");
		}
		break;
	case PS_EV_HEAD_END:
		if (fr->kind == PS_FRAME_REQUEST && (fr->flags & PS_FF_HAS_CL) &&
		    (fr->flags & PS_FF_HAS_TE))
			fd_violate(r, "request head with both Content-Length and Transfer-Encoding");
		if ((fr->flags & PS_FF_CHUNKED) && !(fr->flags & PS_FF_HAS_TE))
			fd_violate(r, "chunked without Transfer-Encoding");
		if (fr->flags & PS_FF_INTERIM) {
			if (!ps_frame_at_start(fr))
				fd_violate(r, "interim head not followed by a new head");
		} else {
			r->heads++;
			if (ps_frame_in_body(fr) && ps_frame_body_left(fr) != PS_FRAME_INFINITE &&
			    ps_frame_body_left(fr) != (fr->flags & PS_FF_HAS_CL ? fr->cl : 0) &&
			    !(fr->kind == PS_FRAME_RESPONSE && ps_frame_body_left(fr) == 0))
				fd_violate(r, "body length is not the Content-Length");
			if (!ps_frame_in_body(fr) && fr->state != PS_FS_CHUNK_SIZE)
				fd_violate(r, "head end neither in a body nor in chunks");
			if (fr->state == PS_FS_CHUNK_SIZE && !(fr->flags & PS_FF_CHUNKED))
				fd_violate(r, "chunks without PS_FF_CHUNKED");
		}
		break;
	case PS_EV_MSG_END:
		r->msgs++;
		if (r->msgs > r->heads)
			fd_violate(r, "more message ends than heads");
		if (!ps_frame_at_start(fr))
			fd_violate(r, "message end not at start");
		break;
	case PS_EV_ERROR:
		if (fr->state != PS_FS_ERROR || !fd_known_error(fr->error))
			fd_violate(r, "error event without a known error status");
		if (r->error && r->error != fr->error)
			fd_violate(r, "error status changed");
		r->error = fr->error;
		break;
	case PS_EV_NONE:
		break;
	default:
		fd_violate(r, "unknown event");
	}
	if (r->error && ev != PS_EV_ERROR)
		fd_violate(r, "event after an error");
}

static inline void fd_record(struct fd_run *r, int ev)
{
	fd_check_event(r, ev);
	if (ev == PS_EV_NONE)
		return;
	if (r->n == FD_MAX_EVENTS) {
		r->dropped++;
		return;
	}
	r->ev[r->n].ev = ev;
	r->ev[r->n].off = r->off;
	memcpy(&r->ev[r->n].fr, r->fr, sizeof(*r->fr));
	r->n++;
}

static inline void fd_skip(struct fd_run *r, uint64_t n)
{
	uint64_t left = ps_frame_body_left(r->fr);

	if (n > left)
		fd_violate(r, "skip beyond body_left");
	r->off += n;
	fd_record(r, ps_frame_skip(r->fr, n));
}

/*
 * Feed one piece of the stream. Stops at the end of the piece, with a body
 * possibly half skipped; an empty body is completed at once. After an error
 * the rest is still fed once the error was recorded, and must leave the
 * framer in its error state without another recorded event.
 */
static inline void fd_feed(struct fd_run *r, const __u8 *buf, size_t len)
{
	size_t i = 0;

	for (;;) {
		struct ps_frame *fr = r->fr;

		if (ps_frame_in_body(fr)) {
			uint64_t left = ps_frame_body_left(fr);
			uint64_t n = len - i;

			if (left == 0) {
				fd_skip(r, 0);
				continue;
			}
			if (n == 0)
				break;
			if (left != PS_FRAME_INFINITE && n > left)
				n = left;
			fd_skip(r, n);
			i += n;
			continue;
		}
		if (i == len)
			break;
		if (ps_frame_at_start(fr)) {
			r->head_bytes = 0;
			if (fr->kind == PS_FRAME_RESPONSE && (r->head_bits >> (r->msgs % 64) & 1))
				fr->flags |= PS_FF_REQ_HEAD;
		}
		if (fr->state < PS_FS_BODY && ++r->head_bytes > (uint64_t)fr->head_max + 1)
			fd_violate(r, "head longer than head_max + 1 bytes");
		r->off++;
		if (r->error) {
			__u16 e = fr->error;

			if (ps_frame_byte(fr, buf[i++], r->use_path ? r->path : NULL) != PS_EV_ERROR ||
			    fr->state != PS_FS_ERROR || fr->error != e)
				fd_violate(r, "error state is not sticky");
			continue;
		}
		fd_record(r, ps_frame_byte(fr, buf[i++], r->use_path ? r->path : NULL));
	}
}

/* Like fd_feed(), but head bytes go through ps_frame_run(), as the verdict
 * and the relay feed them: events, offsets and states must come out the same. */
static inline void fd_feed_run(struct fd_run *r, const __u8 *buf, size_t len)
{
	size_t i = 0;

	for (;;) {
		struct ps_frame *fr = r->fr;
		__u32 pos, n;
		int ev;

		if (ps_frame_in_body(fr)) {
			uint64_t left = ps_frame_body_left(fr);
			uint64_t k = len - i;

			if (left == 0) {
				fd_skip(r, 0);
				continue;
			}
			if (k == 0)
				break;
			if (left != PS_FRAME_INFINITE && k > left)
				k = left;
			fd_skip(r, k);
			i += k;
			continue;
		}
		if (i == len)
			break;
		if (ps_frame_at_start(fr) && fr->kind == PS_FRAME_RESPONSE &&
		    (r->head_bits >> (r->msgs % 64) & 1))
			fr->flags |= PS_FF_REQ_HEAD;
		if (r->error) {
			r->off++;
			if (ps_frame_byte(fr, buf[i++], r->use_path ? r->path : NULL) != PS_EV_ERROR)
				fd_violate(r, "error state is not sticky");
			continue;
		}
		pos = 0;
		n = len - i > 65536 ? 65536 : (__u32)(len - i);
		ev = ps_frame_run(fr, buf + i, n, &pos, r->use_path ? r->path : NULL);
		if (pos == 0 && ev == PS_EV_NONE)
			fd_violate(r, "ps_frame_run made no progress");
		i += pos;
		r->off += pos;
		if (ev != PS_EV_NONE)
			fd_record(r, ev);
	}
}

/* Feed `buf` cut after each offset in `cuts` (ascending), handing the state
 * over at every cut. */
static inline void fd_feed_split(struct fd_run *r, const __u8 *buf, size_t len,
				 const size_t *cuts, size_t ncuts)
{
	size_t at = 0;

	for (size_t k = 0; k < ncuts; k++) {
		if (cuts[k] < at || cuts[k] > len)
			continue;
		fd_feed(r, buf + at, cuts[k] - at);
		fd_handover(r);
		at = cuts[k];
	}
	fd_feed(r, buf + at, len - at);
}

/* NULL if both runs saw the same events at the same offsets with the same
 * framer state, else what differs. */
static inline const char *fd_diff(const struct fd_run *a, const struct fd_run *b, unsigned *at)
{
	*at = 0;
	if (a->dropped != b->dropped)
		return "different number of dropped events";
	for (unsigned k = 0; k < a->n && k < b->n; k++) {
		*at = k;
		if (a->ev[k].ev != b->ev[k].ev)
			return "different event";
		if (a->ev[k].off != b->ev[k].off)
			return "different offset";
		if (memcmp(&a->ev[k].fr, &b->ev[k].fr, sizeof(a->ev[k].fr)))
			return "different framer state";
	}
	*at = a->n < b->n ? a->n : b->n;
	if (a->n != b->n)
		return "different number of events";
	if (a->error != b->error)
		return "different error";
	return NULL;
}

#endif /* FRAME_DRIVER_H */
