// SPDX-License-Identifier: GPL-2.0
/*
 * The kernel data path: one sk_skb stream verdict for every spliced socket.
 *
 * For each segment arriving on a client or backend socket it
 *  - frames the HTTP messages in it (include/http_frame.h, the same code the
 *    userspace relay runs), checks that every request starting in it routes
 *    to the service the connection is spliced to, and counts requests and
 *    responses;
 *  - redirects the segment to the peer socket when it may, or hands the
 *    socket back to userspace (SK_PASS, mode USER) when it must not:
 *    a request for another service, bytes it does not frame, a request line
 *    cut by the segment boundary, or a peer that is not draining (flow
 *    control: the bytes queued for the peer beyond its socket stay bounded).
 *
 * For same-host instances two more programs skip the daemon's loopback
 * connection to the instance where that is safe (see pathsplice.h):
 *  - ps_sockops, on the cgroup v2 root, puts the instance's end of each
 *    connection the daemon makes into the `backends` sockhash;
 *  - ps_response, sk_msg on those sockets, sends a response from the
 *    instance's sendmsg straight into the client socket;
 *  and the verdict puts whole body-free requests straight into the
 *  instance's socket.
 *
 * The ownership protocol is described with struct ps_conn in pathsplice.h.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct ps_frame;
struct ps_path;
int frame_byte(struct ps_frame *fr, struct ps_path *path, __u32 c);
#define ps_frame_slow_byte(fr, c, path) frame_byte(fr, (struct ps_path *)(path), c)
#define CHUNK		128	/* bytes the framer sees per load */
#define PS_FRAME_BUF_MAX CHUNK
struct ps_chunk_bytes;
__u32 frame_words(struct ps_frame *fr, const struct ps_chunk_bytes *b, __u32 n, __u32 i);
#define ps_frame_skip_words(fr, buf, n, i) \
	frame_words(fr, (const struct ps_chunk_bytes *)(buf), n, i)

#include "pathsplice.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load. */
const volatile __u64 fc_limit = 256 << 10;	/* bytes queued for a peer before hand-back */
const volatile __u32 parse_budget = 4096;	/* loop steps per segment */
const volatile __u32 take_callers = 1;		/* --direct-callers */

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, PS_DEFAULT_MAX_CONNS);
	__type(key, __u32);		/* conns index */
	__type(value, __u64);		/* socket cookie */
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PS_DEFAULT_MAX_CONNS);
	__type(key, __u64);		/* socket cookie */
	__type(value, __u32);		/* conns index */
} conn_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PS_DEFAULT_MAX_CONNS);
	__type(key, __u32);
	__type(value, struct ps_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* elements freed after an RCU grace period: a record replaced by the
	 * controller is never reused under a verdict that is still reading it */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, PS_MAX_SERVICES);
	__type(key, __u64);		/* ps_path_hash(path) */
	__type(value, struct ps_service);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PS_MAX_INSTANCES);
	__type(key, __u32);
	__type(value, struct ps_instance);
} instances SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PS_MAX_SERVICES);
	__type(key, __u32);		/* ps_service.id */
	__type(value, __u64);		/* round-robin position */
} rr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PS_MAX_INSTANCES);
	__type(key, __u32);
	__type(value, struct ps_inst_stats);
} inst_stats SEC(".maps");


/* Direct responses (see pathsplice.h): the backends' own sockets of the
 * connections the proxy made to same-host instances, keyed by the cookie of
 * the proxy's socket, with the sk_msg program attached. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, PS_DEFAULT_MAX_CONNS);
	__type(key, __u64);		/* cookie of the proxy's socket */
	__type(value, __u64);		/* socket cookie */
} backends SEC(".maps");

/* On a backend's socket: the cookie of the proxy socket at its other end. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} backend_owner SEC(".maps");

/* Connections between their connect completing and the accept: the proxy's
 * to a backend, and a caller's to the proxy. What the accepting end sees. */
struct ps_tuple {
	__u32 server_ip;		/* network order */
	__u32 client_ip;
	__u16 server_port;		/* host order */
	__u16 client_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ps_tuple);
	__type(value, __u64);		/* cookie of the connecting socket */
} connecting SEC(".maps");

/* Same-host callers (see pathsplice.h): the proxy's listening addresses,
 * with the network namespace they are in; only callers there are taken. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct ps_listen);
	__type(value, __u64);		/* network namespace cookie */
} listeners SEC(".maps");

/* The callers' own sockets, with the request sk_msg program attached. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, PS_DEFAULT_MAX_CONNS);
	__type(key, __u64);		/* the caller socket's cookie */
	__type(value, __u64);
} callers SEC(".maps");

/* On a caller's socket. */
struct ps_caller {
	__u64 self;			/* its cookie */
	__u64 owner;			/* cookie of the proxy's socket at the other end */
	__u64 leg_sent;			/* bytes it sent through TCP */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ps_caller);
} caller_state SEC(".maps");

/* Accepted, not yet seen by the caller's program: caller cookie -> owner. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} caller_owner SEC(".maps");

/* Hand-backs, for the daemon. It does not watch a socket the kernel owns
 * for readability: the socket reports every segment its verdict moves away,
 * and that would wake the daemon once per request for nothing. So the
 * verdict tells it here when it gives a socket back: one record per
 * hand-back, the socket's conns index (__u32). Sized by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} handbacks SEC(".maps");

/* Hand-backs the ring had no room for: the daemon then looks at every
 * spliced socket. */
__u64 handbacks_lost;

#define barrier()		asm volatile("" ::: "memory")
#define READ_ONCE(x)		(*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v)	(*(volatile typeof(x) *)&(x) = (v))

#define NO_MSG		(~0U)

/* One verdict run over one segment. The framer works on a copy that is
 * committed only if the whole segment is forwarded, or up to the message a
 * hand-back starts at.
 *
 * The walk lives in a per-CPU map, not on the stack: the verifier does not
 * track map memory, so the loop below converges after one pass instead of
 * being explored once per possible offset. A verdict run in process context
 * (the kick after insertion) can be interrupted by one in softirq on the
 * same CPU, hence two walks per CPU. */
