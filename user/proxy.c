// SPDX-License-Identifier: GPL-2.0
/*
 * Connection lifecycle:
 *
 *   HEAD        the client's first request head is read with MSG_PEEK and
 *               routed; nothing is consumed, the kernel will forward it.
 *   CONNECTING  a non-blocking connect to the next instance (round-robin),
 *               the next one on refusal or timeout, 503 when none is left.
 *   OPEN        both sockets are in the sockhash and the verdict moves the
 *               bytes. Each direction is relayed here while the kernel has
 *               handed it back, and armed again once userspace holds no byte
 *               of it and the stream is at a point the kernel can continue.
 *   LINGER      the last answer was sent and the client still had bytes we
 *               had not read (or had not shown it had none): its input is
 *               drained for a while before close so the answer is not lost
 *               to a RST. A client with nothing unread is closed at once.
 *
 * A keep-alive request for another service blocks the request direction at
 * the start of that request until every earlier response has reached the
 * client; then the backend is retired and the connection re-routed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "health.h"
#include "http_frame.h"
#include "log.h"
#include "proxy.h"
#include "reuse.h"
#include "util.h"

#define BUF_SIZE	(64 * 1024)
#define POLL_MIN_MS	1
#define POLL_FAST_MS	2	/* while a wait is young: the kernel usually drains in ms */
#define POLL_FAST_FOR_MS 100	/* how long a wait counts as young */
#define POLL_MAX_MS	50	/* a reader that stopped: look rarely */
#define MAX_EVENTS	256
#define ACCEPT_BATCH	64
#define SPARE_BUFS	64	/* relay buffers kept for the next connections */
#define POOL_PER_INST	64	/* kept connections per instance */
#define POOL_IDLE_MS	2000	/* well under the idle timeouts servers use */

enum cstate { CS_HEAD, CS_CONNECTING, CS_OPEN, CS_LINGER };

/* Why the request direction stopped at the start of a message. */
enum block {
	BLK_NONE = 0,
	BLK_SWITCH,		/* it belongs to another service (or the backend left) */
	BLK_UPGRADE,		/* waiting for the answer to an upgrade request */
	BLK_REPLY,		/* it gets an error answer from us */
};

enum timer_kind { T_NONE = 0, T_HEAD, T_CONNECT, T_FIN, T_LINGER, T_KINDS };

struct conn;

/* One socket of a connection. */
struct endpoint {
	struct conn *conn;
	int fd;
	uint32_t events;	/* epoll interest */
	int slot;		/* conns index, -1 when it has none */
	bool in_map;		/* in the sockhash */
	bool want_out;		/* wait for EPOLLOUT: a write or a drain is pending */
	bool drained;		/* a read found the queue empty, no event since */
	uint64_t cookie;
	struct ps_conn *pc;	/* the map slot, or `local` without one */
	struct ps_conn local;
};

/* One direction: bytes arriving on src, going to dst. */
struct dir {
	struct conn *conn;
	bool req;		/* client -> backend */
	struct endpoint *src, *dst;
	uint64_t consumed;	/* bytes read from src since it entered the map */
	uint32_t handbacks;	/* last hand-back taken into account */
	uint64_t armed_at;	/* consumed + 1 when armed */
	uint8_t *buf;		/* [w, p) framed, not written; [p, e) not framed */
	uint32_t w, p, e;
	uint32_t raw;		/* bytes at p the kernel already framed */
	uint32_t msg_start;	/* start of the message being read */
	bool in_msg;
	bool msg_here;		/* every byte of that message came to userspace */
	bool head_done;		/* its head is complete: its bytes may go */
	bool upgrade;		/* request: asks for a protocol upgrade */
	int best;		/* request: longest-prefix service so far */
	bool fin;		/* src has sent its FIN */
	bool eof;		/* userspace has read src to its end */
	bool shut;		/* dst was shut down for writing */
	bool ordered;		/* dst has taken every byte the kernel sent it */
	const char *ins;	/* written before buf[ins_at]: a field added to a head */
	uint32_t ins_at, ins_off;
};

struct conn {
	struct proxy *px;
	enum cstate state;
	struct endpoint cli, be;
	struct dir req, resp;
	enum block block;
	int svc;		/* service of the backend connection, -1 none */
	int next_svc;		/* service of the request waiting for a backend */
	uint32_t inst;
	bool inst_counted;	/* counted in inst's conns_active */
	bool one_shot;		/* the first request closes the connection: relay, do not splice */
	/* a one-shot request on a kept instance connection (reuse.h) */
	bool keep;		/* it may take one from the pool, and give it back */
	bool pooled;		/* be came from the pool: retried once if it was closed */
	bool keep_ok;		/* be may go back to the pool after the response */
	uint8_t *resend;	/* the request as sent on the pooled connection */
	uint32_t resend_len;
	uint64_t tried;		/* instance list positions tried for this request */
	uint32_t upgrade_idx;	/* index of the upgrade request */
	uint16_t status;	/* error answer */
	char reply[256];
	uint32_t reply_len, reply_off;
	uint32_t reply_after;	/* responses that go out before it */
	bool be_closing;	/* the last response said the instance closes */
	struct sockaddr_in addr;	/* client */
	/* the state timer */
	enum timer_kind tkind;
	uint64_t deadline;
	struct conn *tprev, *tnext;
	/* polling while waiting for the kernel to drain */
	bool polling;
	bool poll_req;		/* set during a pump that has to look again */
	bool again;		/* the pump stopped while bytes were still moving */
	uint64_t poll_at;
	uint32_t poll_ms;
	uint64_t poll_since;	/* when this wait began: polling, no byte moved since */
	uint64_t poll_moved;	/* `moved` then */
	struct conn *pprev, *pnext;
	struct conn *aprev, *anext;	/* every live connection */
	bool dead;		/* to be closed at the end of this pump */
	bool closed;
	uint64_t moved;		/* bytes read, framed or written: progress of a pump */
	/* idle between exchanges (housekeeping) */
	uint64_t idle_progress;	/* conn_progress() when last seen */
	uint64_t idle_since;	/* when it was: nothing has moved since */
};

struct timer_list {
	struct conn *head, *tail;
	uint32_t ms;
};

/* A file descriptor of someone else's the loop watches (e.g. the controller's). */
struct proxy_hook {
	struct endpoint ep;		/* ep.conn == NULL tells it from a connection's */
	void (*cb)(void *arg);
	void *arg;
};

#define MAX_HOOKS	4
#define HOUSEKEEPING_MS	1000
/* while draining: a keep-alive connection this idle is closed (nginx closes
 * idle ones at once on a graceful stop) */
#define DRAIN_IDLE_MS	1000

/*
 * What an epoll event is for, by file descriptor (an event carries the fd
 * and the generation of its registration). A kept instance connection stays
 * registered while it rests in the pool, with no endpoint: leaving the pool
 * and going back cost no epoll_ctl. An event for an fd closed (and perhaps
 * opened again) earlier in the same batch has an old generation: ignored.
 */
struct fd_ent {
	struct endpoint *ep;	/* NULL while nothing of ours uses the fd */
	uint32_t gen;		/* of its registration */
	uint32_t events;	/* interest registered */
};

struct proxy {
	struct proxy_opts o;
	struct proxy_hook hooks[MAX_HOOKS];
	int n_hooks;
	uint64_t house_at;		/* next housekeeping */
	bool draining;			/* stopped accepting: connections finish */
	struct datapath *dp;
	struct router *rt;
	struct health *health;		/* told about failed connects; may be NULL */
	int epfd;
	int lfd;
	struct endpoint lep;		/* the listener's entry in fds */
	struct endpoint hep;		/* the hand-back ring's */
	struct endpoint **slot_ep;	/* by conns slot: the endpoint that holds it */
	uint64_t hb_lost;		/* datapath_handbacks_lost() last seen */
	struct fd_ent *fds;		/* by fd */
	uint32_t n_fds;
	struct timer_list timers[T_KINDS];
	struct conn *poll_head;
	struct conn *all;
	struct conn **graveyard;	/* freed after the event batch */
	size_t n_grave, cap_grave;
	struct proxy_stats st;
	struct pool *pool;		/* kept instance connections; NULL once draining */
	uint8_t *spare[SPARE_BUFS];	/* relay buffers of closed connections */
	int n_spare;
	uint8_t peek[];			/* head_max + 1 */
};

static void pump(struct conn *c);
static void conn_close(struct conn *c);
static bool backend_left(struct conn *c);

/* ---- timers ---------------------------------------------------------- */

static void timer_stop(struct conn *c)
{
	struct timer_list *tl;

	if (c->tkind == T_NONE)
		return;
	tl = &c->px->timers[c->tkind];
	if (c->tprev)
		c->tprev->tnext = c->tnext;
	else
		tl->head = c->tnext;
	if (c->tnext)
		c->tnext->tprev = c->tprev;
	else
		tl->tail = c->tprev;
	c->tprev = c->tnext = NULL;
	c->tkind = T_NONE;
}

/* Every timer of a kind has the same duration: appending keeps lists sorted. */
static void timer_start(struct conn *c, enum timer_kind kind)
{
	struct timer_list *tl = &c->px->timers[kind];

	timer_stop(c);
	c->tkind = kind;
	c->deadline = ps_now_ms() + tl->ms;
	c->tprev = tl->tail;
	if (tl->tail)
		tl->tail->tnext = c;
	else
		tl->head = c;
	tl->tail = c;
}

static void poll_stop(struct conn *c)
{
	if (!c->polling)
		return;
	if (c->pprev)
		c->pprev->pnext = c->pnext;
	else
		c->px->poll_head = c->pnext;
	if (c->pnext)
		c->pnext->pprev = c->pprev;
	c->pprev = c->pnext = NULL;
	c->polling = false;
	c->poll_ms = 0;
}

/* Look at the connection again soon: the kernel is still moving its bytes. */
static void poll_later(struct conn *c)
{
	c->poll_req = true;
}

