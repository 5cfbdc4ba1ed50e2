/* SPDX-License-Identifier: GPL-2.0 */
/*
 * HTTP/1.x message framing, one byte at a time (eight at a time over the
 * bytes it only validates).
 *
 * The same code runs in the kernel (the sk_skb verdict frames every request
 * and response it forwards) and in userspace (the head parser, the relay
 * that takes over whatever the kernel hands back, the unit tests and the
 * fuzzer). It finds where heads, bodies and messages end, extracts what
 * routing and framing need (method, target path, Content-Length,
 * Transfer-Encoding, Connection, Upgrade, status) and rejects anything whose
 * framing could be read two ways. Its state is a small struct that can stop
 * after any byte and be resumed by the other side.
 *
 * Bodies are never fed byte by byte: while ps_frame_in_body() is true the
 * caller skips up to ps_frame_body_left() bytes with ps_frame_skip().
 */
#ifndef HTTP_FRAME_H
#define HTTP_FRAME_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define PS_FRAME_PATH_MAX	128	/* == PS_PATH_MAX: bytes of target path buffered */
#define PS_FRAME_INFINITE	(~0ULL)	/* body that ends with the connection or a tunnel */
#define PS_FRAME_CL_MAX		(1ULL << 60)
#define PS_FRAME_HEAD_MAX	0xffff	/* positions within a head are 16-bit */

enum ps_frame_kind {
	PS_FRAME_REQUEST = 0,
	PS_FRAME_RESPONSE = 1,
};

enum ps_frame_state {
	PS_FS_START = 0,	/* before the first byte of a message */
	PS_FS_START_LF,		/* CR of an empty line before a request */
	PS_FS_METHOD,
	PS_FS_TARGET,		/* first byte of the request target */
	PS_FS_ABS_SCHEME,	/* absolute-form: scheme */
	PS_FS_ABS_SLASH,	/* absolute-form: the two slashes after "scheme:" */
	PS_FS_ABS_AUTH,		/* absolute-form: authority */
	PS_FS_PATH,
	PS_FS_QUERY,
	PS_FS_ASTERISK,		/* "*" target */
	PS_FS_VERSION,		/* "HTTP/1.x" of either start line */
	PS_FS_STATUS,		/* three status digits */
	PS_FS_REASON,
	PS_FS_LINE_LF,		/* LF ending the start line */
	PS_FS_HDR_START,
	PS_FS_HDR_NAME,
	PS_FS_HDR_VALUE,
	PS_FS_HDR_LF,
	PS_FS_HEAD_LF,		/* LF of the empty line ending the head */
	PS_FS_BODY,		/* Content-Length body, tunnel or body until close */
	PS_FS_CHUNK_SIZE,
	PS_FS_CHUNK_EXT,
	PS_FS_CHUNK_SIZE_LF,
	PS_FS_CHUNK_DATA,
	PS_FS_CHUNK_CR,
	PS_FS_CHUNK_LF,
	PS_FS_TRAILER_START,
	PS_FS_TRAILER,
	PS_FS_TRAILER_LF,
	PS_FS_END_LF,		/* LF of the empty line ending the trailers */
	PS_FS_ERROR,
};

enum ps_frame_event {
	PS_EV_NONE = 0,
	PS_EV_PREFIX,		/* prefix_hash/prefix_len: a whole-segment prefix of the path */
	PS_EV_PATH_END,		/* the path is complete; prefix_* is the whole path */
	PS_EV_HEAD_END,		/* the head is complete; flags tell how the body is framed */
	PS_EV_MSG_END,		/* the message is complete */
	PS_EV_ERROR,		/* malformed; `error` is the HTTP status to answer */
};

/* Message flags, valid from PS_EV_HEAD_END until the next message starts. */
#define PS_FF_CHUNKED		0x0001
#define PS_FF_HAS_CL		0x0002
#define PS_FF_HAS_TE		0x0004
#define PS_FF_UPGRADE		0x0008	/* request carries an Upgrade header */
#define PS_FF_CONN_CLOSE	0x0010
#define PS_FF_CONN_KEEP		0x0020
#define PS_FF_CONN_UPGRADE	0x0040
#define PS_FF_HTTP10		0x0080
#define PS_FF_HEAD		0x0100	/* request method is HEAD */
#define PS_FF_CONNECT		0x0200	/* request method is CONNECT */
#define PS_FF_ABSOLUTE		0x0400	/* absolute-form request target */
#define PS_FF_REQ_HEAD		0x0800	/* response: answers a HEAD request (set by the caller) */
#define PS_FF_INTERIM		0x1000	/* response: 1xx other than 101; another head follows */
#define PS_FF_TUNNEL		0x2000	/* response: 101, bytes after the head are a tunnel */
#define PS_FF_UNTIL_CLOSE	0x4000	/* response: body ends when the connection does */
#define PS_FF_TE_CHUNKED	0x8000	/* parsing: last transfer-coding so far is chunked */

/* Headers the framer looks into. */
enum ps_frame_hdr {
	PS_H_OTHER = 0,
	PS_H_CONTENT_LENGTH,
	PS_H_TRANSFER_ENCODING,
	PS_H_CONNECTION,
	PS_H_UPGRADE,
};

/* Tokens of list-valued headers the framer looks for. */
enum ps_frame_tok {
	PS_T_NONE = 0,
	PS_T_CHUNKED,
	PS_T_CLOSE,
	PS_T_KEEP_ALIVE,
	PS_T_UPGRADE,
};