struct walk {
	__u32 off;		/* next byte to look at */
	__u32 len;
	__u32 msg_off;		/* where the message being read began in this segment */
	__u32 msgs;		/* working copies of c->msgs, c->head_bits */
	__u64 head_bits;
	__u32 m_msgs;		/* ... as they were at msg_off */
	__u32 buf_off;		/* segment offset of ch.buf[0] */
	__u64 m_head_bits;
	__s32 best;		/* longest-prefix service id so far, -1 none */
	__u32 handback;		/* enum ps_handback, set to stop */
	__u32 hb_at_msg;	/* hand back at msg_off rather than at the segment start */
	__u32 body;		/* the segment holds body bytes */
	struct ps_frame fr;
	struct ps_chunk {
		__u32 n;	/* bytes in buf */
		__u32 pos;	/* next byte to frame */
		__u8 buf[CHUNK];
	} ch;
};

struct scratch {
	__u32 depth;
	__u32 pad;
	struct walk w[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* What the loop callback needs that the verifier must see as pointers. */
struct walk_ctx {
	struct __sk_buff *skb;		/* the segment, for the verdict */
	struct sk_msg_md *msg;		/* or the message, for the sk_msg program */
	struct ps_conn *c;
	struct ps_conn *p;
	struct walk *w;
};

/* The framer and the route lookup are global functions: the verifier checks
 * each once, on its own, instead of along every path of the walk. */
struct ps_path {
	__u8 b[PS_PATH_MAX];
};

/* One byte of the framer, for the bytes its fast path does not take. */
__noinline int frame_byte(struct ps_frame *fr, struct ps_path *path, __u32 c)
{
	if (!fr || !path)
		return PS_EV_ERROR;
	return ps_frame_byte(fr, (__u8)c, path->b);
}

/* Whole words of a header value, reason phrase or query. */
struct ps_chunk_bytes {
	__u8 b[CHUNK];
};

__noinline __u32 frame_words(struct ps_frame *fr, const struct ps_chunk_bytes *b, __u32 n,
			     __u32 i)
{
	if (!fr || !b)
		return i;
	return ps_frame_words(fr, b->b, n < CHUNK ? n : CHUNK, i);
}

/*
 * Frame the chunk from ch->pos to an event, a body or its end.
 *
 * An open-coded iterator (Linux >= 6.4) drives runs of FRAME_STEPS bytes:
 * the verifier checks a loop over an iterator until its states converge,
 * where it walks a plain bounded loop once per iteration along every path
 * the framer can take. Measured on this framer: 4.5 s of verification per
 * program with one bounded loop over the chunk, 0.2 s like this.
 */
#define FRAME_STEPS	4

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

__noinline int frame_chunk(struct ps_frame *fr, struct ps_path *path, struct ps_chunk *ch)
{
	struct bpf_iter_num it;
	int ev = PS_EV_NONE;
	__u32 n;

	if (!fr || !path || !ch)
		return PS_EV_ERROR;
	n = ch->n < CHUNK ? ch->n : CHUNK;
	bpf_iter_num_new(&it, 0, CHUNK / FRAME_STEPS);
	while (bpf_iter_num_next(&it)) {
		ev = ps_frame_steps(fr, ch->buf, n, &ch->pos, path->b, FRAME_STEPS);
		if (ev != PS_EV_NONE || ch->pos >= n || ps_frame_in_body(fr))
			break;
	}
	bpf_iter_num_destroy(&it);
	return ev;
}

/* The service whose path is exactly path[0..n), or -1. */
__noinline int route_lookup(__u64 hash, __u32 n, struct ps_path *path)
{
	struct ps_service *svc;

	if (!path || n == 0 || n >= PS_PATH_MAX)
		return -1;
	svc = bpf_map_lookup_elem(&services, &hash);
	if (!svc || svc->path_len != n)
		return -1;
	for (__u32 i = 0; i < PS_PATH_MAX; i++) {
		if (i >= n)
			return svc->id;
		if ((__u8)svc->path[i] != path->b[i])
			return -1;
	}
	return svc->id;
}

/* A candidate prefix of the request path: is it a service? */
static __always_inline void route_candidate(struct walk_ctx *x)
{
	struct walk *w = x->w;
	int id = route_lookup(w->fr.prefix_hash, w->fr.prefix_len, (struct ps_path *)x->c->path);

	if (id >= 0)
		w->best = id;
}

static __always_inline void stop(struct walk *w, __u32 reason, int at_msg)
{
	w->handback = reason;
	w->hb_at_msg = at_msg && w->msg_off != NO_MSG;
}

/* May a new request go to this instance? Not when it is down or draining:
 * userspace re-routes the request to another instance of the service. */
static __always_inline int instance_up(__u32 slot)
{
	struct ps_instance *pi = bpf_map_lookup_elem(&instances, &slot);

	return pi && pi->state == PS_INST_UP;
}

/* Messages are counted as they are framed; a message the sk_msg program
 * frames is counted when it commits (it may still leave the bytes to the
 * verdict, which would count them again). */
static __always_inline void count(struct walk_ctx *x, int response)
{
	__u32 inst = x->c->inst;
	struct ps_inst_stats *st;

	if (x->msg)
		return;
	st = bpf_map_lookup_elem(&inst_stats, &inst);
	if (!st)
		return;
	if (response)
		st->responses++;
	else
		st->requests++;
}

static __always_inline void on_event(struct walk_ctx *x, int ev)
{
	struct walk *w = x->w;
	struct ps_conn *c = x->c;

	switch (ev) {
	case PS_EV_PREFIX:
		route_candidate(x);
		break;
	case PS_EV_PATH_END:
		route_candidate(x);
		if (w->best < 0 || (__u32)w->best != c->service || !instance_up(c->inst))
			stop(w, PS_HB_SWITCH, 1);
		break;
	case PS_EV_HEAD_END:
		if (c->side == PS_SIDE_BACKEND) {
			/* a 101, a response no request asked for (every request
			 * is counted before the instance can have it), or one
			 * that says the instance closes the connection (userspace
			 * then lets the client see the close): userspace decides */
			if ((w->fr.flags & PS_FF_TUNNEL) || ps_flags_close(w->fr.flags) ||
			    w->msgs >= READ_ONCE(x->p->msgs))
				stop(w, PS_HB_FRAMING, 1);
			break;
		}
		if (w->fr.flags & (PS_FF_UPGRADE | PS_FF_CONN_UPGRADE)) {
			stop(w, PS_HB_FRAMING, 1);
			break;
		}
		/* the response side learns HEAD requests from head_bits, a ring of 64 */
		if (w->msgs - x->p->msgs >= 63) {
			stop(w, PS_HB_LIMIT, 1);
			break;
		}
		if (w->fr.flags & PS_FF_HEAD)
			w->head_bits |= 1ULL << (w->msgs & 63);
		else
			w->head_bits &= ~(1ULL << (w->msgs & 63));
		w->msgs++;
		count(x, 0);
		break;
	case PS_EV_MSG_END:
		w->msg_off = NO_MSG;
		if (c->side == PS_SIDE_BACKEND) {
			w->msgs++;
			count(x, 1);
		}
		break;
	case PS_EV_ERROR:
		stop(w, PS_HB_FRAMING, 1);
		break;
	}
}

/* Copy up to CHUNK bytes at `off` of the message into buf. */
static __always_inline int msg_load(struct sk_msg_md *msg, __u32 off, __u8 *buf, __u32 n)
{
	void *data, *end;

	n &= 2 * CHUNK - 1;
	if (n == 0 || n > CHUNK || bpf_msg_pull_data(msg, off, off + n, 0))
		return -1;
	data = (void *)(long)msg->data;
	end = (void *)(long)msg->data_end;
	if (data + n > end)
		return -1;
	return bpf_probe_read_kernel(buf, n, data);
}

/* One body span or one chunk of head bytes per step of bpf_loop. */
static __always_inline long walk_step(struct walk_ctx *x, const int is_msg)
{
	struct walk *w = x->w;
	__u32 left, k, n;
	__u64 body;
	int ev;

	if (w->handback || w->off > w->len)
		return 1;
	left = w->len - w->off;

	if (ps_frame_in_body(&w->fr)) {
		body = ps_frame_body_left(&w->fr);
		/* a body that ends exactly at the segment's end still ends here */
		if (left == 0 && body != 0)
			return 1;
		if (body > left)
			body = left;
		if (body)
			w->body = 1;
		w->off += body;
		on_event(x, ps_frame_skip(&w->fr, body));
		return 0;
	}
	if (left == 0)
		return 1;

	if (ps_frame_at_start(&w->fr) && w->msg_off == NO_MSG) {
		/* a new message begins: remember where, to hand back from here */
		w->msg_off = w->off;
		w->m_msgs = w->msgs;
		w->m_head_bits = w->head_bits;
		w->best = -1;
		if (x->c->side == PS_SIDE_BACKEND &&
		    (x->p->head_bits & (1ULL << (w->msgs & 63))))
			w->fr.flags |= PS_FF_REQ_HEAD;
	}

	k = w->off - w->buf_off;
	if (w->off < w->buf_off || k >= w->ch.n) {
		n = left < CHUNK ? left : CHUNK;
		if (is_msg ? msg_load(x->msg, w->off, w->ch.buf, n) :
			     bpf_skb_load_bytes(x->skb, w->off, w->ch.buf, n & (2 * CHUNK - 1))) {
			stop(w, PS_HB_FRAMING, 0);
			return 1;
		}
		w->buf_off = w->off;
		w->ch.n = n;
		k = 0;
	}
	w->ch.pos = k;
	ev = frame_chunk(&w->fr, (struct ps_path *)x->c->path, &w->ch);
	w->off = w->buf_off + w->ch.pos;
	on_event(x, ev);
	return 0;
}

static long walk_step_skb(__u32 i, struct walk_ctx *x)
{
	return walk_step(x, 0);
}

static long walk_step_msg(__u32 i, struct walk_ctx *x)
{
	return walk_step(x, 1);
}

static __always_inline int handback(struct __sk_buff *skb, struct ps_conn *c, __u32 self,
				    struct walk *w, __u32 reason)
{
	c->hb_reason = reason;
	if (w && w->hb_at_msg) {
		/* bytes before the message still go to the current peer; the
		 * message itself is re-read by userspace from a fresh state */
		c->hb_skip = w->msg_off;
		ps_frame_next(&c->fr);
		c->msgs = w->m_msgs;
		c->head_bits = w->m_head_bits;
	} else {
		c->hb_skip = 0;
	}
	c->handbacks++;
	c->passed += skb->len;
	barrier();	/* pairs with ps_response(): passed before the mode */
	WRITE_ONCE(c->mode, PS_MODE_USER);
	/* after the mode: the daemon that reads the record sees USER */
	if (bpf_ringbuf_output(&handbacks, &self, sizeof(self), 0))
		__sync_fetch_and_add(&handbacks_lost, 1);
	return SK_PASS;
}

/* May the peer take `len` more bytes? Returns a hand-back reason or 0.
 * A congested peer gets no more: the segment is handed back, stays charged
 * to this socket's receive memory, and TCP flow control holds the sender. */
static __always_inline __u32 peer_check(struct ps_conn *c, struct ps_conn *p, __u32 len)
{
	__u32 peer = c->peer;
	struct bpf_sock *sk;
	struct tcp_sock *tp;
	__u64 accepted, queued;
	__u32 reason = 0;

	/* the last look at the peer proved it cannot be over the limit yet */
	if (c->fwd + len <= c->fc_next)
		return 0;
	sk = bpf_map_lookup_elem(&sockets, &peer);
	if (!sk)
		return PS_HB_PEER;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || (sk->state != BPF_TCP_ESTABLISHED && sk->state != BPF_TCP_CLOSE_WAIT)) {
		reason = PS_HB_PEER;
		goto out;
	}
	/* every byte ever put into the peer socket: acked + still in its queue
	 * (the daemon made the backend's connection: TCP counts its SYN) */
	accepted = tp->bytes_acked + (__u32)(tp->write_seq - tp->snd_una) -
		   (p->side == PS_SIDE_BACKEND);
	queued = p->out_base + c->fwd - c->ingress - accepted;
	if ((__s64)queued < 0)
		queued = 0;
	if (queued + len > fc_limit)
		reason = PS_HB_CONGESTED;
	else	/* even if the peer drains nothing, it takes this much more */
		c->fc_next = c->fwd + fc_limit - queued;
out:
	bpf_sk_release(sk);
	return reason;
}

/* Frame a segment (skb) or a message (msg) of len bytes; returns 0 to
 * forward it, or a hand-back reason. */
static __always_inline __u32 walk_segment(struct __sk_buff *skb, struct sk_msg_md *msg,
					  const int is_msg, __u32 len, struct ps_conn *c,
					  struct ps_conn *p, struct walk *w)
{
	struct walk_ctx x = { .skb = skb, .msg = msg, .c = c, .p = p, .w = w };
	long ret;