/* After a pump: keep polling, backing off, only if it asked to; or come
 * back at once if it yielded to other connections with work left. */
static void poll_update(struct conn *c)
{
	if (!c->poll_req && !c->again) {
		poll_stop(c);
		return;
	}
	if (!c->polling || c->moved != c->poll_moved) {
		c->poll_since = ps_now_ms();
		c->poll_moved = c->moved;
	}
	if (c->again) {
		c->poll_at = 0;
	} else {
		uint64_t now = ps_now_ms();
		uint32_t max = now - c->poll_since < POLL_FAST_FOR_MS ? POLL_FAST_MS : POLL_MAX_MS;

		c->poll_ms = c->poll_ms ? c->poll_ms * 2 : POLL_MIN_MS;
		if (c->poll_ms > max)
			c->poll_ms = max;
		c->poll_at = now + c->poll_ms;
	}
	if (c->polling)
		return;
	c->polling = true;
	c->pprev = NULL;
	c->pnext = c->px->poll_head;
	if (c->pnext)
		c->pnext->pprev = c;
	c->px->poll_head = c;
}

/* ---- relay buffers ---------------------------------------------------- */

static uint8_t *buf_get(struct proxy *px)
{
	return px->n_spare ? px->spare[--px->n_spare] : malloc(BUF_SIZE);
}

static void buf_put(struct proxy *px, uint8_t *buf)
{
	if (buf && px->n_spare < SPARE_BUFS)
		px->spare[px->n_spare++] = buf;
	else
		free(buf);
}

/* A connection that relays no more gives its buffers to the next ones. */
static void conn_put_bufs(struct conn *c)
{
	buf_put(c->px, c->req.buf);
	buf_put(c->px, c->resp.buf);
	c->req.buf = c->resp.buf = NULL;
}

/* ---- endpoints -------------------------------------------------------- */

static void ep_init(struct endpoint *ep, struct conn *c, int fd)
{
	memset(ep, 0, sizeof(*ep));
	ep->conn = c;
	ep->fd = fd;
	ep->slot = -1;
	ep->pc = &ep->local;
}

static struct fd_ent *fd_ent(struct proxy *px, int fd)
{
	uint32_t n = px->n_fds ? px->n_fds : 1024;
	struct fd_ent *t;

	if ((uint32_t)fd < px->n_fds)
		return &px->fds[fd];
	while (n <= (uint32_t)fd)
		n *= 2;
	t = realloc(px->fds, n * sizeof(*t));
	if (!t)
		return NULL;
	memset(t + px->n_fds, 0, (n - px->n_fds) * sizeof(*t));
	px->fds = t;
	px->n_fds = n;
	return &t[fd];
}

/* Register fd for ep (add), or change its interest. */
static int fd_watch(struct proxy *px, int fd, struct endpoint *ep, uint32_t events, bool add)
{
	struct fd_ent *fe = fd_ent(px, fd);
	struct epoll_event ev = { .events = events };
	uint32_t gen;

	if (!fe)
		return -1;
	gen = !add ? fe->gen : fe->gen + 1 ? fe->gen + 1 : 1;
	ev.data.u64 = (uint64_t)gen << 32 | (uint32_t)fd;
	if (epoll_ctl(px->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev))
		return -1;
	fe->ep = ep;
	fe->gen = gen;
	fe->events = events;
	return 0;
}

static int ep_watch(struct endpoint *ep, uint32_t events)
{
	events |= EPOLLET;
	if (ep->events == events)
		return 0;
	if (fd_watch(ep->conn->px, ep->fd, ep, events, !ep->events))
		return -1;
	ep->events = events;
	return 0;
}

static struct ps_instance *conn_inst(struct conn *c)
{
	return &c->px->dp->instances[c->inst < PS_MAX_INSTANCES ? c->inst : 0];
}

/* Take the endpoint out of the data path; returns its socket, still open
 * (and still in epoll, its events ignored), or -1. */
static int ep_detach(struct proxy *px, struct endpoint *ep)
{
	int fd = ep->fd;

	if (fd < 0)
		return -1;
	if (ep == &ep->conn->be && ep->conn->inst_counted) {
		__atomic_fetch_sub(&conn_inst(ep->conn)->conns_active, 1, __ATOMIC_RELAXED);
		ep->conn->inst_counted = false;
	}
	if (ep->in_map || ep->cookie)
		datapath_remove(px->dp, ep->slot, ep->cookie);
	if (ep->slot >= 0) {
		px->slot_ep[ep->slot] = NULL;
		datapath_slot_free(px->dp, ep->slot);
	}
	if ((uint32_t)fd < px->n_fds)
		px->fds[fd].ep = NULL;
	ep->fd = -1;
	ep->slot = -1;
	ep->in_map = false;
	ep->cookie = 0;
	ep->events = 0;
	ep->pc = &ep->local;
	memset(&ep->local, 0, sizeof(ep->local));
	return fd;
}

/* Take the endpoint out of the data path and close it. */
static void ep_release(struct proxy *px, struct endpoint *ep)
{
	int fd = ep_detach(px, ep);

	if (fd >= 0)
		close(fd);
}

/* Every byte the kernel redirected into this endpoint has entered its socket,
 * and, for the backend, every request sent straight into the instance's
 * socket has been answered (bytes written now would be read before them). */
static bool ep_drained(struct conn *c, struct endpoint *ep)
{
	struct endpoint *other = ep == &c->cli ? &c->be : &c->cli;
	uint64_t expect = ep->pc->out_base, acc;
	int st;

	if (!ep->in_map && !other->in_map)
		return true;
	if (ep == &c->be && other->in_map && !c->resp.fin &&
	    (int32_t)(other->pc->ingress_upto - __atomic_load_n(&ep->pc->msgs, __ATOMIC_ACQUIRE)) > 0)
		return false;
	if (other->fd >= 0)
		expect += other->pc->fwd - other->pc->ingress;
	if (sock_accepted(ep->fd, ep == &c->be, &acc, &st))
		return false;
	/* a socket that takes no more bytes (reset, closed) has nothing to wait for */
	return acc >= expect || (st != TCP_ESTABLISHED && st != TCP_CLOSE_WAIT);
}

/* Write into an endpoint from userspace, in one system call (one segment
 * for a small head); returns bytes written or -1. */
static ssize_t ep_sendv(struct endpoint *ep, struct iovec *iov, size_t n_iov, int flags)
{
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = n_iov };
	ssize_t n = sendmsg(ep->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT | flags);

	if (n > 0)
		ep->pc->out_base += n;
	else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		n = 0;
	return n;
}

static ssize_t ep_send(struct endpoint *ep, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return ep_sendv(ep, &iov, 1, 0);
}

/* The kernel reads ep's socket (its verdict forwards or hands back what
 * arrives), or is about to: userspace does not. */
static bool ep_kernel_owned(const struct endpoint *ep)
{
	return ep->in_map && splice_kernel_owned(ep->pc);
}

/* The kernel is still moving bytes into ep: look again when its socket has
 * room (EPOLLOUT), and on a timer in case the last bytes need no room. */
static void wait_drain(struct conn *c, struct endpoint *ep)
{
	ep->want_out = true;
	poll_later(c);
}

/* EPOLLOUT only while something waits for room: bulk traffic the kernel
 * moves would otherwise wake us for every drained segment. EPOLLIN only
 * while userspace reads the socket: one the kernel owns reports every
 * segment its verdict moves away (the daemon would wake once per request
 * for nothing); its hand-back comes through the ring (on_handbacks()), and
 * its end and errors still come here. */
static void update_interest(struct conn *c)
{
	struct endpoint *eps[2] = { &c->cli, &c->be };
	int i;

	if (c->state != CS_OPEN && c->state != CS_LINGER)
		return;	/* a connect in progress waits for its own EPOLLOUT */
	for (i = 0; i < 2; i++) {
		struct endpoint *ep = eps[i];
		uint32_t events = EPOLLRDHUP | (ep->want_out ? EPOLLOUT : 0);

		if (ep->fd < 0 || !ep->events)
			continue;
		if (!ep_kernel_owned(ep))
			events |= EPOLLIN;
		ep_watch(ep, events);
	}
}

/* ---- answers ---------------------------------------------------------- */

static const char *reason_phrase(uint16_t status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	}
	return "Error";
}

const uint16_t proxy_answer_status[PROXY_ANSWER_KINDS] = {
	400, 404, 405, 408, 431, 501, 502, 503, 504, 505,
};

static void count_error(struct proxy *px, uint16_t status)
{
	for (int i = 0; i < PROXY_ANSWER_KINDS; i++)
		if (proxy_answer_status[i] == status)
			px->st.answers[i]++;
}

static void build_reply(struct conn *c, uint16_t status, const char *why)
{
	char body[160];
	int blen;

	blen = snprintf(body, sizeof(body), "%u %s%s%s\n", status, reason_phrase(status),
			why ? ": " : "", why ? why : "");
	c->reply_len = snprintf(c->reply, sizeof(c->reply),
				"HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
				"Connection: close\r\n\r\n%s",
				status, reason_phrase(status), blen, body);
	c->reply_off = 0;
	c->status = status;
	count_error(c->px, status);
}

/* ---- the first head -------------------------------------------------- */

enum head_result { HEAD_MORE, HEAD_ROUTED, HEAD_ERROR };