struct ps_frame {
	__u64 remaining;	/* body or chunk bytes left */
	__u64 cl;		/* Content-Length declared (or being read) */
	__u64 hash;		/* FNV-1a of the path so far */
	__u64 prefix_hash;	/* with PS_EV_PREFIX / PS_EV_PATH_END */
	__u32 head_len;		/* bytes of the current head so far */
	__u32 head_max;		/* limit (<= PS_FRAME_HEAD_MAX); exceeding it is PS_EV_ERROR 431 (request) / 502 */
	__u16 flags;		/* PS_FF_* */
	__u16 status;		/* response status code */
	__u16 error;		/* with PS_FS_ERROR: the status to answer */
	__u16 pos;		/* position in the token, name or path being read */
	__u16 path_len;		/* bytes of the path so far */
	__u16 prefix_len;	/* with PS_EV_PREFIX / PS_EV_PATH_END */
	__u16 target_off;	/* offset of the request target within the head */
	__u16 line_len;		/* bytes of the current chunk-size digits */
	__u8 state;		/* enum ps_frame_state */
	__u8 kind;		/* enum ps_frame_kind */
	__u8 hdr;		/* enum ps_frame_hdr of the header being read */
	__u8 tok;		/* enum ps_frame_tok candidate of the token being read */
	__u8 val_state;		/* header value: 0 leading OWS, 1 in token, 2 after token */
	__u8 cand;		/* candidate being matched: header name or method */
	__u8 seen_cl;		/* Content-Length headers seen */
	__u8 pad;
};

static __always_inline void ps_frame_init(struct ps_frame *fr, __u8 kind, __u32 head_max)
{
	__builtin_memset(fr, 0, sizeof(*fr));
	fr->kind = kind;
	fr->head_max = head_max > PS_FRAME_HEAD_MAX ? PS_FRAME_HEAD_MAX : head_max;
	fr->hash = 0xcbf29ce484222325ULL;
}

/* Ready for the next message; keeps kind and limit. */
static __always_inline void ps_frame_next(struct ps_frame *fr)
{
	ps_frame_init(fr, fr->kind, fr->head_max);
}

static __always_inline int ps_frame_in_body(const struct ps_frame *fr)
{
	return fr->state == PS_FS_BODY || fr->state == PS_FS_CHUNK_DATA;
}

static __always_inline __u64 ps_frame_body_left(const struct ps_frame *fr)
{
	return fr->remaining;
}

static __always_inline int ps_frame_at_start(const struct ps_frame *fr)
{
	return fr->state == PS_FS_START;
}

/* The message's flags say its connection ends after it: Connection: close,
 * or HTTP/1.0 without keep-alive. */
static __always_inline int ps_flags_close(__u16 flags)
{
	return (flags & PS_FF_CONN_CLOSE) || (flags & (PS_FF_HTTP10 | PS_FF_CONN_KEEP)) == PS_FF_HTTP10;
}

/* True from a message's first byte until its head is complete. */
static __always_inline int ps_frame_in_head(const struct ps_frame *fr)
{
	return fr->state != PS_FS_START && fr->state < PS_FS_BODY;
}

/* True while the request line has not reached the end of its path: the
 * bytes read so far do not yet say which service the request is for. */
static __always_inline int ps_frame_before_route(const struct ps_frame *fr)
{
	return fr->state <= PS_FS_PATH && fr->state != PS_FS_START;
}

static __always_inline int ps_frame_error(struct ps_frame *fr, __u16 status)
{
	fr->state = PS_FS_ERROR;
	fr->error = status;
	return PS_EV_ERROR;
}

/* Skip n <= ps_frame_body_left() body bytes. */
static __always_inline int ps_frame_skip(struct ps_frame *fr, __u64 n)
{
	if (fr->remaining == PS_FRAME_INFINITE)
		return PS_EV_NONE;
	fr->remaining -= n;
	if (fr->remaining)
		return PS_EV_NONE;
	if (fr->state == PS_FS_CHUNK_DATA) {
		fr->state = PS_FS_CHUNK_CR;
		return PS_EV_NONE;
	}
	ps_frame_next(fr);
	return PS_EV_MSG_END;
}

/* RFC 9110 tchar */
static __always_inline int ps_is_tchar(__u8 c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return 1;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
	case '+': case '-': case '.': case '^': case '_': case '`': case '|': case '~':
		return 1;
	}
	return 0;
}

/* Bytes allowed in a request target: visible ASCII. */
static __always_inline int ps_is_vchar(__u8 c)
{
	return c > 0x20 && c < 0x7f;
}

/* Bytes allowed in a header value, reason phrase or chunk extension:
 * visible ASCII, space, tab and obs-text. */