	w->off = 0;
	w->len = len;
	w->msg_off = NO_MSG;
	w->msgs = c->msgs;
	w->head_bits = c->head_bits;
	w->buf_off = 0;
	w->ch.n = 0;
	w->best = -1;
	w->handback = 0;
	w->hb_at_msg = 0;
	w->body = 0;
	__builtin_memcpy(&w->fr, &c->fr, sizeof(w->fr));

	if (is_msg)
		ret = bpf_loop(parse_budget, walk_step_msg, &x, 0);
	else
		ret = bpf_loop(parse_budget, walk_step_skb, &x, 0);
	if (!w->handback) {
		if (ret < 0 || w->off < w->len)
			stop(w, PS_HB_LIMIT, 1);
		else if (c->side == PS_SIDE_CLIENT && ps_frame_before_route(&w->fr))
			/* the service of this request is not known yet */
			stop(w, PS_HB_PARTIAL, 1);
		else if (c->side == PS_SIDE_BACKEND && ps_frame_in_head(&w->fr))
			/* a response head goes on whole, so that userspace can
			 * still answer 502 for it if it turns out broken */
			stop(w, PS_HB_PARTIAL, 1);
	}
	return w->handback;
}

/* Where a client segment that may be forwarded goes. */
enum req_path { REQ_LEG, REQ_DIRECT, REQ_WAIT };

/* Has the instance read every byte the TCP connection to it carried, with
 * room in its receive buffer for `len` more? */
static __always_inline int instance_ready(struct ps_conn *c, struct ps_conn *p, __u32 len)
{
	__u64 cookie = p->cookie;
	__u32 peer = c->peer;
	struct bpf_sock *sk;
	struct tcp_sock *tp;
	int ok = 0;

	/* the daemon's socket: nothing queued for it, nothing unacknowledged
	 * (it made the connection: its SYN is one of the bytes acked) */
	sk = bpf_map_lookup_elem(&sockets, &peer);
	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	ok = tp && tp->write_seq == tp->snd_una &&
	     tp->bytes_acked - 1 >= p->out_base + c->fwd - c->ingress;
	bpf_sk_release(sk);
	if (!ok)
		return 0;
	/* the instance's socket: nothing unread, and room */
	sk = bpf_map_lookup_elem(&backends, &cookie);
	if (!sk)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	ok = tp && sk->state == BPF_TCP_ESTABLISHED && tp->copied_seq == tp->rcv_nxt &&
	     tp->inet_conn.icsk_inet.sk.sk_backlog.rmem_alloc.counter + 2 * (__s64)len + 4096 <=
	     tp->inet_conn.icsk_inet.sk.sk_rcvbuf;
	bpf_sk_release(sk);
	return ok;
}

/* Whole requests without a body go straight into a same-host instance's
 * socket when that cannot reorder them (see pathsplice.h); the rest take the
 * TCP connection, once nothing sent straight is still unanswered. */
static __always_inline enum req_path request_path(struct ps_conn *c, struct ps_conn *p,
						  struct walk *w, __u32 len)
{
	if (!READ_ONCE(p->direct_ok))
		return REQ_LEG;
	if (!w->body && w->msgs != c->msgs && ps_frame_at_start(&w->fr) &&
	    instance_ready(c, p, len))
		return REQ_DIRECT;
	return (__s32)(c->ingress_upto - READ_ONCE(p->msgs)) > 0 ? REQ_WAIT : REQ_LEG;
}

static __always_inline int forward(struct __sk_buff *skb, struct ps_conn *c, __u32 self,
				   struct ps_conn *p, struct walk *w, int direct)
{
	__u32 peer = c->peer, inst = c->inst;
	__u32 msgs = c->msgs;
	__u64 head_bits = c->head_bits, cookie = p->cookie;
	struct ps_inst_stats *st;
	long ret;