/* Frame and route the peeked bytes. */
static enum head_result head_parse(struct proxy *px, const uint8_t *buf, size_t n,
				   int *svc, uint16_t *status, uint16_t *flags, bool *body)
{
	struct ps_frame fr;
	uint8_t path[PS_PATH_MAX];
	int best = -1, ev;
	__u32 pos = 0;

	ps_frame_init(&fr, PS_FRAME_REQUEST, px->o.head_max);
	while (pos < n && !ps_frame_in_body(&fr)) {
		ev = ps_frame_run(&fr, buf, n, &pos, path);
		switch (ev) {
		case PS_EV_PREFIX:
		case PS_EV_PATH_END:
			if (fr.prefix_len && fr.prefix_len < PS_PATH_MAX) {
				int id = router_lookup(px->rt, fr.prefix_hash, path, fr.prefix_len);

				if (id >= 0)
					best = id;
			}
			break;
		case PS_EV_HEAD_END:
			if (best < 0) {
				/* before the first registry nothing is known to be absent */
				*status = px->rt->loaded ? 404 : 503;
				return HEAD_ERROR;
			}
			*svc = best;
			*flags = fr.flags;
			*body = (fr.flags & PS_FF_CHUNKED) || fr.remaining;
			return HEAD_ROUTED;
		case PS_EV_ERROR:
			*status = fr.error;
			return HEAD_ERROR;
		}
	}
	return HEAD_MORE;
}

/* ---- connection setup ------------------------------------------------ */

static void fail(struct conn *c, uint16_t status, const char *why);
static void splice_setup(struct conn *c);

/* Give an endpoint a conns slot (its pc), if one is free. */
static void ep_take_slot(struct datapath *dp, struct endpoint *ep)
{
	ep->slot = datapath_slot_alloc(dp);
	if (ep->slot >= 0) {
		ep->pc = datapath_conn(dp, ep->slot);
		ep->conn->px->slot_ep[ep->slot] = ep;
	}
}

/* A connection that may be spliced gets its backend slot before it
 * connects: sockops recognises the backend's end of it by the cookie. */
static void backend_index(struct conn *c)
{
	struct datapath *dp = c->px->dp;

	ep_take_slot(dp, &c->be);
	if (c->be.slot < 0)
		return;
	if (datapath_index(dp, c->be.slot, c->be.fd, &c->be.cookie))
		pr_debug("cannot index the backend socket: %s", strerror(errno));
	c->be.pc->cookie = c->be.cookie;
}

static void connect_next(struct conn *c)
{
	struct proxy *px = c->px;
	struct backend b;
	int fd, one = 1;

	for (;;) {
		if (router_pick(px->rt, c->next_svc, &c->tried, &b)) {
			char why[96];

			snprintf(why, sizeof(why), "no live instance of %s",
				 router_service_name(px->rt, c->next_svc));
			/* the health module logs the service going down, once */
			pr_debug("%s:%u: %s", inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port), why);
			fail(c, 503, why);
			return;
		}
		if (c->keep && !c->resend && px->pool &&
		    (fd = pool_get(px->pool, b.inst, px->dp->instances[b.inst].gen, ps_now_ms())) >= 0) {
			ep_init(&c->be, c, fd);
			c->inst = b.inst;
			/* still registered (keep_finish), and pool_get() found
			 * nothing to read: what comes now brings an event */
			c->be.events = px->fds[fd].events;
			px->fds[fd].ep = &c->be;
			c->be.drained = true;
			if (!ep_watch(&c->be, EPOLLIN | EPOLLRDHUP)) {
				c->pooled = true;
				px->st.reused++;
				splice_setup(c);
				return;
			}
			ep_release(px, &c->be);
		}
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			pr_err("socket: %s", strerror(errno));
			fail(c, 503, "out of sockets");
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		ep_init(&c->be, c, fd);
		c->inst = b.inst;
		if (px->dp->direct && !c->one_shot)
			backend_index(c);
		if (connect(fd, (struct sockaddr *)&b.addr, sizeof(b.addr)) == 0 || errno == EINPROGRESS) {
			c->state = CS_CONNECTING;
			if (ep_watch(&c->be, EPOLLOUT | EPOLLIN | EPOLLRDHUP)) {
				ep_release(px, &c->be);
				fail(c, 503, "epoll");
				return;
			}
			timer_start(c, T_CONNECT);
			return;
		}
		px->st.connect_failures++;
		pr_debug("instance %s (%s:%u) of %s: connect: %s", router_instance_id(px->rt, b.inst),
			 inet_ntoa(b.addr.sin_addr), ntohs(b.addr.sin_port),
			 router_service_name(px->rt, c->next_svc), strerror(errno));
		__atomic_fetch_add(&px->dp->instances[b.inst].connect_failures, 1, __ATOMIC_RELAXED);
		if (px->health)
			health_passive(px->health, b.inst, PS_CHK_PASSIVE_REFUSED);
		ep_release(px, &c->be);
	}
}

static void on_connect_result(struct conn *c, bool timed_out)
{
	struct proxy *px = c->px;
	socklen_t len = sizeof(int);
	int err = 0;

	if (timed_out)
		err = ETIMEDOUT;
	else if (getsockopt(c->be.fd, SOL_SOCKET, SO_ERROR, &err, &len))
		err = errno;
	if (err) {
		px->st.connect_failures++;
		pr_debug("instance %s of %s: connect: %s", router_instance_id(px->rt, c->inst),
			 router_service_name(px->rt, c->next_svc), strerror(err));
		__atomic_fetch_add(&conn_inst(c)->connect_failures, 1, __ATOMIC_RELAXED);
		if (px->health)
			health_passive(px->health, c->inst, err == ETIMEDOUT ? PS_CHK_PASSIVE_TIMEOUT :
				       PS_CHK_PASSIVE_REFUSED);
		ep_release(px, &c->be);
		connect_next(c);
		return;
	}
	timer_stop(c);
	splice_setup(c);
}

static void dir_reset(struct dir *d)
{
	d->consumed = 0;
	d->handbacks = 0;
	d->armed_at = 0;
	d->w = d->p = d->e = 0;
	d->raw = 0;
	d->in_msg = false;
	d->fin = d->eof = d->shut = false;
	d->ordered = false;
	d->ins = NULL;
}

/* The backend is connected: splice it with the client (or, after a re-route,
 * give the client its new peer). */
static void splice_setup(struct conn *c)
{
	struct proxy *px = c->px;
	bool first = c->svc < 0;
	struct ps_conn *cp, *bp;
	int err;

	if (first && c->cli.slot < 0 && !c->one_shot)
		ep_take_slot(px->dp, &c->cli);
	if (c->cli.slot >= 0 && c->be.slot < 0)
		ep_take_slot(px->dp, &c->be);
	cp = c->cli.pc;
	bp = c->be.pc;

	bp->peer = c->cli.slot;
	bp->side = PS_SIDE_BACKEND;
	bp->inst = c->inst;
	ps_frame_init(&bp->fr, PS_FRAME_RESPONSE, px->o.resp_head_max);
	cp->peer = c->be.slot;
	cp->service = c->next_svc;
	cp->inst = c->inst;
	if (first) {
		cp->side = PS_SIDE_CLIENT;
		ps_frame_init(&cp->fr, PS_FRAME_REQUEST, px->o.head_max);
		c->req.best = -1;
	}
	c->svc = c->next_svc;
	c->state = CS_OPEN;
	c->be_closing = false;
	dir_reset(&c->resp);
	if (!c->pooled)
		__atomic_fetch_add(&conn_inst(c)->conns_total, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&conn_inst(c)->conns_active, 1, __ATOMIC_RELAXED);
	c->keep_ok = c->keep;
	c->inst_counted = true;

	/* backend first: a redirect to a key not yet in the map drops the data */
	if (c->be.slot >= 0 && c->cli.slot >= 0 && (c->cli.in_map || first)) {
		err = datapath_insert(px->dp, c->be.slot, c->be.fd, &c->be.cookie);
		if (!err) {
			c->be.in_map = true;
			if (first) {
				err = datapath_insert(px->dp, c->cli.slot, c->cli.fd, &c->cli.cookie);
				if (!err)
					c->cli.in_map = true;
				else	/* e.g. the client already half-closed: relay it */
					pr_debug("client not spliceable (%s): relaying", strerror(-err));
			}
		} else {
			pr_debug("backend not spliceable (%s): relaying", strerror(-err));
		}
	}
	if (!c->cli.in_map && (c->be.in_map || c->be.cookie)) {
		datapath_remove(px->dp, c->be.slot, c->be.cookie);
		c->be.in_map = false;
		c->be.cookie = 0;
	}
	if (first) {
		if (c->cli.in_map)
			px->st.spliced++;
		else
			px->st.relayed++;
	}
	/* a socket in the map starts in the kernel's hands; the kernel reads
	 * the request head from the client's queue itself */
	bp->mode = c->be.in_map ? PS_MODE_KERNEL : PS_MODE_USER;
	if (first)
		cp->mode = c->cli.in_map ? PS_MODE_KERNEL : PS_MODE_USER;
	c->req.src = &c->cli;
	c->req.dst = &c->be;
	c->resp.src = &c->be;
	c->resp.dst = &c->cli;
	ep_watch(&c->be, EPOLLIN | EPOLLRDHUP);
	if (c->resend && !c->pooled) {
		/* the kept connection was closed under the request: send it again */
		if (ep_send(&c->be, c->resend, c->resend_len) != (ssize_t)c->resend_len)
			c->dead = true;
		free(c->resend);
		c->resend = NULL;
	}
	/* both sockets are in the map: the backend may answer straight into
	 * the client socket when the sk_msg program finds it safe */
	bp->direct_ok = c->be.in_map && px->dp->direct;
	if (c->be.in_map)
		splice_kick(c->be.fd);
	if (first && c->cli.in_map)
		splice_kick(c->cli.fd);
	if (c->block == BLK_SWITCH) {
		/* the waiting request is framed again, now for this backend */
		c->block = BLK_NONE;
		c->req.ordered = true;
	}
	c->tried = 0;
	pr_debug("%s:%u -> %s/%s%s", inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port),
		 router_service_name(px->rt, c->svc), router_instance_id(px->rt, c->inst),
		 c->cli.in_map ? " (spliced)" : " (relayed)");
	pump(c);
}