static __always_inline int ps_is_field_byte(__u8 c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static __always_inline __u8 ps_lower(__u8 c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static __always_inline int ps_hex(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = ps_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Constant strings live at file scope: the kernel's BTF rejects the
 * "function.variable" names clang gives function-scope statics. They are
 * kept in tables large enough that clang does not move them to the
 * mergeable-constant sections libbpf cannot describe. */
#define PS_W_PROTO	5
#define PS_W_HEAD	6
#define PS_W_CONNECT	7
static const char ps_words[8][18] __attribute__((unused)) = {
	"", "content-length", "transfer-encoding", "connection", "upgrade",
	"HTTP/1.", "HEAD", "CONNECT",
};
static const char ps_tok_names[5][11] __attribute__((unused)) = {
	"", "chunked", "close", "keep-alive", "upgrade",
};

/* The verifier must see the bounds check on the very register used as the
 * index; this keeps clang from checking one copy and indexing with another. */
#ifdef __bpf__
#define ps_barrier_var(v) asm volatile("" : "+r"(v))
#else
#define ps_barrier_var(v) ((void)0)
#endif

static __always_inline __u8 ps_table_char(const char *table, __u32 size, __u32 idx)
{
	ps_barrier_var(idx);
	if (idx >= size)
		return 0;
	return table[idx];
}

/* Character `pos` of the header name `hdr`, lowercase; 0 past its end. */
static __always_inline __u8 ps_hdr_char(__u8 hdr, __u16 pos)
{
	if (pos >= 18)
		return 0;
	return ps_table_char(&ps_words[0][0], sizeof(ps_words), hdr * 18u + pos);
}

static __always_inline __u8 ps_tok_char(__u8 tok, __u16 pos)
{
	if (pos >= 11)
		return 0;
	return ps_table_char(&ps_tok_names[0][0], sizeof(ps_tok_names), tok * 11u + pos);
}

/* Header name: narrow the candidate as characters arrive. */
static __always_inline void ps_name_byte(struct ps_frame *fr, __u8 c)
{
	__u8 lc = ps_lower(c);

	if (fr->pos == 0) {
		switch (lc) {
		case 'c': fr->cand = PS_H_CONTENT_LENGTH; break;
		case 't': fr->cand = PS_H_TRANSFER_ENCODING; break;
		case 'u': fr->cand = PS_H_UPGRADE; break;
		default: fr->cand = PS_H_OTHER; break;
		}
	} else if (fr->cand != PS_H_OTHER && ps_hdr_char(fr->cand, fr->pos) != lc) {
		/* "content-length" and "connection" share "con" */
		if (fr->cand == PS_H_CONTENT_LENGTH && fr->pos == 3 && lc == 'n')
			fr->cand = PS_H_CONNECTION;
		else
			fr->cand = PS_H_OTHER;
	}
	fr->pos++;
}

/* Token of a list-valued header (Transfer-Encoding, Connection). */
static __always_inline void ps_tok_byte(struct ps_frame *fr, __u8 c)
{
	__u8 lc = ps_lower(c);

	if (fr->pos == 0) {
		if (fr->hdr == PS_H_TRANSFER_ENCODING)
			fr->tok = lc == 'c' ? PS_T_CHUNKED : PS_T_NONE;
		else
			fr->tok = lc == 'c' ? PS_T_CLOSE : lc == 'k' ? PS_T_KEEP_ALIVE :
				  lc == 'u' ? PS_T_UPGRADE : PS_T_NONE;
	}
	if (fr->tok != PS_T_NONE && ps_tok_char(fr->tok, fr->pos) != lc)
		fr->tok = PS_T_NONE;
	fr->pos++;
}

static __always_inline void ps_tok_end(struct ps_frame *fr)
{
	int whole = fr->tok != PS_T_NONE && ps_tok_char(fr->tok, fr->pos) == 0;

	if (fr->hdr == PS_H_TRANSFER_ENCODING) {
		/* only the last transfer-coding decides the framing */
		if (whole)
			fr->flags |= PS_FF_TE_CHUNKED;
		else
			fr->flags &= ~PS_FF_TE_CHUNKED;
	} else if (whole) {
		if (fr->tok == PS_T_CLOSE)
			fr->flags |= PS_FF_CONN_CLOSE;
		else if (fr->tok == PS_T_KEEP_ALIVE)
			fr->flags |= PS_FF_CONN_KEEP;
		else if (fr->tok == PS_T_UPGRADE)
			fr->flags |= PS_FF_CONN_UPGRADE;
	}
	fr->tok = PS_T_NONE;
	fr->pos = 0;
}

static __always_inline int ps_bad(struct ps_frame *fr)
{
	return ps_frame_error(fr, fr->kind == PS_FRAME_REQUEST ? 400 : 502);
}

/* One byte of a header value. */
static __always_inline int ps_value_byte(struct ps_frame *fr, __u8 c)
{
	int ows = c == ' ' || c == '\t';

	if (!ps_is_field_byte(c))
		return ps_bad(fr);

	switch (fr->hdr) {
	case PS_H_CONTENT_LENGTH:
		if (ows) {
			if (fr->val_state == 1)
				fr->val_state = 2;
			return PS_EV_NONE;
		}
		if (c < '0' || c > '9' || fr->val_state == 2)
			return ps_bad(fr);
		fr->val_state = 1;
		fr->remaining = fr->remaining * 10 + (c - '0');
		if (fr->remaining > PS_FRAME_CL_MAX)
			return ps_bad(fr);
		return PS_EV_NONE;
	case PS_H_TRANSFER_ENCODING:
	case PS_H_CONNECTION:
		if (c == ',') {
			if (fr->val_state == 1 || fr->val_state == 2)
				ps_tok_end(fr);
			fr->val_state = 0;
			return PS_EV_NONE;
		}
		if (ows) {
			if (fr->val_state == 1)
				fr->val_state = 2;
			return PS_EV_NONE;
		}
		if (fr->val_state == 2) {
			/* "a b": a transfer-coding with parameters or junk */
			fr->tok = PS_T_NONE;
			return PS_EV_NONE;
		}
		fr->val_state = 1;
		ps_tok_byte(fr, c);
		return PS_EV_NONE;
	default:
		return PS_EV_NONE;
	}
}

/* The ':' after a header name: its value starts. */
static __always_inline void ps_name_end(struct ps_frame *fr)
{
	fr->hdr = fr->cand;
	if (fr->hdr != PS_H_OTHER && ps_hdr_char(fr->hdr, fr->pos) != 0)
		fr->hdr = PS_H_OTHER;
	fr->state = PS_FS_HDR_VALUE;
	fr->val_state = 0;
	fr->tok = PS_T_NONE;
	fr->pos = 0;
	if (fr->hdr == PS_H_CONTENT_LENGTH)
		fr->remaining = 0;
}

/* End of a header line: apply what it said. */
static __always_inline int ps_header_end(struct ps_frame *fr)
{
	switch (fr->hdr) {
	case PS_H_CONTENT_LENGTH:
		if (fr->val_state == 0)
			return ps_bad(fr);
		if (fr->seen_cl && fr->cl != fr->remaining)
			return ps_bad(fr);
		fr->cl = fr->remaining;
		fr->remaining = 0;
		fr->seen_cl = 1;
		fr->flags |= PS_FF_HAS_CL;
		break;
	case PS_H_TRANSFER_ENCODING:
		/* an empty last list element changes nothing (RFC 9110 5.6.1) */
		if (fr->val_state != 0)
			ps_tok_end(fr);
		fr->flags |= PS_FF_HAS_TE;
		break;
	case PS_H_CONNECTION:
		if (fr->val_state != 0)
			ps_tok_end(fr);
		break;
	case PS_H_UPGRADE:
		fr->flags |= PS_FF_UPGRADE;
		break;
	}
	fr->hdr = PS_H_OTHER;
	fr->pos = 0;
	return PS_EV_NONE;
}

/* The head is complete: decide how the body is framed. */
static __always_inline int ps_head_end(struct ps_frame *fr)
{
	__u16 f = fr->flags;

	if (f & PS_FF_TE_CHUNKED)
		f |= PS_FF_CHUNKED;
	f &= ~PS_FF_TE_CHUNKED;
	fr->flags = f;
	fr->remaining = 0;

	if (fr->kind == PS_FRAME_REQUEST) {
		if (f & PS_FF_HAS_TE) {
			/* request smuggling lives here: refuse, never guess */
			if (f & PS_FF_HAS_CL)
				return ps_frame_error(fr, 400);
			if (!(f & PS_FF_CHUNKED))
				return ps_frame_error(fr, 501);
			if (f & PS_FF_HTTP10)
				return ps_frame_error(fr, 400);
		}
		if (f & PS_FF_CHUNKED) {
			fr->state = PS_FS_CHUNK_SIZE;
		} else {
			fr->state = PS_FS_BODY;
			fr->remaining = fr->cl;
		}
		return PS_EV_HEAD_END;
	}

	if (fr->status < 200 && fr->status != 101) {
		/* interim response: another head follows for the same request;
		 * the status stays readable until that head starts */
		__u16 interim_status = fr->status;

		ps_frame_next(fr);
		fr->flags = (f & PS_FF_REQ_HEAD) | PS_FF_INTERIM;
		fr->status = interim_status;
		return PS_EV_HEAD_END;
	}
	fr->state = PS_FS_BODY;
	if (fr->status == 101) {
		fr->flags |= PS_FF_TUNNEL;
		fr->remaining = PS_FRAME_INFINITE;
	} else if ((f & PS_FF_REQ_HEAD) || fr->status == 204 || fr->status == 304) {
		fr->remaining = 0;
	} else if (f & PS_FF_CHUNKED) {
		fr->state = PS_FS_CHUNK_SIZE;
	} else if (f & PS_FF_HAS_TE) {
		fr->flags |= PS_FF_UNTIL_CLOSE;
		fr->remaining = PS_FRAME_INFINITE;
	} else if (f & PS_FF_HAS_CL) {
		fr->remaining = fr->cl;
	} else {
		fr->flags |= PS_FF_UNTIL_CLOSE;
		fr->remaining = PS_FRAME_INFINITE;
	}
	return PS_EV_HEAD_END;
}

/* A byte of the request path. `path` buffers the first PS_FRAME_PATH_MAX. */
static __always_inline int ps_path_byte(struct ps_frame *fr, __u8 c, __u8 *path)
{
	int boundary = c == '/' || c == '?' || c == ' ';

	if (boundary && fr->path_len > 0) {
		fr->prefix_hash = fr->hash;
		fr->prefix_len = fr->path_len;
	}
	if (c == ' ' || c == '?') {
		fr->state = c == ' ' ? PS_FS_VERSION : PS_FS_QUERY;
		fr->pos = 0;
		return PS_EV_PATH_END;
	}
	if (!ps_is_vchar(c) || c == '#')
		return ps_frame_error(fr, 400);
	if (path && fr->path_len < PS_FRAME_PATH_MAX)
		path[fr->path_len & (PS_FRAME_PATH_MAX - 1)] = c;
	fr->hash = (fr->hash ^ c) * 0x100000001b3ULL;
	fr->path_len++;
	if (fr->path_len == 1) {
		/* "/" itself is a prefix of every path */
		fr->prefix_hash = fr->hash;
		fr->prefix_len = 1;
		return PS_EV_PREFIX;
	}
	if (boundary && fr->prefix_len < PS_FRAME_PATH_MAX)
		return PS_EV_PREFIX;
	return PS_EV_NONE;
}

/* An absolute-form target without a path ("http://host?q") routes as "/". */
static __always_inline int ps_path_root(struct ps_frame *fr, __u8 *path)
{
	if (path)
		path[0] = '/';
	fr->hash = (fr->hash ^ '/') * 0x100000001b3ULL;
	fr->path_len = 1;
	fr->prefix_hash = fr->hash;
	fr->prefix_len = 1;
	return PS_EV_PATH_END;
}

/* "HTTP/1.0" or "HTTP/1.1"; pos counts bytes matched. */
static __always_inline int ps_version_byte(struct ps_frame *fr, __u8 c)
{
	__u16 p = fr->pos;

	if (p < 7) {
		/* another major version is well-formed but not served */
		if (p == 5 && c >= '2' && c <= '9' && fr->kind == PS_FRAME_REQUEST)
			return ps_frame_error(fr, 505);
		if (c != ps_hdr_char(PS_W_PROTO, p))
			return ps_bad(fr);
	} else if (p == 7) {
		if (c < '0' || c > '9')
			return ps_bad(fr);
		if (c == '0')
			fr->flags |= PS_FF_HTTP10;
		else if (c != '1' && fr->kind == PS_FRAME_REQUEST)
			return ps_frame_error(fr, 505);
	} else if (fr->kind == PS_FRAME_REQUEST) {
		if (c != '\r')
			return ps_bad(fr);
		fr->state = PS_FS_LINE_LF;
		return PS_EV_NONE;
	} else {
		if (c != ' ')
			return ps_bad(fr);
		fr->state = PS_FS_STATUS;
		fr->pos = 0;
		return PS_EV_NONE;
	}
	fr->pos++;
	return PS_EV_NONE;
}

/* Method: token; HEAD and CONNECT matter to framing. */
static __always_inline int ps_method_byte(struct ps_frame *fr, __u8 c)
{
	if (c == ' ') {
		if (fr->pos == 0)
			return ps_frame_error(fr, 400);
		if (fr->cand == 1 && fr->pos == 4)
			fr->flags |= PS_FF_HEAD;
		else if (fr->cand == 2 && fr->pos == 7) {
			/* refused before its authority-form target, which has no path */
			fr->flags |= PS_FF_CONNECT;
			return ps_frame_error(fr, 405);
		}
		fr->state = PS_FS_TARGET;
		fr->target_off = (__u16)fr->head_len;
		fr->pos = 0;
		return PS_EV_NONE;
	}
	if (!ps_is_tchar(c))
		return ps_frame_error(fr, 400);
	if (fr->pos == 0)
		fr->cand = c == 'H' ? 1 : c == 'C' ? 2 : 0;
	else if (fr->cand == 1 && (fr->pos >= 4 || ps_hdr_char(PS_W_HEAD, fr->pos) != c))
		fr->cand = 0;
	else if (fr->cand == 2 && (fr->pos >= 7 || ps_hdr_char(PS_W_CONNECT, fr->pos) != c))
		fr->cand = 0;
	if (fr->pos < 0xffff)
		fr->pos++;
	return PS_EV_NONE;
}

/* Chunk-size line: hex digits, optional extension, CRLF. */
static __always_inline int ps_chunk_byte(struct ps_frame *fr, __u8 c)
{
	int h;

	switch (fr->state) {
	case PS_FS_CHUNK_SIZE:
		h = ps_hex(c);
		if (h >= 0) {
			if (++fr->line_len > 15)
				return ps_bad(fr);
			fr->remaining = fr->remaining * 16 + h;
			return PS_EV_NONE;
		}
		if (fr->line_len == 0)
			return ps_bad(fr);
		if (c == ';' || c == ' ' || c == '\t') {
			fr->state = PS_FS_CHUNK_EXT;
			return PS_EV_NONE;
		}
		if (c != '\r')
			return ps_bad(fr);
		fr->state = PS_FS_CHUNK_SIZE_LF;
		return PS_EV_NONE;
	case PS_FS_CHUNK_EXT:
		if (c == '\r') {
			fr->state = PS_FS_CHUNK_SIZE_LF;
			return PS_EV_NONE;
		}
		return ps_is_field_byte(c) ? PS_EV_NONE : ps_bad(fr);
	case PS_FS_CHUNK_SIZE_LF:
		if (c != '\n')
			return ps_bad(fr);
		fr->line_len = 0;
		fr->state = fr->remaining ? PS_FS_CHUNK_DATA : PS_FS_TRAILER_START;
		return PS_EV_NONE;
	case PS_FS_CHUNK_CR:
		if (c != '\r')
			return ps_bad(fr);
		fr->state = PS_FS_CHUNK_LF;
		return PS_EV_NONE;
	case PS_FS_CHUNK_LF:
		if (c != '\n')
			return ps_bad(fr);
		fr->state = PS_FS_CHUNK_SIZE;
		return PS_EV_NONE;
	case PS_FS_TRAILER_START:
		if (c == '\r') {
			fr->state = PS_FS_END_LF;
			return PS_EV_NONE;
		}
		if (!ps_is_tchar(c))
			return ps_bad(fr);
		fr->state = PS_FS_TRAILER;
		return PS_EV_NONE;
	case PS_FS_TRAILER:
		if (c == '\r') {
			fr->state = PS_FS_TRAILER_LF;
			return PS_EV_NONE;
		}
		return ps_is_field_byte(c) ? PS_EV_NONE : ps_bad(fr);
	case PS_FS_TRAILER_LF:
		if (c != '\n')
			return ps_bad(fr);
		fr->state = PS_FS_TRAILER_START;
		return PS_EV_NONE;
	case PS_FS_END_LF:
		if (c != '\n')
			return ps_bad(fr);
		ps_frame_next(fr);
		return PS_EV_MSG_END;
	}
	return ps_bad(fr);
}

/*
 * Feed one byte outside a body. `path` (may be NULL) receives the first
 * PS_FRAME_PATH_MAX bytes of a request target's path.
 */
static __always_inline int ps_frame_byte(struct ps_frame *fr, __u8 c, __u8 *path)
{
	__u8 st = fr->state;

	if (st >= PS_FS_CHUNK_SIZE) {
		if (st == PS_FS_ERROR)
			return PS_EV_ERROR;
		return ps_chunk_byte(fr, c);
	}

	if (++fr->head_len > fr->head_max)
		return ps_frame_error(fr, fr->kind == PS_FRAME_REQUEST ? 431 : 502);

	switch (st) {
	case PS_FS_START:
		if (fr->kind == PS_FRAME_REQUEST) {
			/* RFC 9112 2.2: ignore empty lines before a request */
			if (c == '\r') {
				fr->state = PS_FS_START_LF;
				return PS_EV_NONE;
			}
			fr->state = PS_FS_METHOD;
			return ps_method_byte(fr, c);
		}
		fr->state = PS_FS_VERSION;
		fr->flags &= PS_FF_REQ_HEAD;
		fr->status = 0;
		return ps_version_byte(fr, c);
	case PS_FS_START_LF:
		if (c != '\n')
			return ps_frame_error(fr, 400);
		fr->state = PS_FS_START;
		fr->head_len = 0;
		return PS_EV_NONE;
	case PS_FS_METHOD:
		return ps_method_byte(fr, c);
	case PS_FS_TARGET:
		if (c == '/') {
			fr->state = PS_FS_PATH;
			return ps_path_byte(fr, c, path);
		}
		if (c == '*') {
			fr->state = PS_FS_ASTERISK;
			return PS_EV_NONE;
		}
		if ((ps_lower(c) >= 'a' && ps_lower(c) <= 'z')) {
			fr->flags |= PS_FF_ABSOLUTE;
			fr->state = PS_FS_ABS_SCHEME;
			return PS_EV_NONE;
		}
		return ps_frame_error(fr, 400);
	case PS_FS_ABS_SCHEME:
		if (c == ':') {
			fr->state = PS_FS_ABS_SLASH;
			fr->pos = 0;
			return PS_EV_NONE;
		}
		if ((ps_lower(c) >= 'a' && ps_lower(c) <= 'z') || (c >= '0' && c <= '9') ||
		    c == '+' || c == '-' || c == '.')
			return PS_EV_NONE;
		return ps_frame_error(fr, 400);
	case PS_FS_ABS_SLASH:
		if (c != '/')
			return ps_frame_error(fr, 400);
		if (++fr->pos == 2)
			fr->state = PS_FS_ABS_AUTH;
		return PS_EV_NONE;
	case PS_FS_ABS_AUTH:
		if (c == '/') {
			fr->state = PS_FS_PATH;
			return ps_path_byte(fr, c, path);
		}
		if (c == ' ' || c == '?') {
			fr->state = c == ' ' ? PS_FS_VERSION : PS_FS_QUERY;
			fr->pos = 0;
			return ps_path_root(fr, path);
		}
		if (!ps_is_vchar(c) || c == '#')
			return ps_frame_error(fr, 400);
		return PS_EV_NONE;
	case PS_FS_PATH:
		return ps_path_byte(fr, c, path);
	case PS_FS_QUERY:
		if (c == ' ') {
			fr->state = PS_FS_VERSION;
			fr->pos = 0;
			return PS_EV_NONE;
		}
		if (!ps_is_vchar(c) || c == '#')
			return ps_frame_error(fr, 400);
		return PS_EV_NONE;
	case PS_FS_ASTERISK:
		if (c != ' ')
			return ps_frame_error(fr, 400);
		fr->state = PS_FS_VERSION;
		fr->pos = 0;
		return PS_EV_PATH_END;
	case PS_FS_VERSION:
		return ps_version_byte(fr, c);
	case PS_FS_STATUS:
		if (fr->pos == 3) {
			if (c == ' ') {
				fr->state = PS_FS_REASON;
				return PS_EV_NONE;
			}
			if (c == '\r') {
				fr->state = PS_FS_LINE_LF;
				return PS_EV_NONE;
			}
			return ps_bad(fr);
		}
		if (c < '0' || c > '9' || (fr->pos == 0 && c == '0'))
			return ps_bad(fr);
		fr->status = fr->status * 10 + (c - '0');
		fr->pos++;
		return PS_EV_NONE;
	case PS_FS_REASON:
		if (c == '\r') {
			fr->state = PS_FS_LINE_LF;
			return PS_EV_NONE;
		}
		return ps_is_field_byte(c) ? PS_EV_NONE : ps_bad(fr);
	case PS_FS_LINE_LF:
		if (c != '\n')
			return ps_bad(fr);
		fr->state = PS_FS_HDR_START;
		fr->pos = 0;
		return PS_EV_NONE;
	case PS_FS_HDR_START:
		if (c == '\r') {
			fr->state = PS_FS_HEAD_LF;
			return PS_EV_NONE;
		}
		/* obs-fold and whitespace before a name are refused (RFC 9112 5.2) */
		if (!ps_is_tchar(c))
			return ps_bad(fr);
		fr->state = PS_FS_HDR_NAME;
		fr->pos = 0;
		ps_name_byte(fr, c);
		return PS_EV_NONE;
	case PS_FS_HDR_NAME:
		if (c == ':') {
			ps_name_end(fr);
			return PS_EV_NONE;
		}
		if (!ps_is_tchar(c))
			return ps_bad(fr);
		if (fr->pos < 0xff)
			ps_name_byte(fr, c);
		return PS_EV_NONE;
	case PS_FS_HDR_VALUE:
		if (c == '\r') {
			fr->state = PS_FS_HDR_LF;
			return ps_header_end(fr);
		}
		return ps_value_byte(fr, c);
	case PS_FS_HDR_LF:
		if (c != '\n')
			return ps_bad(fr);
		fr->state = PS_FS_HDR_START;
		return PS_EV_NONE;
	case PS_FS_HEAD_LF:
		if (c != '\n')
			return ps_bad(fr);
		return ps_head_end(fr);
	}
	return ps_bad(fr);
}

/*
 * The common bytes whose effect is simple: the lines of headers the framer
 * does not look into, "HTTP/1." and the status, the digits of Content-Length,
 * the tokens of Connection and Transfer-Encoding, the reason phrase, the
 * query, and path bytes between segment boundaries. Consumes `c` and returns
 * non-zero when it is one of them, leaving the state exactly as
 * ps_frame_byte() would (2 when it starts a header value that words can
 * take); 0 when ps_frame_byte() must take it.
 */
static __always_inline int ps_frame_fast(struct ps_frame *fr, __u8 c, __u8 *path)
{
	if (fr->head_len >= fr->head_max)
		return 0;
	switch (fr->state) {
	case PS_FS_HDR_VALUE:
		if (fr->hdr == PS_H_CONTENT_LENGTH) {
			__u64 v = fr->remaining * 10 + (c - '0');

			/* digits of a Content-Length still being read */
			if (c < '0' || c > '9' || fr->val_state == 2 || v > PS_FRAME_CL_MAX)
				return 0;
			fr->val_state = 1;
			fr->remaining = v;
			break;
		}
		if (fr->hdr != PS_H_OTHER) {
			/* token bytes of Connection and Transfer-Encoding */
			if (c == ',' || c == ' ' || c == '\t' || !ps_is_field_byte(c) ||
			    fr->val_state == 2 || fr->hdr == PS_H_UPGRADE)
				return 0;
			fr->val_state = 1;
			ps_tok_byte(fr, c);
			break;
		}
		if (c == '\r') {
			/* the end of a header the framer does not look into */
			fr->state = PS_FS_HDR_LF;
			fr->pos = 0;
		} else if (!ps_is_field_byte(c)) {
			return 0;
		}
		break;
	case PS_FS_VERSION:
		/* "HTTP/1." */
		if (fr->pos >= 7 || c != ps_hdr_char(PS_W_PROTO, fr->pos))
			return 0;
		fr->pos++;
		break;
	case PS_FS_STATUS:
		if (fr->pos >= 3 || c < '0' || c > '9' || (fr->pos == 0 && c == '0'))
			return 0;
		fr->status = fr->status * 10 + (c - '0');
		fr->pos++;
		break;
	case PS_FS_HDR_LF:
		if (c != '\n')
			return 0;
		fr->state = PS_FS_HDR_START;
		break;
	case PS_FS_HDR_START:
		if (!ps_is_tchar(c))
			return 0;
		fr->state = PS_FS_HDR_NAME;
		fr->pos = 0;
		ps_name_byte(fr, c);
		break;
	case PS_FS_HDR_NAME:
		if (c == ':' && fr->cand == PS_H_OTHER) {
			ps_name_end(fr);
			fr->head_len++;
			return 2;
		}
		if (!ps_is_tchar(c))
			return 0;
		if (fr->pos < 0xff)
			ps_name_byte(fr, c);
		break;
	case PS_FS_PATH:
		if (!ps_is_vchar(c) || c == '/' || c == '?' || c == '#')
			return 0;
		if (path && fr->path_len < PS_FRAME_PATH_MAX)
			path[fr->path_len & (PS_FRAME_PATH_MAX - 1)] = c;
		fr->hash = (fr->hash ^ c) * 0x100000001b3ULL;
		fr->path_len++;
		break;
	case PS_FS_REASON:
		if (c == '\r' || !ps_is_field_byte(c))
			return 0;
		break;
	case PS_FS_QUERY:
		if (!ps_is_vchar(c) || c == '#')
			return 0;
		break;
	default:
		return 0;
	}
	fr->head_len++;
	return 1;
}

/*
 * Eight bytes at a time over the runs that are only validated: a header value
 * the framer does not look into, the reason phrase, the query. The word tests
 * are exact as booleans (a borrow only ever follows a byte already found).
 */
#define PS_W_ONES	0x0101010101010101ULL
#define PS_W_HIGHS	0x8080808080808080ULL

/* Some byte of x is below b (b <= 0x80; bytes >= 0x80 never count). */
static __always_inline __u64 ps_word_below(__u64 x, __u8 b)
{
	return (x - PS_W_ONES * b) & ~x & PS_W_HIGHS;
}

/* Some byte of x is b. */
static __always_inline __u64 ps_word_has(__u64 x, __u8 b)
{
	return ps_word_below(x ^ (PS_W_ONES * b), 1);
}

static __always_inline __u64 ps_word_at(const __u8 *p)
{
#ifdef __bpf__
	return *(const __u64 *)p;	/* BPF loads need no alignment on this path */
#else
	__u64 x;

	__builtin_memcpy(&x, p, sizeof(x));
	return x;
#endif
}

/* Which word test the state allows: 0 none (bytes one at a time). */
#define PS_WORDS_FIELD	1	/* header value the framer ignores, reason phrase */
#define PS_WORDS_QUERY	2
static __always_inline int ps_frame_word_class(const struct ps_frame *fr)
{
	switch (fr->state) {
	case PS_FS_HDR_VALUE:
		return fr->hdr == PS_H_OTHER ? PS_WORDS_FIELD : 0;
	case PS_FS_REASON:
		return PS_WORDS_FIELD;
	case PS_FS_QUERY:
		return PS_WORDS_QUERY;
	}
	return 0;
}

/* None of the eight bytes in x ends the run or is refused: ps_frame_fast()
 * would take each of them and stay in the state it is in. */
static __always_inline int ps_word_plain(int cls, __u64 x)
{
	if (cls == PS_WORDS_QUERY)	/* visible ASCII other than '#' */
		return !(ps_word_below(x, 0x21) | (x & PS_W_HIGHS) | ps_word_has(x, 0x7f) |
			 ps_word_has(x, '#'));
	/* field bytes other than tab, which ps_frame_fast() takes alone */
	return !(ps_word_below(x, 0x20) | ps_word_has(x, 0x7f));
}

/* Skip whole words of buf[i..n) that ps_word_plain() passes; returns the
 * new i. At most PS_FRAME_WORDS_MAX words. A caller whose buffers are never
 * longer than some constant defines PS_FRAME_BUF_MAX to it, as BPF must for
 * the verifier to see the loads in bounds. */
#define PS_FRAME_WORDS_MAX	32
#ifndef PS_FRAME_BUF_MAX
#define PS_FRAME_BUF_MAX	0xffffffffu
#endif
static __always_inline __u32 ps_frame_words(struct ps_frame *fr, const __u8 *buf, __u32 n,
					    __u32 i)
{
	int cls = ps_frame_word_class(fr);
	__u32 k;

	if (!cls)
		return i;
	for (k = 0; k < PS_FRAME_WORDS_MAX; k++) {
		ps_barrier_var(i);
		if (n < 8 || i > n - 8 || i > PS_FRAME_BUF_MAX - 8 ||
		    fr->head_len + 8 > fr->head_max)
			break;
		if (!ps_word_plain(cls, ps_word_at(buf + i)))
			break;
		i += 8;
		fr->head_len += 8;
	}
	return i;
}

/* The BPF side makes ps_frame_words() a global function of its own. */
#ifndef ps_frame_skip_words
#define ps_frame_skip_words(fr, buf, n, i) ps_frame_words(fr, buf, n, i)
#endif

/* The BPF side makes ps_frame_byte() a global function, which the verifier
 * checks once instead of once per loop iteration. */
#ifndef ps_frame_slow_byte
#define ps_frame_slow_byte(fr, c, path) ps_frame_byte(fr, c, path)
#endif

/*
 * Feed buf[*pos..n) until an event, the start of a body, the end of the
 * buffer or `steps` steps of one byte (and the words that follow it); returns
 * the event and moves *pos past the bytes consumed. Exactly the same as
 * feeding them one at a time to ps_frame_byte(), only faster over the bytes
 * the framer merely validates.
 */
static __always_inline int ps_frame_steps(struct ps_frame *fr, const __u8 *buf, __u32 n,
					  __u32 *pos, __u8 *path, const __u32 steps)
{
	__u32 i = *pos, k;
	int ev = PS_EV_NONE;

	if (ps_frame_word_class(fr))
		i = ps_frame_skip_words(fr, buf, n, i);
	for (k = 0; k < steps; k++) {
		int fast;
		__u8 c;

		if (i >= n || ps_frame_in_body(fr))
			break;
		c = buf[i++];
		fast = ps_frame_fast(fr, c, path);
		if (fast == 1)
			continue;
		if (!fast) {
			ev = ps_frame_slow_byte(fr, c, path);
			if (ev != PS_EV_NONE)
				break;
			if (!ps_frame_word_class(fr))
				continue;
		}
		/* a run that words can take starts */
		i = ps_frame_skip_words(fr, buf, n, i);
	}
	*pos = i;
	return ev;
}

#define PS_FRAME_RUN_MAX	256

/* ps_frame_steps() with a bound fit for userspace buffers. */
static __always_inline int ps_frame_run(struct ps_frame *fr, const __u8 *buf, __u32 n,
					__u32 *pos, __u8 *path)
{
	return ps_frame_steps(fr, buf, n, pos, path, PS_FRAME_RUN_MAX);
}

#endif /* HTTP_FRAME_H */