	/* publish the requests before the backend can possibly answer them */
	c->msgs = w->msgs;
	c->head_bits = w->head_bits;
	if (direct)
		ret = bpf_sk_redirect_hash(skb, &backends, &cookie, BPF_F_INGRESS);
	else
		ret = bpf_sk_redirect_hash(skb, &sockets, &peer, 0);
	if (ret != SK_PASS) {
		/* the peer left between the check and the redirect */
		c->msgs = msgs;
		c->head_bits = head_bits;
		return handback(skb, c, self, NULL, PS_HB_PEER);
	}
	__builtin_memcpy(&c->fr, &w->fr, sizeof(w->fr));
	c->fwd += skb->len;
	if (direct) {
		c->ingress += skb->len;
		c->ingress_upto = w->msgs;
	}
	st = bpf_map_lookup_elem(&inst_stats, &inst);
	if (st) {
		if (c->side == PS_SIDE_CLIENT)
			st->req_bytes += skb->len;
		else
			st->resp_bytes += skb->len;
		if (direct)
			st->direct_req_bytes += skb->len;
	}
	return SK_PASS;
}

/* Note how a client socket stands, for the sk_msg program's client_ready():
 * the verdict when a segment of requests comes, and sockops at each ACK the
 * client sends (clean_only: only when no byte is on its way into the socket,
 * a look the verdict cannot take in the middle of a response). */
static __always_inline void client_snapshot(struct bpf_sock *sk, struct ps_conn *c,
					    struct ps_conn *p, const int clean_only)
{
	struct tcp_sock *tp;
	__u64 written, accepted;