/* Answer with an error once every earlier response has gone out. */
static void fail(struct conn *c, uint16_t status, const char *why)
{
	build_reply(c, status, why);
	c->block = BLK_REPLY;
	c->reply_after = c->cli.pc->msgs;
	if (c->state == CS_HEAD || c->state == CS_CONNECTING)
		c->state = CS_OPEN;
	if (c->req.src == NULL) {
		c->req.src = &c->cli;
		c->req.dst = &c->be;
		c->resp.src = &c->be;
		c->resp.dst = &c->cli;
	}
	timer_stop(c);
	pump(c);
}

/* ---- the head state -------------------------------------------------- */

static void head_try(struct conn *c)
{
	struct proxy *px = c->px;
	enum head_result r;
	uint16_t status = 0, flags = 0;
	bool body = false;
	ssize_t n;
	int svc;

	n = recv(c->cli.fd, px->peek, px->o.head_max + 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			conn_close(c);
		return;
	}
	if (n == 0) {
		conn_close(c);
		return;
	}
	r = head_parse(px, px->peek, n, &svc, &status, &flags, &body);
	if (r == HEAD_MORE) {
		if (c->req.fin) {
			/* the client closed its side before finishing the head */
			conn_close(c);
		}
		return;
	}
	if (r == HEAD_ERROR) {
		fail(c, status, status == 404 ? "no service for this path" :
				status == 503 ? "no registry loaded yet" : NULL);
		return;
	}
	timer_stop(c);
	c->next_svc = svc;
	c->tried = 0;
	/* One exchange and done: relaying it costs less than setting up a
	 * splice (sockhash inserts, verdict runs, removal) for it. */
	c->one_shot = ps_flags_close(flags);
	/* and an HTTP/1.1 GET or HEAD needs no connection of its own: only
	 * those may be sent again if a kept connection turns out closed */
	c->keep = px->pool && (flags & PS_FF_CONN_CLOSE) && !body &&
		  !(flags & (PS_FF_HTTP10 | PS_FF_UPGRADE | PS_FF_CONN_UPGRADE)) &&
		  ((flags & PS_FF_HEAD) || (n >= 4 && !memcmp(px->peek, "GET ", 4)));
	connect_next(c);
}

/* ---- relaying in userspace ------------------------------------------- */

static bool dir_kernel_owned(struct dir *d)
{
	return ep_kernel_owned(d->src);
}

/* Take the direction back from the kernel, if it has it; dir_try_arm()
 * gives it back from where it stands once userspace is done with it. */
static void dir_take(struct dir *d)
{
	if (!dir_kernel_owned(d))
		return;
	splice_take(d->src->pc);
	d->armed_at = 0;
}

/* The kernel handed this direction back: take over its state. */
static void dir_sync(struct dir *d)
{
	struct ps_conn *pc = d->src->pc;
	struct ps_frame *fr = &pc->fr;

	if (!d->src->in_map || pc->handbacks == d->handbacks)
		return;
	d->handbacks = pc->handbacks;
	d->conn->px->st.handbacks++;
	d->armed_at = 0;
	d->ordered = false;
	d->raw = pc->hb_skip;
	/* the framer state is the one at the end of the raw bytes */
	d->in_msg = !ps_frame_at_start(fr);
	d->msg_here = false;	/* a message in progress began in the kernel */
	d->msg_start = d->p + d->raw;
	d->head_done = d->in_msg && fr->state >= PS_FS_BODY;
	d->upgrade = false;
	pr_debug("hand-back on %s side: reason %u, %u bytes for the current peer",
		 d->req ? "client" : "backend", pc->hb_reason, pc->hb_skip);
}

/* Read what src has for userspace, until EAGAIN or a full buffer. */
static int dir_read(struct dir *d)
{
	ssize_t n;

	if (d->eof || d->src->fd < 0 || d->src->drained || dir_kernel_owned(d))
		return 0;
	dir_sync(d);
	if (!d->buf && !(d->buf = buf_get(d->conn->px)))
		return -1;
	if (d->w == d->e) {
		d->w = d->p = d->e = 0;
		d->msg_start = 0;
	} else if (d->e == BUF_SIZE && d->w > 0) {
		/* bytes not yet written move to the front */
		memmove(d->buf, d->buf + d->w, d->e - d->w);
		d->e -= d->w;
		d->p -= d->w;
		d->msg_start -= d->w;
		d->ins_at -= d->ins ? d->w : 0;
		d->w = 0;
	}
	while (d->e < BUF_SIZE) {
		size_t want = BUF_SIZE - d->e;

		n = recv(d->src->fd, d->buf + d->e, want, MSG_DONTWAIT);
		if (n > 0) {
			d->e += n;
			d->consumed += n;
			d->conn->moved += n;
			/* the queue is empty: what comes next brings an event of
			 * its own (edge-triggered), unless it is a FIN already seen */
			if ((size_t)n < want && !d->fin) {
				d->src->drained = true;
				break;
			}
		} else if (n == 0) {
			d->eof = true;
			d->fin = true;
			break;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			d->src->drained = true;
			break;
		} else if (errno != EINTR) {
			return -1;
		}
	}
	return 0;
}

/* ---- one-shot requests on kept instance connections (reuse.h) ---------- */

/* The request's head is complete in the buffer: the instance is not told to
 * close, and a request that went to a kept connection is saved in case that
 * connection turns out closed. */
static void keep_request_head(struct conn *c)
{
	struct dir *d = &c->req;
	uint8_t *head = d->buf + d->msg_start;
	size_t len = d->p - d->msg_start;

	reuse_request_head(head, len);
	if (c->pooled && (c->resend = malloc(len))) {
		memcpy(c->resend, head, len);
		c->resend_len = len;
	}
}

/* The final response head is complete: it tells the client the connection
 * closes (it asked for that), and says whether the instance keeps it. */
static void keep_response_head(struct conn *c)
{
	struct dir *d = &c->resp;
	struct ps_frame *fr = &c->be.pc->fr;
	uint8_t *head = d->buf + d->msg_start;
	size_t len = d->p - d->msg_start;

	free(c->resend);	/* an answer came: the request is never sent again */
	c->resend = NULL;
	if (fr->flags & (PS_FF_CONN_CLOSE | PS_FF_HTTP10 | PS_FF_UNTIL_CLOSE))
		c->keep_ok = false;	/* the instance closes it */
	if (d->msg_start < d->w) {
		/* part of the head went out already (it came in pieces) */
		c->keep_ok = false;
		return;
	}
	if (!reuse_response_head(head, len) && !(fr->flags & PS_FF_HTTP10)) {
		d->ins = "Connection: close\r\n";
		d->ins_at = d->msg_start + reuse_head_end(head, len);
		d->ins_off = 0;
	}
}

/* Close the connection to the instance, keeping the client's stream in
 * order: userspace writes into it only after what the instance put there. */
static void retire_backend(struct conn *c)
{
	struct ps_conn *cp = c->cli.pc;

	if (c->be.fd < 0)
		return;
	dir_take(&c->resp);
	/* what it put into the client socket (not into the caller's) */
	cp->out_base += c->be.pc->fwd - c->be.pc->ingress;
	ep_release(c->px, &c->be);
	/* counters of the client slot are relative to its current backend */
	cp->fwd_retired += cp->fwd;
	cp->fwd = 0;
	cp->ingress = 0;
	cp->ingress_upto = 0;
	cp->fc_next = 0;
	cp->msgs = 0;
	cp->head_bits = 0;
}

/* The instance broke the response being read. Not a byte of it goes on:
 * the client gets a 502 for it after the answers before it, as from
 * HAProxy or nginx, and the connection ends. Only a close can tell the
 * client when part of the response went on already (a head the kernel
 * passed in part, a body that breaks after its head was written). */
static void bad_response(struct conn *c, const char *what)
{
	struct dir *d = &c->resp;
	bool pending;

	pr_warn("instance %s %s", router_instance_id(c->px->rt, c->inst), what);
	if (!d->msg_here || d->w > d->msg_start) {
		c->dead = true;
		return;
	}
	d->p = d->e = d->msg_start;
	d->in_msg = false;
	/* nothing the client sends goes anywhere now */
	dir_take(&c->req);
	/* an answer of ours to the request this answered is already due */
	pending = c->block == BLK_REPLY && c->be.pc->msgs >= c->reply_after;
	retire_backend(c);
	if (!pending)
		build_reply(c, 502, NULL);
	c->block = BLK_REPLY;
}

static void block_request(struct conn *c, enum block why)
{
	struct dir *d = &c->req;

	c->block = why;
	/* a message that failed in its body was counted at its head's end,
	 * and perhaps partly sent on: no answer to it is waited for */
	if (why == BLK_REPLY)
		c->reply_after = c->cli.pc->msgs - (d->in_msg && d->head_done);
	if (why == BLK_SWITCH || why == BLK_REPLY) {
		/* frame the message again once it has somewhere to go */
		d->p = d->msg_start;
		d->in_msg = false;
		ps_frame_next(&c->cli.pc->fr);
	}
}

/* A request's path is known: does it still go to the current backend? */
static void request_routed(struct conn *c)
{
	struct dir *d = &c->req;

	if (d->best < 0) {
		if (c->px->rt->loaded)
			build_reply(c, 404, "no service for this path");
		else
			build_reply(c, 503, "no registry loaded yet");
		block_request(c, BLK_REPLY);
		return;
	}
	/* same service on a live instance: stay; a draining or down instance
	 * takes no new request, another instance of the service does */
	if (d->best == c->svc && c->be.fd >= 0 && !c->resp.fin &&
	    router_inst_up(c->px->rt, c->inst))
		return;
	c->next_svc = d->best;
	block_request(c, BLK_SWITCH);
}

static void tunnel(struct conn *c)
{
	struct ps_frame *fr = &c->cli.pc->fr;

	/* from the 101 on both directions are an opaque byte pipe */
	ps_frame_next(fr);
	fr->state = PS_FS_BODY;
	fr->remaining = PS_FRAME_INFINITE;
	fr->flags = PS_FF_TUNNEL;
	c->block = BLK_NONE;
	pr_debug("%s:%u upgraded: tunnel", inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port));
}