	if (!sk || !READ_ONCE(p->direct_ok))
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	/* written before the socket and direct after it: a push racing with
	 * this look is then counted against room twice and towards accepted
	 * not at all, never the other way round */
	written = c->out_base + READ_ONCE(p->fwd);
	accepted = tp->bytes_acked + (__u32)(tp->write_seq - tp->snd_una);
	/* a push or the TCP leg's bytes on their way in: with such a look
	 * client_ready() would refuse until the next one, so an ACK keeps the
	 * look there is */
	if (clean_only && accepted < written)
		return;
	WRITE_ONCE(c->snap_seq, c->snap_seq + 1);
	c->snap_accepted = accepted;
	c->snap_room = (__s64)tp->inet_conn.icsk_inet.sk.sk_sndbuf -
		       tp->inet_conn.icsk_inet.sk.sk_wmem_queued;
	c->snap_written = written;
	c->snap_direct = READ_ONCE(p->direct);
	WRITE_ONCE(c->snap_seq, c->snap_seq + 1);
}

/*
 * The stream verdicts see each segment whole, as tcp_read_skb() takes it off
 * the receive queue. But TCP queues a retransmitted segment that overlaps
 * bytes already received (seq < rcv_nxt < end_seq) untrimmed, and leaves
 * skipping the overlap to the reader: tcp_recvmsg() does, from copied_seq;
 * tcp_read_skb() does not, and the verdict would see those bytes twice
 * (Linux 6.18: a slow reader's socket under receive-memory pressure drops
 * segments, and a 261932-byte retransmission came back starting with the
 * 65483 bytes passed on before it). So each socket keeps the sequence number
 * its verdict expects next, and whatever comes before it is cut off here.
 *
 * The daemon's sockets keep theirs in struct ps_conn; the instances' sockets
 * in inst_rxs, by cookie (sk_skb programs get no socket storage), with the
 * proxy socket at the other end, for the counters. Sized by userspace.
 */
struct inst_rx {
	struct ps_rx_seq seq;
	__u64 owner;			/* backend_owner */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PS_DEFAULT_MAX_CONNS);
	__type(key, __u64);		/* the instance socket's cookie */
	__type(value, struct inst_rx);
} inst_rxs SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

#define RX_CUT_STEP	4095	/* most bpf_skb_adjust_room() removes per call */
#define RX_CUT_STEPS	256

enum rx_order { RX_NEW, RX_OLD, RX_UNCUT };

struct rx_cut {
	struct __sk_buff *skb;
	__u32 left;			/* bytes still to cut off the front */
};

/* One step of bpf_loop: cut what one bpf_skb_adjust_room() call may. */
static long rx_cut_step(__u32 i, struct rx_cut *x)
{
	__u32 step = x->left < RX_CUT_STEP ? x->left : RX_CUT_STEP;

	if (!step || bpf_skb_adjust_room(x->skb, -(__s32)step, 0, 0))
		return 1;
	x->left -= step;
	return 0;
}

/* Cut off what the socket's verdict has seen before, by *rs (*cut: how many
 * bytes). RX_NEW: go on with what is left; RX_OLD: nothing new, drop it;
 * RX_UNCUT: the segment could not be cut, and is dropped too (counted: data
 * lost). Verdict runs on one socket never overlap (tcp_read_skb() runs under
 * the socket's lock): *rs is theirs alone. */
static __always_inline enum rx_order rx_in_order(struct __sk_buff *skb, struct ps_rx_seq *rs,
						 __u32 *cut)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct tcp_skb_cb *cb = (struct tcp_skb_cb *)kskb->cb;
	struct bpf_sock *sk = skb->sk;
	struct tcp_sock *tp;
	struct rx_cut x;
	__u32 seq, end, left;

	*cut = 0;
	seq = cb->seq;
	end = cb->end_seq;
	if (!rs->known) {
		/* the first segment: the reader may have read into it before
		 * the socket had a verdict */
		tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;
		rs->next = tp && (__s32)(tp->copied_seq - seq) > 0 &&
			   (__s32)(end - tp->copied_seq) > 0 ? tp->copied_seq : seq;
		rs->known = 1;
	}
	left = rs->next - seq;
	if ((__s32)(end - rs->next) > 0)
		rs->next = end;
	if ((__s32)left <= 0)
		return RX_NEW;
	/* even a segment that is all old is cut, to nothing: the verdict's
	 * caller counts what it drops as read (tcp_eat_skb(), copied_seq) */
	x.skb = skb;
	x.left = left < skb->len ? left : skb->len;
	*cut = x.left;
	bpf_loop(RX_CUT_STEPS, rx_cut_step, &x, 0);
	if (x.left)
		return RX_UNCUT;
	return skb->len ? RX_NEW : RX_OLD;
}

/* Count what rx_in_order() cut for the instance in slot `inst`. */
static __always_inline void rx_count(__u32 inst, enum rx_order order, __u32 cut)
{
	struct ps_inst_stats *st = bpf_map_lookup_elem(&inst_stats, &inst);

	if (!st)
		return;
	st->rx_cut_bytes += cut;
	if (order == RX_UNCUT)
		st->rx_uncut++;
}

/* USER mode: pass the segment on, unless userspace armed the kernel and has
 * read every byte passed so far. Returns 1 if the kernel takes over. */
static __always_inline int take_over(struct ps_conn *c, __u32 len)
{
	__u64 arm = READ_ONCE(c->arm);

	if (arm != c->passed + 1 || __sync_val_compare_and_swap(&c->arm, arm, 0) != arm) {
		c->passed += len;
		return 0;
	}
	WRITE_ONCE(c->mode, PS_MODE_KERNEL);
	return 1;
}

SEC("sk_skb/stream_verdict")
int ps_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct ps_conn *c, *p;
	struct scratch *s;
	struct walk *w;
	enum req_path path;
	__u32 *slot, self, peer, reason, depth, cut, zero = 0;
	enum rx_order order;
	int verdict;

	/* a FIN arrives as an empty segment: epoll reports it, nothing to move */
	if (skb->len == 0)
		return SK_DROP;
	slot = bpf_map_lookup_elem(&conn_index, &cookie);
	if (!slot)
		return SK_PASS;
	self = *slot;
	c = bpf_map_lookup_elem(&conns, &self);
	if (!c)
		return SK_PASS;
	order = rx_in_order(skb, &c->rx, &cut);
	if (cut)
		rx_count(c->inst, order, cut);
	if (order != RX_NEW)
		return SK_DROP;
	peer = c->peer;
	p = bpf_map_lookup_elem(&conns, &peer);
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!p || !s)
		return SK_PASS;

	__sync_fetch_and_add(&c->busy, 1);
	depth = __sync_fetch_and_add(&s->depth, 1);

	if (READ_ONCE(c->mode) != PS_MODE_KERNEL && !take_over(c, skb->len)) {
		verdict = SK_PASS;
		goto out;
	}
	if (c->side == PS_SIDE_CLIENT)
		client_snapshot(skb->sk, c, p, 0);
	reason = depth < 2 ? peer_check(c, p, skb->len) : PS_HB_LIMIT;
	if (reason) {
		verdict = handback(skb, c, self, NULL, reason);
		goto out;
	}
	w = &s->w[depth & 1];
	reason = walk_segment(skb, NULL, 0, skb->len, c, p, w);
	if (reason) {
		verdict = handback(skb, c, self, w, reason);
	} else if (c->side == PS_SIDE_BACKEND) {
		verdict = forward(skb, c, self, p, w, 0);
	} else {
		path = request_path(c, p, w, skb->len);
		if (path == REQ_WAIT)
			verdict = handback(skb, c, self, NULL, PS_HB_ORDER);
		else
			verdict = forward(skb, c, self, p, w, path == REQ_DIRECT);
	}
out:
	__sync_fetch_and_sub(&s->depth, 1);
	__sync_fetch_and_sub(&c->busy, 1);
	return verdict;
}

/* ---- direct responses and same-host callers ----------------------- */

/* Is ip:port a listening address of the proxy, in its network namespace? */
static __always_inline int is_listener(struct bpf_sock_ops *skops, __u32 ip, __u16 port)
{
	struct ps_listen l = { .ip = ip, .port = port };
	__u64 *netns = bpf_map_lookup_elem(&listeners, &l);

	if (!netns) {
		l.ip = 0;
		netns = bpf_map_lookup_elem(&listeners, &l);
	}
	return netns && *netns == bpf_get_netns_cookie(skops);
}

/*
 * Attached to the cgroup hierarchy's root, because the backends' and the
 * callers' sockets belong to them: it looks only at connection
 * establishment. A connection the proxy made (its socket is in conn_index)
 * is matched at the backend's end; a connection to the proxy's listener from
 * its own network namespace has the caller's end put in `callers` and is
 * matched at the proxy's end, for the caller's program to find.
 */
SEC("sockops")
int ps_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct inst_rx rx = {};
	struct ps_caller *cs;
	struct ps_tuple t;
	__u64 cookie, inst_sk, *owner, *found;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(skops);
		t.server_ip = skops->remote_ip4;
		t.client_ip = skops->local_ip4;
		t.server_port = bpf_ntohl(skops->remote_port);
		t.client_port = skops->local_port;
		if (!bpf_map_lookup_elem(&conn_index, &cookie)) {
			if (!sk || !take_callers || !is_listener(skops, t.server_ip, t.server_port))
				return 1;
			cs = bpf_sk_storage_get(&caller_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
			if (!cs)
				return 1;
			cs->self = cookie;
			/* the program comes with the map: in it before the first send */
			if (bpf_sock_hash_update(skops, &callers, &cookie, BPF_NOEXIST))
				return 1;
		}
		bpf_map_update_elem(&connecting, &t, &cookie, BPF_ANY);
		return 1;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		t.server_ip = skops->local_ip4;
		t.client_ip = skops->remote_ip4;
		t.server_port = skops->local_port;
		t.client_port = bpf_ntohl(skops->remote_port);
		found = bpf_map_lookup_elem(&connecting, &t);
		if (!found) {
			/* a client of the proxy: every ACK it sends looks at the
			 * room in its socket again, for client_ready() */
			if (is_listener(skops, t.server_ip, t.server_port))
				bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							  BPF_SOCK_OPS_RTT_CB_FLAG);
			return 1;
		}
		if (!sk)
			return 1;
		cookie = *found;
		bpf_map_delete_elem(&connecting, &t);
		if (is_listener(skops, t.server_ip, t.server_port)) {
			__u64 mine = bpf_get_socket_cookie(skops);

			bpf_map_update_elem(&caller_owner, &cookie, &mine, BPF_ANY);
			return 1;
		}
		owner = bpf_sk_storage_get(&backend_owner, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!owner)
			return 1;
		*owner = cookie;
		rx.owner = cookie;
		inst_sk = bpf_get_socket_cookie(skops);
		bpf_map_update_elem(&inst_rxs, &inst_sk, &rx, BPF_ANY);
		bpf_sock_hash_update(skops, &backends, &cookie, BPF_NOEXIST);
		return 1;
	case BPF_SOCK_OPS_RTT_CB: {
		struct ps_conn *c, *p;
		__u32 *slot, peer;

		cookie = bpf_get_socket_cookie(skops);
		slot = bpf_map_lookup_elem(&conn_index, &cookie);
		if (!slot || !sk)
			return 1;
		c = bpf_map_lookup_elem(&conns, slot);
		if (!c || c->side != PS_SIDE_CLIENT)
			return 1;
		/* only while the verdict owns the socket, as its own look: the
		 * daemon changes the peer and out_base only in USER mode, and
		 * waits for `busy` when it takes a socket back */
		__sync_fetch_and_add(&c->busy, 1);
		peer = c->peer;
		p = bpf_map_lookup_elem(&conns, &peer);
		if (p && READ_ONCE(c->mode) == PS_MODE_KERNEL)
			client_snapshot(sk, c, p, 1);
		__sync_fetch_and_sub(&c->busy, 1);
		return 1;
	}
	}
	return 1;
}