static void on_request_event(struct conn *c, int ev)
{
	struct dir *d = &c->req;
	struct ps_conn *cp = c->cli.pc;
	struct ps_frame *fr = &cp->fr;
	int id;

	switch (ev) {
	case PS_EV_PREFIX:
	case PS_EV_PATH_END:
		if (fr->prefix_len && fr->prefix_len < PS_PATH_MAX) {
			id = router_lookup(c->px->rt, fr->prefix_hash, cp->path, fr->prefix_len);
			if (id >= 0)
				d->best = id;
		}
		if (ev == PS_EV_PATH_END)
			request_routed(c);
		break;
	case PS_EV_HEAD_END:
		d->head_done = true;
		if (c->keep && cp->msgs == 0)
			keep_request_head(c);
		d->upgrade = fr->flags & (PS_FF_UPGRADE | PS_FF_CONN_UPGRADE);
		/* its answer decides what the connection becomes: watch the
		 * responses from here, before the instance can have the request
		 * (a refusal would go straight to the client unseen) */
		if (d->upgrade)
			dir_take(&c->resp);
		if (!c->block && c->be.fd >= 0)
			__atomic_fetch_add(&conn_inst(c)->user_requests, 1, __ATOMIC_RELAXED);
		if (fr->flags & PS_FF_HEAD)
			cp->head_bits |= 1ULL << (cp->msgs & 63);
		else
			cp->head_bits &= ~(1ULL << (cp->msgs & 63));
		if (d->upgrade)
			c->upgrade_idx = cp->msgs;
		cp->msgs++;
		break;
	case PS_EV_MSG_END:
		d->in_msg = false;
		if (d->upgrade) {
			d->upgrade = false;
			c->block = BLK_UPGRADE;
		}
		break;
	case PS_EV_ERROR:
		build_reply(c, fr->error, NULL);
		block_request(c, BLK_REPLY);
		break;
	}
}

static void on_response_event(struct conn *c, int ev)
{
	struct ps_conn *bp = c->be.pc;
	struct ps_frame *fr = &bp->fr;

	switch (ev) {
	case PS_EV_HEAD_END:
		c->resp.head_done = true;
		/* the kernel hands back every response that says so */
		if (!(fr->flags & PS_FF_INTERIM))
			c->be_closing = ps_flags_close(fr->flags);
		if (c->keep && !(fr->flags & PS_FF_INTERIM))
			keep_response_head(c);
		if (fr->flags & PS_FF_TUNNEL) {
			if (c->block == BLK_UPGRADE) {
				tunnel(c);
			} else if (!c->req.upgrade) {
				/* another protocol the client never asked for */
				bad_response(c, "switched protocols unasked");
			}
		} else if (!(fr->flags & PS_FF_INTERIM) && c->block == BLK_UPGRADE &&
			   bp->msgs == c->upgrade_idx) {
			/* upgrade refused: the connection stays HTTP */
			c->block = BLK_NONE;
		}
		break;
	case PS_EV_MSG_END:
		c->resp.in_msg = false;
		bp->msgs++;
		break;
	case PS_EV_ERROR:
		bad_response(c, "sent a response that cannot be framed");
		break;
	}
}

/* Frame what was read, as far as it may go. */
static void dir_process(struct dir *d)
{
	struct conn *c = d->conn;
	struct ps_conn *pc = d->src->pc;
	struct ps_frame *fr = &pc->fr;
	uint64_t n;
	int ev;

	while (!c->dead) {
		if (d->req && c->block)
			return;
		if (d->raw && d->p < d->e) {
			n = d->e - d->p < d->raw ? d->e - d->p : d->raw;
			d->p += n;
			d->raw -= n;
			continue;
		}
		if (ps_frame_in_body(fr)) {
			n = ps_frame_body_left(fr);
			if (n && d->p == d->e)
				return;
			if (n > d->e - d->p)
				n = d->e - d->p;
			d->p += n;
			ev = ps_frame_skip(fr, n);
		} else {
			if (d->p == d->e)
				return;
			if (ps_frame_at_start(fr) && !d->in_msg) {
				if (d->req && pc->msgs - c->be.pc->msgs >= 63)
					return;	/* too deep a pipeline: wait for responses */
				if (d->req && c->keep && pc->msgs)
					return;	/* one exchange: nothing more goes to the instance */
				if (!d->req && pc->msgs >= c->cli.pc->msgs) {
					/* no request asked for it: the client must not
					 * take it for the answer to its next one */
					pr_warn("instance %s sent a response no request asked for",
						router_instance_id(c->px->rt, c->inst));
					c->dead = true;
					return;
				}
				d->in_msg = true;
				d->msg_here = true;
				d->msg_start = d->p;
				d->head_done = false;
				d->best = -1;
				if (!d->req && (c->cli.pc->head_bits & (1ULL << (pc->msgs & 63))))
					fr->flags |= PS_FF_REQ_HEAD;
			}
			ev = ps_frame_run(fr, d->buf, d->e, &d->p, pc->path);
		}
		if (ev == PS_EV_NONE)
			continue;
		if (d->req)
			on_request_event(c, ev);
		else
			on_response_event(c, ev);
	}
}

/* How far the framed bytes may be written: a head goes once it is whole
 * (a request's may go elsewhere; a response's may turn out broken). */
static uint32_t dir_limit(struct dir *d)
{
	if (d->in_msg && !d->head_done)
		return d->msg_start;
	return d->p;
}

/* Write framed bytes to dst, once the kernel's bytes are all in it. */
static int dir_flush(struct dir *d)
{
	struct conn *c = d->conn;
	uint32_t limit = dir_limit(d);
	struct iovec iov[3];
	size_t n_iov = 0, before, ins_left = 0, from_buf;
	ssize_t n;

	if (d->w >= limit || d->dst->fd < 0 || d->shut)
		return 0;
	if (!d->ordered) {
		if (!ep_drained(c, d->dst)) {
			wait_drain(c, d->dst);
			return 0;
		}
		d->ordered = true;
	}
	/* one write: the bytes before an added field, the field, and what
	 * follows it (the field once the bytes after it may be written too);
	 * w < limit, and a pending field is never empty, so iov is not */
	before = limit - d->w;
	if (d->ins && d->ins_at < limit) {
		before = d->ins_at - d->w;
		ins_left = strlen(d->ins) - d->ins_off;
	}
	if (before)
		iov[n_iov++] = (struct iovec){ d->buf + d->w, before };
	if (ins_left) {
		iov[n_iov++] = (struct iovec){ (void *)(d->ins + d->ins_off), ins_left };
		iov[n_iov++] = (struct iovec){ d->buf + d->ins_at, limit - d->ins_at };
	}
	/* The end of a one-shot answer: keep_finish() closes (or shuts down)
	 * the client's socket right after this write, and the FIN leaves in
	 * the answer's last segment instead of one of its own. */
	n = ep_sendv(d->dst, iov, n_iov,
		     !d->req && c->keep && c->be.pc->msgs ? MSG_MORE : 0);
	if (n < 0)
		return -1;
	from_buf = (size_t)n < before ? (size_t)n : before;
	if (ins_left && (size_t)n > before) {
		size_t k = (size_t)n - before < ins_left ? (size_t)n - before : ins_left;

		d->ins_off += k;
		if (k == ins_left)
			d->ins = NULL;
		from_buf += (size_t)n - before - k;
	}
	d->w += from_buf;
	c->moved += from_buf;
	if (c->be.fd >= 0)
		__atomic_fetch_add(d->req ? &conn_inst(c)->user_req_bytes :
				   &conn_inst(c)->user_resp_bytes, from_buf, __ATOMIC_RELAXED);
	if (d->w < limit)
		d->dst->want_out = true;
	return 0;
}

/* Give the direction back to the kernel when userspace holds none of it. */
static void dir_try_arm(struct dir *d)
{
	struct conn *c = d->conn;
	struct ps_conn *pc = d->src->pc;

	if (d->w != d->e || d->raw)
		return;
	/* not the kernel's for now: userspace relays, TCP paces it */
	if (!d->src->in_map || !d->dst->in_map || c->state != CS_OPEN || c->dead || d->eof ||
	    c->block || c->req.upgrade || (d->req && ps_frame_before_route(&pc->fr)))
		return;
	if (d->armed_at == d->consumed + 1 || __atomic_load_n(&pc->mode, __ATOMIC_ACQUIRE) ==
	    PS_MODE_KERNEL)
		return;
	/* bytes passed but not read yet: read them first (the kernel would
	 * refuse the arm anyway, and no new edge would tell us about them) */
	if (__atomic_load_n(&pc->passed, __ATOMIC_ACQUIRE) != d->consumed)
		return;
	if (!d->ordered) {
		/* the kernel would queue behind bytes it already queued: only
		 * give it the stream once those have drained (flow control) */
		if (!ep_drained(c, d->dst)) {
			wait_drain(c, d->dst);
			return;
		}
		d->ordered = true;
	}
	d->w = d->p = d->e = 0;
	d->in_msg = !ps_frame_at_start(&pc->fr);
	d->armed_at = d->consumed + 1;
	d->ordered = false;
	pc->fc_next = 0;	/* userspace wrote into the peer: the kernel looks again */
	if (!splice_arm(pc, d->consumed)) {
		d->armed_at = 0;	/* a segment came first: read it, arm again */
		poll_later(c);
	}
}

/* The whole stream of src has been delivered: shut dst down. */
static void dir_try_finish(struct dir *d)
{
	struct conn *c = d->conn;
	struct ps_conn *pc = d->src->pc;
	uint64_t rcvd;
	bool complete;
	int st;

	if (d->shut || !d->fin)
		return;
	if (d->dst->fd < 0) {
		/* no instance connection (it closed between exchanges): the
		 * client's end ends it, a request cut short going nowhere */
		if (d->req && d->eof && !c->block)
			c->dead = true;
		return;
	}
	if (d->req && c->keep)
		return;	/* the instance connection may be kept: keep_finish() ends it */
	if (!d->req && c->block == BLK_REPLY)
		return;	/* an answer of ours comes last: linger() ends it */
	if (dir_kernel_owned(d)) {
		/* everything that arrived went through the verdict (the FIN
		 * counts one; bytes the backend sent straight to the client never
		 * arrived here), or the source was reset and nothing more comes;
		 * and every byte the verdict redirected has entered dst */
		complete = !sock_received(d->src->fd, &rcvd, &st) &&
			   (st == TCP_CLOSE ||
			    rcvd + pc->direct == pc->passed + pc->fwd + pc->fwd_retired + 1);
		if (!complete || !ep_drained(c, d->dst)) {
			poll_later(c);
			return;
		}
	} else {
		if (!d->eof || (d->req && c->block))
			return;
		if (d->in_msg && !d->head_done) {
			if (!d->req) {
				bad_response(c, "closed the connection in a response head");
				return;
			}
			d->e = d->p = d->msg_start;	/* a request cut short goes nowhere */
		}
		if (d->w < d->e)
			return;
	}
	if (!d->req && backend_left(c))
		return;
	shutdown(d->dst->fd, SHUT_WR);
	d->shut = true;
	if (c->tkind == T_NONE)
		timer_start(c, T_FIN);
}

/* Everything is answered: close the client's side, read what it still sends
 * for a moment (so that the answer is not lost to a reset), then close.
 * A client that has sent nothing we have not read gets no reset from a
 * close (only unread bytes cause one): close at once, and the kernel sends
 * the answer and the FIN on its own (nginx's `lingering_close on`). */
static void linger(struct conn *c)
{
	if (c->cli.drained && c->req.w == c->req.e) {
		c->state = CS_LINGER;
		c->dead = true;
		return;
	}
	shutdown(c->cli.fd, SHUT_WR);
	c->state = CS_LINGER;
	c->req.e = c->req.p = c->req.w = 0;
	c->resp.e = c->resp.p = c->resp.w = 0;
	/* nothing is relayed any more: the buffers serve the next connections
	 * (lingering connections pile up under one-shot load) */
	conn_put_bufs(c);
	timer_start(c, T_LINGER);
}

/* The one exchange of a kept connection is over: the instance connection
 * goes back to the pool if it is clean, and the client's side closes. */
static void keep_finish(struct conn *c)
{
	struct proxy *px = c->px;
	uint32_t inst = c->inst;
	int fd = c->be.fd;

	timer_stop(c);
	if (px->pool && c->keep_ok && c->resp.p == c->resp.e && !c->resp.fin &&
	    c->be.events && router_inst_up(px->rt, inst)) {
		ep_detach(px, &c->be);	/* registered still: see struct fd_ent */
		pool_put(px->pool, inst, px->dp->instances[inst].gen, fd, ps_now_ms());
	} else {
		ep_release(px, &c->be);
	}
	linger(c);
}

/* A kept connection the instance had closed (or reset) before any byte of
 * the answer: the request goes again, once, on a new connection. */
static bool keep_retry(struct conn *c)
{
	if (!c->pooled || !c->resend || c->resp.consumed)
		return false;
	pr_debug("instance %s closed a kept connection: request sent again",
		 router_instance_id(c->px->rt, c->inst));
	timer_stop(c);
	ep_release(c->px, &c->be);
	c->pooled = false;
	c->tried = 0;
	connect_next(c);
	return true;
}

/* The request waiting at the head of the request direction may proceed once
 * the backend has answered everything sent before it. */
static void try_unblock(struct conn *c)
{
	struct proxy *px = c->px;
	struct dir *req = &c->req, *resp = &c->resp;

	if (c->block != BLK_SWITCH && c->block != BLK_REPLY)
		return;
	if (req->w < req->msg_start && c->be.fd >= 0)
		return;	/* earlier request bytes still going to the backend */
	if (c->be.fd >= 0 && !resp->eof &&
	    c->be.pc->msgs < (c->block == BLK_REPLY ? c->reply_after : c->cli.pc->msgs)) {
		if (dir_kernel_owned(resp)) {
			/* watch the responses finish from here */
			dir_take(resp);
			dir_read(resp);
		}
		return;
	}
	if (resp->w < resp->e)
		return;
	if (c->block == BLK_REPLY) {
		if (!ep_drained(c, &c->cli)) {
			wait_drain(c, &c->cli);
			return;
		}
		while (c->reply_off < c->reply_len) {
			ssize_t n = ep_send(&c->cli, c->reply + c->reply_off,
					    c->reply_len - c->reply_off);

			if (n <= 0) {
				if (n < 0)
					c->dead = true;
				else
					c->cli.want_out = true;
				return;
			}
			c->reply_off += n;
		}
		retire_backend(c);
		linger(c);
		return;
	}
	/* BLK_SWITCH: retire the backend, connect one of the next service
	 * (none left: the instance closed between exchanges, backend_left()) */
	if (c->be.fd >= 0)
		px->st.reroutes++;
	retire_backend(c);
	c->tried = 0;
	connect_next(c);
}