/*
 * On the instances' sockets: every segment arriving through TCP goes to the
 * socket's own psock queue, where what is put straight into it goes too. A
 * socket in a sockhash reports only that queue to FIONREAD (tcp_bpf), and
 * nginx stops reading a body when FIONREAD says 0: bytes left in the TCP
 * queue would never be read. A FIN is empty: it is dropped here, and the
 * socket's state says end of stream.
 */
SEC("sk_skb/stream_verdict")
int ps_rx(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct inst_rx *rx, fresh = {};
	enum rx_order order;
	__u32 *slot, cut;
	struct ps_conn *c;

	if (!skb->len)
		return SK_DROP;
	rx = bpf_map_lookup_elem(&inst_rxs, &cookie);
	if (!rx) {
		/* put there by ps_sockops, unless the LRU dropped it */
		bpf_map_update_elem(&inst_rxs, &cookie, &fresh, BPF_NOEXIST);
		rx = bpf_map_lookup_elem(&inst_rxs, &cookie);
		if (!rx)
			return SK_PASS;
	}
	order = rx_in_order(skb, &rx->seq, &cut);
	if (cut && rx->owner) {
		/* the instance: that of the proxy's socket at the other end */
		slot = bpf_map_lookup_elem(&conn_index, &rx->owner);
		c = slot ? bpf_map_lookup_elem(&conns, slot) : NULL;
		if (c)
			rx_count(c->inst, order, cut);
	}
	return order == RX_NEW ? SK_PASS : SK_DROP;
}

/* May `len` bytes go straight into the client socket now? Only if nothing
 * forwarded earlier is still on its way there and it has ample room, so the
 * push can neither overtake bytes nor come up short. The sk_msg program
 * cannot look at the client socket (a sockhash lookup takes a reference it
 * has no helper to drop), so it works from the verdict's last look: bytes
 * accepted only grow, and by every direct push at once; room shrinks at
 * most by what was written since (counted twice, for the buffers' overhead). */
static __always_inline int client_ready(struct ps_conn *c, struct ps_conn *p, __u32 len)
{
	__u32 seq = READ_ONCE(p->snap_seq);
	__u64 written = p->out_base + c->fwd, snap_written, snap_direct, accepted;
	__s64 room;

	if (seq & 1)
		return 0;
	snap_written = READ_ONCE(p->snap_written);
	snap_direct = READ_ONCE(p->snap_direct);
	accepted = READ_ONCE(p->snap_accepted);
	room = READ_ONCE(p->snap_room);
	if (READ_ONCE(p->snap_seq) != seq || accepted + (c->direct - snap_direct) < written)
		return 0;
	room -= 2 * (__s64)(written - snap_written);
	return room >= 2 * (__s64)len + 16384;
}

/* May `len` bytes go straight into a same-host caller's socket now? Only if
 * the caller has read every byte sent to it through TCP (it reads what is
 * pushed into its socket first) and what is pushed stays within its receive
 * buffer, as of its last send. The verdict does not run for a caller that
 * sends only straight to the instance, so client_ready() would not do. */
static __always_inline int caller_ready(struct ps_conn *c, struct ps_conn *p, __u32 len)
{
	__u64 read = READ_ONCE(p->caller_read);

	barrier();
	return read == p->out_base + c->fwd - c->ingress &&
	       c->ingress + len <= READ_ONCE(p->caller_room_end);
}

/* An sk_msg program sent len framed bytes straight on: the walk's state
 * becomes the connection's. Returns the messages the bytes completed. */
static __always_inline __u32 commit_direct(struct ps_conn *c, struct walk *w, __u32 len)
{
	__u32 n = w->msgs - c->msgs;

	__builtin_memcpy(&c->fr, &w->fr, sizeof(w->fr));
	c->msgs = w->msgs;
	c->head_bits = w->head_bits;
	c->fwd += len;
	c->direct += len;
	return n;
}

/* In the backend's sendmsg: a response straight to the client, or through
 * the TCP connection to the proxy's socket as usual. */
SEC("sk_msg")
int ps_response(struct sk_msg_md *msg)
{
	struct ps_inst_stats *st;
	struct ps_conn *c, *p;
	struct scratch *s;
	struct walk *w;
	__u32 *slot, peer, inst, depth, responses, len = msg->size, zero = 0;
	__u64 *owner, caller;
	struct tcp_sock *tp;
	long ret;

	if (!msg->sk)
		return SK_PASS;
	owner = bpf_sk_storage_get(&backend_owner, msg->sk, 0, 0);
	if (!owner)
		return SK_PASS;
	slot = bpf_map_lookup_elem(&conn_index, owner);
	if (!slot)
		return SK_PASS;
	c = bpf_map_lookup_elem(&conns, slot);
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!c || !s)
		return SK_PASS;
	peer = c->peer;
	p = bpf_map_lookup_elem(&conns, &peer);
	if (!p)
		return SK_PASS;
	/* what the instance has read of the TCP connection, for ps_request() */
	tp = bpf_skc_to_tcp_sock(msg->sk);
	if (tp)
		WRITE_ONCE(c->leg_read, tp->bytes_received - (__u32)(tp->rcv_nxt - tp->copied_seq));

	__sync_fetch_and_add(&c->busy, 1);
	depth = __sync_fetch_and_add(&s->depth, 1);
	/* the counters before the mode: a verdict handing back counts the
	 * segment in `passed` first and then sets USER, so a count that shows
	 * the TCP connection empty is never paired with a stale KERNEL */
	if (depth >= 2 || !READ_ONCE(c->direct_ok) || c->side != PS_SIDE_BACKEND ||
	    c->leg_sent != READ_ONCE(c->passed) + READ_ONCE(c->fwd) - c->direct)
		goto leg;
	barrier();
	if (READ_ONCE(c->mode) != PS_MODE_KERNEL)
		goto leg;
	caller = READ_ONCE(p->caller);
	if (caller ? !caller_ready(c, p, len) : !client_ready(c, p, len))
		goto leg;
	w = &s->w[depth & 1];
	if (walk_segment(NULL, msg, 1, len, c, p, w))
		goto leg;	/* the verdict frames it again and hands it back */

	/* the redirect only names the target: the bytes move once this
	 * program has returned, so the state is committed after it */
	if (caller)
		ret = bpf_msg_redirect_hash(msg, &callers, &caller, BPF_F_INGRESS);
	else
		ret = bpf_msg_redirect_hash(msg, &sockets, &peer, 0);
	if (ret != SK_PASS)
		goto leg;	/* the client left since the last look */
	responses = commit_direct(c, w, len);
	if (caller)
		c->ingress += len;
	inst = c->inst;
	st = bpf_map_lookup_elem(&inst_stats, &inst);
	if (st) {
		st->responses += responses;
		st->resp_bytes += len;
		st->direct_bytes += len;
		if (caller)
			st->caller_resp_bytes += len;
	}
	goto out;
leg:
	c->leg_sent += len;
out:
	__sync_fetch_and_sub(&s->depth, 1);
	__sync_fetch_and_sub(&c->busy, 1);
	return SK_PASS;	/* or the redirect set above */
}

/* In a caller's sendmsg: note how the caller stands for caller_ready().
 * Its socket is locked, so nothing is pushed into it meanwhile; a push
 * committed but not yet made counts as read, by at most one message. */
static __always_inline void caller_note(struct sk_msg_md *msg, struct ps_caller *cs,
					struct ps_conn *c, struct ps_conn *p)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(msg->sk);
	struct sk_psock *psock;
	__u64 pushed = READ_ONCE(p->ingress), consumed;
	__u32 queued = 0;

	if (!tp)
		return;
	psock = (struct sk_psock *)tp->inet_conn.icsk_inet.sk.sk_user_data;
	if (psock)
		bpf_probe_read_kernel(&queued, sizeof(queued), &psock->msg_tot_len);
	consumed = pushed > queued ? pushed - queued : 0;
	WRITE_ONCE(c->caller_read, tp->bytes_received - (__u32)(tp->rcv_nxt - tp->copied_seq));
	WRITE_ONCE(c->caller_room_end, consumed + tp->inet_conn.icsk_inet.sk.sk_rcvbuf);
	WRITE_ONCE(c->caller, cs->self);
}

/* In a same-host caller's sendmsg: whole body-free requests straight into
 * the instance's socket, or through TCP to the proxy's socket as usual
 * (see pathsplice.h). */
SEC("sk_msg")
int ps_request(struct sk_msg_md *msg)
{
	struct ps_inst_stats *st;
	struct ps_caller *cs;
	struct ps_conn *c, *p = NULL;
	struct scratch *s;
	struct walk *w;
	__u32 *slot, peer, inst, depth, requests, len = msg->size, zero = 0;
	__u64 *owner, cookie, leg_read;

	if (!msg->sk)
		return SK_PASS;
	cs = bpf_sk_storage_get(&caller_state, msg->sk, 0, 0);
	if (!cs)
		return SK_PASS;
	if (!cs->owner) {
		cookie = cs->self;
		owner = bpf_map_lookup_elem(&caller_owner, &cookie);
		if (owner) {
			cs->owner = *owner;
			bpf_map_delete_elem(&caller_owner, &cookie);
		}
	}
	cookie = cs->owner;
	slot = cookie ? bpf_map_lookup_elem(&conn_index, &cookie) : NULL;
	c = slot ? bpf_map_lookup_elem(&conns, slot) : NULL;
	if (c) {
		peer = c->peer;
		p = bpf_map_lookup_elem(&conns, &peer);
	}
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!c || !p || !s) {
		cs->leg_sent += len;	/* not spliced (yet): TCP as usual */
		return SK_PASS;
	}

	__sync_fetch_and_add(&c->busy, 1);
	depth = __sync_fetch_and_add(&s->depth, 1);
	/* every byte sent through TCP has been through the verdict: counters
	 * before the mode, as in ps_response() */
	if (depth >= 2 || c->side != PS_SIDE_CLIENT || !READ_ONCE(p->direct_ok) ||
	    cs->leg_sent != READ_ONCE(c->passed) + c->fwd_retired + READ_ONCE(c->fwd) - c->direct)
		goto leg;
	barrier();
	if (READ_ONCE(c->mode) != PS_MODE_KERNEL)
		goto leg;
	caller_note(msg, cs, c, p);
	/* requests the verdict sent straight may still be on a worker's queue;
	 * the instance must have read the TCP connection to the end */
	if ((__s32)(c->ingress_upto - READ_ONCE(p->msgs)) > 0)
		goto leg;
	leg_read = READ_ONCE(p->leg_read);
	barrier();
	if (leg_read != p->out_base + c->fwd - c->ingress)
		goto leg;
	w = &s->w[depth & 1];
	if (walk_segment(NULL, msg, 1, len, c, p, w) || w->body || w->msgs == c->msgs ||
	    !ps_frame_at_start(&w->fr))
		goto leg;

	cookie = p->cookie;
	if (bpf_msg_redirect_hash(msg, &backends, &cookie, BPF_F_INGRESS) != SK_PASS)
		goto leg;
	/* published before the instance can possibly answer */
	requests = commit_direct(c, w, len);
	c->ingress += len;
	inst = c->inst;
	st = bpf_map_lookup_elem(&inst_stats, &inst);
	if (st) {
		st->requests += requests;
		st->req_bytes += len;
		st->direct_req_bytes += len;
		st->caller_req_bytes += len;
	}
	goto out;
leg:
	cs->leg_sent += len;
out:
	__sync_fetch_and_sub(&s->depth, 1);
	__sync_fetch_and_sub(&c->busy, 1);
	return SK_PASS;	/* or the redirect set above */
}