/* Move every byte that can move, then decide what is next. */
static void pump(struct conn *c)
{
	uint32_t round;
	int err;

	if (c->state == CS_HEAD || c->state == CS_CONNECTING)
		return;
	c->poll_req = false;
	c->again = false;
	c->cli.want_out = c->be.want_out = false;
	for (round = 0; !c->dead; round++) {
		if (round == 16) {
			/* fair to the other connections: finish after this batch */
			c->again = true;
			break;
		}
		uint64_t before = c->moved + c->req.p + c->resp.p + c->block + c->state +
				  c->req.shut + c->resp.shut + c->req.armed_at + c->resp.armed_at;

		if (c->state == CS_LINGER) {
			char sink[4096];
			ssize_t n;

			while ((n = recv(c->cli.fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
				;
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
				c->dead = true;
			break;
		}
		if (dir_read(&c->req)) {
			c->dead = true;
			break;
		}
		err = dir_read(&c->resp);
		/* a kept connection that ended or failed before any answer */
		if ((err || c->resp.eof) && keep_retry(c))
			return;
		if (err) {
			c->dead = true;
			break;
		}
		dir_process(&c->req);
		dir_process(&c->resp);
		if (c->resp.eof && ps_frame_in_body(&c->be.pc->fr) &&
		    ps_frame_body_left(&c->be.pc->fr) == PS_FRAME_INFINITE &&
		    !(c->be.pc->fr.flags & PS_FF_TUNNEL)) {
			/* a body delimited by the connection's end is complete */
			ps_frame_next(&c->be.pc->fr);
			c->be.pc->msgs++;
		}
		if (dir_flush(&c->req) || dir_flush(&c->resp)) {
			c->dead = true;
			break;
		}
		if (c->keep && c->be.fd >= 0 && c->be.pc->msgs && c->resp.w == c->resp.p &&
		    !c->resp.ins) {
			keep_finish(c);
			break;
		}
		try_unblock(c);
		if (c->state != CS_OPEN)
			break;
		dir_try_finish(&c->req);
		dir_try_finish(&c->resp);
		dir_try_arm(&c->req);
		dir_try_arm(&c->resp);
		if (before == c->moved + c->req.p + c->resp.p + c->block + c->state +
			      c->req.shut + c->resp.shut + c->req.armed_at + c->resp.armed_at)
			break;
	}
	if (c->dead || (c->state == CS_OPEN && c->req.shut && c->resp.shut)) {
		conn_close(c);
		return;
	}
	update_interest(c);
	poll_update(c);
}

/* ---- lifecycle -------------------------------------------------------- */

static void conn_close(struct conn *c)
{
	struct proxy *px = c->px;

	if (c->closed)
		return;
	c->closed = true;
	timer_stop(c);
	poll_stop(c);
	if (c->be.fd >= 0 && ep_kernel_owned(&c->be))
		splice_take(c->be.pc);
	ep_release(px, &c->be);
	ep_release(px, &c->cli);
	conn_put_bufs(c);
	free(c->resend);
	c->resend = NULL;
	c->dead = true;
	if (c->aprev)
		c->aprev->anext = c->anext;
	else
		px->all = c->anext;
	if (c->anext)
		c->anext->aprev = c->aprev;
	if (px->n_grave == px->cap_grave) {
		size_t cap = px->cap_grave ? px->cap_grave * 2 : 64;
		struct conn **g = realloc(px->graveyard, cap * sizeof(*g));

		if (!g) {
			free(c);
			return;
		}
		px->graveyard = g;
		px->cap_grave = cap;
	}
	px->graveyard[px->n_grave++] = c;
}

/* At most ACCEPT_BATCH connections per wake-up: the listener is level-
 * triggered, and connections already accepted get their turn in between. */
static void accept_all(struct proxy *px)
{
	for (int k = 0; k < ACCEPT_BATCH; k++) {
		struct sockaddr_in addr;
		socklen_t len = sizeof(addr);
		struct conn *c;
		int fd;

		fd = accept4(px->lfd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				pr_warn("accept: %s", strerror(errno));
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->px = px;
		c->addr = addr;
		c->svc = -1;
		c->next_svc = -1;
		c->state = CS_HEAD;
		ep_init(&c->cli, c, fd);
		ep_init(&c->be, c, -1);
		c->req.conn = c->resp.conn = c;
		c->req.req = true;
		c->req.best = -1;
		px->st.accepted++;
		if (ep_watch(&c->cli, EPOLLIN | EPOLLRDHUP)) {
			close(fd);
			free(c);
			continue;
		}
		c->anext = px->all;
		if (px->all)
			px->all->aprev = c;
		px->all = c;
		timer_start(c, T_HEAD);
		head_try(c);
	}
}

static void on_event(struct proxy *px, struct endpoint *ep, uint32_t events)
{
	struct conn *c = ep->conn;
	bool client = ep == &c->cli;

	if (c->closed)
		return;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		ep->drained = false;
	if (events & EPOLLRDHUP) {
		if (client)
			c->req.fin = true;
		else
			c->resp.fin = true;
		/* one side is done: the other gets fin_timeout to finish too */
		if (c->state == CS_OPEN && c->tkind == T_NONE)
			timer_start(c, T_FIN);
	}
	if ((events & EPOLLERR) || ((events & EPOLLHUP) && !(events & EPOLLRDHUP))) {
		if (!client && c->state == CS_CONNECTING) {
			on_connect_result(c, false);
			return;
		}
		if (!client && c->state == CS_OPEN && keep_retry(c))
			return;
		conn_close(c);
		return;
	}
	switch (c->state) {
	case CS_HEAD:
		head_try(c);
		break;
	case CS_CONNECTING:
		if (!client && (events & (EPOLLOUT | EPOLLHUP)))
			on_connect_result(c, false);
		else if (client && (events & EPOLLRDHUP) && !(events & EPOLLIN))
			; /* a half-close now is served by the relay once connected */
		break;
	default:
		pump(c);
		break;
	}
}

/* The kernel gave a socket back: read it as if it had reported bytes. */
static void on_handback(void *arg, uint32_t slot)
{
	struct proxy *px = arg;
	struct endpoint *ep = px->slot_ep[slot];

	/* a record of a slot freed (and perhaps taken again) since then
	 * costs one look at the connection that has it now */
	if (ep && ep->fd >= 0)
		on_event(px, ep, EPOLLIN);
}

static void on_handbacks(struct proxy *px)
{
	struct conn *c, *nc;
	uint64_t lost;

	if (datapath_handbacks(px->dp, on_handback, px) < 0)
		pr_warn("hand-back ring: %s", strerror(errno));
	/* a record is lost only to a full ring, and a ring that fills again
	 * after this reports itself: counted after the records were read, no
	 * loss goes unseen */
	lost = datapath_handbacks_lost(px->dp);
	if (lost == px->hb_lost)
		return;
	/* the ring was full: some hand-back has no record, look at them all */
	px->hb_lost = lost;
	pr_warn("hand-back ring full: looking at every connection");
	for (c = px->all; c; c = nc) {
		nc = c->anext;
		if (!c->closed && c->cli.in_map)
			on_event(px, &c->cli, EPOLLIN);
		if (!c->closed && c->be.in_map)
			on_event(px, &c->be, EPOLLIN);
	}
}

static void on_timeout(struct conn *c, enum timer_kind kind)
{
	c->tkind = T_NONE;
	switch (kind) {
	case T_HEAD:
		fail(c, 408, NULL);
		break;
	case T_CONNECT:
		on_connect_result(c, true);
		break;
	default:
		conn_close(c);
		break;
	}
}

static int run_timers(struct proxy *px)
{
	uint64_t now = ps_now_ms(), next = now + 1000;
	struct conn *c, *nc;
	int k;

	for (k = T_HEAD; k < T_KINDS; k++) {
		struct timer_list *tl = &px->timers[k];

		while ((c = tl->head) && c->deadline <= now) {
			timer_stop(c);
			on_timeout(c, k);
		}
		if (tl->head && tl->head->deadline < next)
			next = tl->head->deadline;
	}
	for (c = px->poll_head; c; c = nc) {
		nc = c->pnext;
		if (c->poll_at <= now)
			pump(c);
	}
	for (c = px->poll_head; c; c = c->pnext)
		if (c->poll_at < next)
			next = c->poll_at;
	return next > now ? (int)(next - now) : 0;
}

/* Every byte either side sent, whether the kernel or the daemon moved it:
 * it changes whenever one does. */
static uint64_t conn_progress(const struct conn *c)
{
	const struct ps_conn *cp = c->cli.pc, *bp = c->be.pc;

	return c->moved + __atomic_load_n(&cp->fwd, __ATOMIC_RELAXED) + cp->fwd_retired +
	       __atomic_load_n(&cp->passed, __ATOMIC_RELAXED) +
	       __atomic_load_n(&bp->fwd, __ATOMIC_RELAXED) +
	       __atomic_load_n(&bp->passed, __ATOMIC_RELAXED);
}

/* With no message on its way either way (nor a tunnel) and nothing held
 * in userspace: how many requests the instance has not begun to answer;
 * -1 otherwise. */
static int conn_unanswered(const struct conn *c)
{
	const struct ps_conn *cp = c->cli.pc, *bp = c->be.pc;

	if (c->state != CS_OPEN || c->block || !ps_frame_at_start(&cp->fr) ||
	    !ps_frame_at_start(&bp->fr) || c->req.w != c->req.e || c->resp.w != c->resp.e)
		return -1;
	return (int32_t)(__atomic_load_n(&cp->msgs, __ATOMIC_ACQUIRE) -
			 __atomic_load_n(&bp->msgs, __ATOMIC_ACQUIRE));
}

/* Between exchanges: every request the instance got has its answer. */
static bool conn_between_exchanges(const struct conn *c)
{
	return !c->req.fin && conn_unanswered(c) == 0;
}

/* Every request the instance has is whole, and the first one without its
 * answer has not a byte of it yet. */
static bool conn_awaits_answer(const struct conn *c)
{
	return c->be.fd >= 0 && conn_unanswered(c) > 0;
}

/* Both streams taken back from the kernel, so that no byte moves unseen:
 * has nothing moved since the sweep looked? */
static bool conn_took_still(struct conn *c)
{
	dir_take(&c->req);
	dir_take(&c->resp);
	return conn_progress(c) == c->idle_progress;
}

/* The instance closed its connection: if that was between exchanges (an
 * idle keep-alive connection it ends, as gunicorn does after 2 s and
 * Node.js after 5), the client's stays open, as HAProxy keeps it, and its
 * next request goes to a new instance connection. Returns false when the
 * client must see the close too. */
static bool backend_left(struct conn *c)
{
	if (c->keep || c->one_shot || c->be_closing || c->px->draining || c->req.fin)
		return false;
	/* with the client's stream the daemon's, no request slips through */
	dir_take(&c->req);
	if (!conn_between_exchanges(c))
		return false;	/* a request went to the instance as it left */
	pr_debug("%s:%u instance %s closed between exchanges: client connection kept",
		 inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port),
		 router_instance_id(c->px->rt, c->inst));
	retire_backend(c);
	dir_reset(&c->resp);
	c->px->st.reconnects++;
	return true;
}

/* A keep-alive connection idle for --idle-timeout ends as nginx ends one
 * after keepalive_timeout: its instance connection closes, and the client
 * gets a FIN (a request that raced it is read and dropped, so the client
 * sees a close, not a reset, and sends it again on a new connection). */
static void idle_close(struct conn *c, uint32_t limit)
{
	if (!conn_took_still(c) || !conn_between_exchanges(c)) {
		pump(c);	/* something came after all: relay it, arm again */
		return;
	}
	pr_debug("%s:%u idle for %u ms: closed", inet_ntoa(c->addr.sin_addr),
		 ntohs(c->addr.sin_port), limit);
	c->px->st.idle_closed++;
	retire_backend(c);
	c->cli.drained = false;	/* read what the client may have sent meanwhile */
	linger(c);
}

/* The instance has not begun to answer for --response-timeout: the client
 * gets 504 after the answers before, as from nginx after
 * proxy_read_timeout, and the connection ends. */
static void answer_late(struct conn *c)
{
	if (!conn_took_still(c) || !conn_awaits_answer(c)) {
		pump(c);	/* the answer began after all */
		return;
	}
	pr_warn("instance %s did not begin to answer within %u ms (504)",
		router_instance_id(c->px->rt, c->inst), c->px->o.response_timeout_ms);
	c->px->st.response_timeouts++;
	retire_backend(c);
	build_reply(c, 504, NULL);
	c->block = BLK_REPLY;
	pump(c);
}

/* In the middle of an exchange (a message under way, bytes held, a request
 * blocked); a tunnel is no exchange and keeps its silence. */
static bool conn_in_exchange(const struct conn *c)
{
	return c->state == CS_OPEN && conn_unanswered(c) < 0 &&
	       !(c->cli.pc->fr.flags & PS_FF_TUNNEL);
}

/* Nothing moved for --idle-timeout in the middle of an exchange: a peer
 * that stopped (a body half sent, a response not read, an instance that
 * stopped halfway) or vanished without a FIN. The connection ends, as
 * nginx ends one after send_timeout or proxy_read_timeout. */
static void stall_close(struct conn *c)
{
	pr_debug("%s:%u nothing moved for %u ms in an exchange: closed",
		 inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port), c->px->o.idle_timeout_ms);
	c->px->st.stalls_closed++;
	conn_close(c);
}

/* A later request's head the daemon holds (the kernel hands back one whose
 * path a segment cuts) and that the client stopped sending. */
static bool conn_head_stalled(const struct conn *c)
{
	return c->state == CS_OPEN && !c->block && !ep_kernel_owned(&c->cli) &&
	       c->req.in_msg && !c->req.head_done && !c->req.fin;
}

/* Once a second, for connections on which nothing moved (bytes the kernel
 * moves show in the counters): close those idle between exchanges for
 * --idle-timeout (DRAIN_IDLE_MS while draining), answer 408 to a head
 * stalled for --head-timeout, as to a connection's first, and 504 to a
 * request whose answer has not begun for --response-timeout; close any
 * other exchange stalled for --idle-timeout. */
static void idle_sweep(struct proxy *px, uint64_t now)
{
	uint32_t limit = px->o.idle_timeout_ms;
	struct conn *c, *nc;
	uint64_t progress;

	if (px->draining && (!limit || limit > DRAIN_IDLE_MS))
		limit = DRAIN_IDLE_MS;
	for (c = px->all; c; c = nc) {
		nc = c->anext;
		if (c->closed)
			continue;
		progress = conn_progress(c);
		if (progress != c->idle_progress || !c->idle_since) {
			c->idle_progress = progress;
			c->idle_since = now;
		} else if (limit && now - c->idle_since >= limit && conn_between_exchanges(c)) {
			idle_close(c, limit);
		} else if (now - c->idle_since >= px->o.head_timeout_ms && conn_head_stalled(c)) {
			build_reply(c, 408, NULL);
			block_request(c, BLK_REPLY);
			pump(c);
		} else if (px->o.response_timeout_ms &&
			   now - c->idle_since >= px->o.response_timeout_ms && conn_awaits_answer(c)) {
			answer_late(c);
		} else if (px->o.idle_timeout_ms && now - c->idle_since >= px->o.idle_timeout_ms &&
			   conn_in_exchange(c)) {
			stall_close(c);
		}
	}
}

/*
 * Once a second, while instances drain or removed services wait for their
 * connections: close what the drain timeout ends, and let the router free
 * the slots and ids that no connection refers to any more.
 */
static void housekeeping(struct proxy *px)
{
	static uint64_t inst_refs[PS_MAX_INSTANCES / 64], svc_refs[PS_MAX_SERVICES / 64];
	struct router *r = px->rt;
	uint64_t now = ps_now_ms();
	struct conn *c, *nc;
	uint32_t expired = 0;

	if (now < px->house_at)
		return;
	px->house_at = now + HOUSEKEEPING_MS;
	if (px->pool)
		pool_sweep(px->pool, now);
	idle_sweep(px, now);
	if (!r->n_draining && !r->n_retired)
		return;
	memset(inst_refs, 0, sizeof(inst_refs));
	memset(svc_refs, 0, sizeof(svc_refs));
	for (c = px->all; c; c = nc) {
		nc = c->anext;
		if (c->closed)
			continue;
		if (c->be.fd >= 0) {
			if (router_drain_expired(r, c->inst, now)) {
				expired++;
				conn_close(c);
				continue;
			}
			if (c->inst < PS_MAX_INSTANCES)
				inst_refs[c->inst / 64] |= 1ULL << (c->inst % 64);
		}
		if (c->svc >= 0 && c->svc < PS_MAX_SERVICES)
			svc_refs[c->svc / 64] |= 1ULL << (c->svc % 64);
		if (c->next_svc >= 0 && c->next_svc < PS_MAX_SERVICES)
			svc_refs[c->next_svc / 64] |= 1ULL << (c->next_svc % 64);
	}
	if (expired)
		pr_warn("drain timeout: closed %u connection%s to removed instances", expired,
			expired == 1 ? "" : "s");
	router_gc(r, inst_refs, svc_refs);
}

void proxy_set_health(struct proxy *px, struct health *h)
{
	px->health = h;
}

int proxy_add_hook(struct proxy *px, int fd, void (*cb)(void *arg), void *arg)
{
	struct proxy_hook *h;

	if (px->n_hooks == MAX_HOOKS)
		return -1;
	h = &px->hooks[px->n_hooks];
	memset(h, 0, sizeof(*h));
	h->ep.fd = fd;
	h->cb = cb;
	h->arg = arg;
	if (fd_watch(px, fd, &h->ep, EPOLLIN, true))
		return -1;
	px->n_hooks++;
	return 0;
}

static void bury(struct proxy *px)
{
	size_t i;

	for (i = 0; i < px->n_grave; i++)
		free(px->graveyard[i]);
	px->n_grave = 0;
}

struct proxy *proxy_new(const struct proxy_opts *opts, struct datapath *dp, struct router *rt)
{
	struct proxy *px = calloc(1, sizeof(*px) + opts->head_max + 1);
	struct rlimit rl;
	int one = 1;

	if (!px)
		return NULL;
	px->o = *opts;
	px->dp = dp;
	px->rt = rt;
	px->lfd = -1;
	px->timers[T_HEAD].ms = opts->head_timeout_ms;
	px->timers[T_CONNECT].ms = opts->connect_timeout_ms;
	px->timers[T_FIN].ms = opts->fin_timeout_ms;
	px->timers[T_LINGER].ms = opts->linger_ms;

	/* two sockets per connection */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	px->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (px->epfd < 0)
		goto err;
	px->pool = pool_new(POOL_PER_INST, POOL_IDLE_MS);	/* none: no reuse */
	if (opts->listen_fd >= 0) {
		/* taken over from the daemon this one replaces: already listening */
		px->lfd = opts->listen_fd;
		fcntl(px->lfd, F_SETFL, fcntl(px->lfd, F_GETFL) | O_NONBLOCK);
	} else {
		px->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (px->lfd < 0)
			goto err;
		setsockopt(px->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(px->lfd, (struct sockaddr *)&opts->listen, sizeof(opts->listen))) {
			pr_err("cannot listen on %s:%u: %s", inet_ntoa(opts->listen.sin_addr),
			       ntohs(opts->listen.sin_port), strerror(errno));
			goto err;
		}
		if (listen(px->lfd, 4096)) {
			pr_err("listen: %s", strerror(errno));
			goto err;
		}
	}
	/* accepted sockets inherit these: two system calls less per connection */
	setsockopt(px->lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(px->lfd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	if (fd_watch(px, px->lfd, &px->lep, EPOLLIN, true))
		goto err;
	px->slot_ep = calloc(dp->max_conns, sizeof(*px->slot_ep));
	if (!px->slot_ep ||
	    fd_watch(px, datapath_handbacks_fd(dp), &px->hep, EPOLLIN, true))
		goto err;
	return px;
err:
	proxy_free(px);
	return NULL;
}

/* Stop taking connections; the socket may live on in a new daemon. */
static void stop_accepting(struct proxy *px)
{
	if (px->lfd < 0)
		return;
	epoll_ctl(px->epfd, EPOLL_CTL_DEL, px->lfd, NULL);
	px->fds[px->lfd].ep = NULL;
	close(px->lfd);
	px->lfd = -1;
	/* nothing new will need them: the instances get their sockets back */
	pool_free(px->pool);
	px->pool = NULL;
}

/* What a connection still waits for, for the debug log of a drain. */
static void conn_describe(const struct conn *c)
{
	const struct ps_conn *cp = c->cli.pc, *bp = c->be.pc;

	pr_debug("  %s:%u state %d block %d | client fd %d tcp %d %s mode %u fin %d shut %d "
		 "fwd %llu ingress %llu msgs %u | backend fd %d tcp %d %s mode %u fin %d shut %d "
		 "fwd %llu direct %llu leg %llu passed %llu msgs %u",
		 inet_ntoa(c->addr.sin_addr), ntohs(c->addr.sin_port), c->state, c->block,
		 c->cli.fd, sock_state(c->cli.fd), c->cli.in_map ? "spliced" : "relayed", cp->mode,
		 c->req.fin, c->req.shut,
		 (unsigned long long)cp->fwd, (unsigned long long)cp->ingress, cp->msgs,
		 c->be.fd, sock_state(c->be.fd), c->be.in_map ? "spliced" : "relayed", bp->mode,
		 c->resp.fin, c->resp.shut,
		 (unsigned long long)bp->fwd, (unsigned long long)bp->direct,
		 (unsigned long long)bp->leg_sent, (unsigned long long)bp->passed, bp->msgs);
}

static size_t conn_count(const struct proxy *px)
{
	const struct conn *c;
	size_t n = 0;

	for (c = px->all; c; c = c->anext)
		n++;
	return n;
}

int proxy_run(struct proxy *px, volatile sig_atomic_t *stop)
{
	struct epoll_event evs[MAX_EVENTS];
	int timeout = 1000, n, i;
	uint64_t drain_end = 0;

	pr_info("listening on %s:%u", inet_ntoa(px->o.listen.sin_addr), ntohs(px->o.listen.sin_port));
	for (;;) {
		if (*stop && !drain_end) {
			stop_accepting(px);
			px->draining = true;
			drain_end = ps_now_ms() + px->o.drain_ms;
			if (px->all) {
				pr_info("draining: %zu connection%s may take up to %u ms to finish",
					conn_count(px), conn_count(px) == 1 ? "" : "s", px->o.drain_ms);
				for (const struct conn *c = px->all; c; c = c->anext)
					conn_describe(c);
			}
		}
		if (drain_end) {
			if (!px->all || *stop >= 2)
				break;
			if (ps_now_ms() >= drain_end) {
				pr_warn("drain timeout: closing %zu connection%s", conn_count(px),
					conn_count(px) == 1 ? "" : "s");
				break;
			}
			if (timeout > 100)
				timeout = 100;
		}
		n = epoll_wait(px->epfd, evs, MAX_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			pr_err("epoll_wait: %s", strerror(errno));
			return -1;
		}
		for (i = 0; i < n; i++) {
			int fd = (int)(uint32_t)evs[i].data.u64;
			struct fd_ent *fe = &px->fds[fd];
			struct endpoint *ep = fe->ep;

			if (fe->gen != evs[i].data.u64 >> 32 || !ep)
				continue;	/* closed since, or at rest in the pool */
			if (ep == &px->lep) {
				accept_all(px);
			} else if (ep == &px->hep) {
				on_handbacks(px);
			} else if (!ep->conn) {
				struct proxy_hook *h = (struct proxy_hook *)ep;

				h->cb(h->arg);
			} else {
				on_event(px, ep, evs[i].events);
			}
		}
		timeout = run_timers(px);
		housekeeping(px);
		bury(px);
	}
	return 0;
}

int proxy_listen_fd(const struct proxy *px)
{
	return px->lfd;
}

const struct proxy_stats *proxy_stats(const struct proxy *px)
{
	return &px->st;
}

void proxy_free(struct proxy *px)
{
	struct conn *c;

	if (!px)
		return;
	/* close every connection still open: their sockets leave the maps */
	while ((c = px->all))
		conn_close(c);
	bury(px);
	free(px->graveyard);
	pool_free(px->pool);
	while (px->n_spare)
		free(px->spare[--px->n_spare]);
	if (px->lfd >= 0)
		close(px->lfd);
	if (px->epfd >= 0)
		close(px->epfd);
	free(px->fds);
	free(px->slot_ep);
	free(px);
}
