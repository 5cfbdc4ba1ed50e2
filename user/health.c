// SPDX-License-Identifier: GPL-2.0
/*
 * Active health checks and passive detection (see health.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include "health.h"
#include "log.h"
#include "util.h"

#define TICK_MS		50		/* scheduling and timeout resolution */
#define TIMER_KEY	UINT32_MAX	/* epoll key of the timerfd */
#define RESP_PEEK	32		/* enough for "HTTP/1.1 200" */

/* A check in progress, or the wait for the next one. */
struct hslot {
	uint32_t gen;			/* ps_instance.gen this state belongs to; 0 = none */
	int fd;				/* the check's socket, -1 between checks */
	bool http;
	bool sent;
	uint64_t next_at;		/* when the next check starts */
	uint64_t deadline;		/* when the running one times out */
	uint32_t fails, oks;		/* consecutive results */
	uint32_t rlen;
	char rbuf[RESP_PEEK];
};

struct health {
	struct router *r;
	struct health_opts o;
	int epfd;
	int tfd;
	struct hslot *s;		/* [PS_MAX_INSTANCES] */
	uint32_t seed;
};

static struct ps_instance *inst(struct health *h, uint32_t slot)
{
	return &h->r->dp->instances[slot];
}

static uint8_t state_of(const struct ps_instance *pi)
{
	return __atomic_load_n(&pi->state, __ATOMIC_ACQUIRE);
}

const char *health_reason_str(const struct ps_instance *pi, char *buf, size_t len)
{
	switch (pi->reason) {
	case PS_CHK_NONE:		return "not checked yet";
	case PS_CHK_OK:			return "check passed";
	case PS_CHK_REFUSED:		return "connection refused";
	case PS_CHK_TIMEOUT:		return "timeout";
	case PS_CHK_HTTP_STATUS:
		snprintf(buf, len, "HTTP %u", pi->status);
		return buf;
	case PS_CHK_BAD_ANSWER:		return "no HTTP answer";
	case PS_CHK_ERROR:
		snprintf(buf, len, "%s", strerror(pi->check_errno));
		return buf;
	case PS_CHK_PASSIVE_REFUSED:	return "connect refused on the data path";
	case PS_CHK_PASSIVE_TIMEOUT:	return "connect timed out on the data path";
	}
	return "?";
}

/* Is any instance of the service of `slot` up? */
static bool service_up(struct health *h, uint32_t svc)
{
	const struct router_service *rs;
	uint32_t k;

	if (svc >= PS_MAX_SERVICES)
		return false;
	rs = &h->r->svc[svc];
	for (k = 0; k < rs->n_inst; k++)
		if (state_of(inst(h, rs->slot[k])) == PS_INST_UP)
			return true;
	return false;
}

static void log_change(struct health *h, uint32_t slot, const char *what)
{
	struct ps_instance *pi = inst(h, slot);
	char a[PS_ADDR_STRLEN], why[64];

	ps_addr_str(pi->addr, pi->port, a, sizeof(a));
	if (state_of(pi) == PS_INST_UP)
		pr_info("health: %s: instance %s %s up (%s)", router_service_name(h->r, pi->service),
			pi->id, a, what);
	else
		pr_warn("health: %s: instance %s %s down: %s (%s)",
			router_service_name(h->r, pi->service), pi->id, a,
			health_reason_str(pi, why, sizeof(why)), what);
}

/* Move an instance between up and down, saying so once. */
static void transition(struct health *h, uint32_t slot, uint8_t to, const char *what)
{
	struct ps_instance *pi = inst(h, slot);
	bool svc_was_up = service_up(h, pi->service);
	bool svc_is_up;

	__atomic_store_n(&pi->state, to, __ATOMIC_RELEASE);
	pi->transitions++;
	log_change(h, slot, what);
	svc_is_up = service_up(h, pi->service);
	if (svc_was_up && !svc_is_up)
		pr_warn("health: service %s has no instance up: its requests get 503",
			router_service_name(h->r, pi->service));
	else if (!svc_was_up && svc_is_up)
		pr_info("health: service %s is back: an instance is up",
			router_service_name(h->r, pi->service));
}

static void check_close(struct health *h, struct hslot *hs)
{
	if (hs->fd >= 0) {
		epoll_ctl(h->epfd, EPOLL_CTL_DEL, hs->fd, NULL);
		close(hs->fd);
		hs->fd = -1;
	}
}

/* A check ended: count it and apply fall / rise. */
static void check_done(struct health *h, uint32_t slot, enum ps_check_reason why, uint16_t status,
		       int err)
{
	struct hslot *hs = &h->s[slot];
	struct ps_instance *pi = inst(h, slot);
	uint8_t st = state_of(pi);
	char what[64];

	check_close(h, hs);
	hs->next_at = ps_now_ms() + h->o.interval_ms;
	if (st != PS_INST_UP && st != PS_INST_DOWN)
		return;
	if (why == PS_CHK_OK) {
		hs->fails = 0;
		hs->oks++;
		if (pi->reason == PS_CHK_NONE)
			pi->reason = PS_CHK_OK;
		if (st == PS_INST_DOWN && hs->oks >= h->o.rise) {
			pi->reason = PS_CHK_OK;
			snprintf(what, sizeof(what), "%u check%s passed", hs->oks, hs->oks == 1 ? "" : "s");
			transition(h, slot, PS_INST_UP, what);
		}
		return;
	}
	hs->oks = 0;
	hs->fails++;
	pi->checks_failed++;
	if (st == PS_INST_UP && hs->fails >= h->o.fall) {
		pi->reason = why;
		pi->status = status;
		pi->check_errno = err;
		snprintf(what, sizeof(what), "%u check%s failed", hs->fails, hs->fails == 1 ? "" : "s");
		transition(h, slot, PS_INST_DOWN, what);
	} else if (st == PS_INST_DOWN) {
		/* keep the latest reason visible while it stays down */
		pi->reason = why;
		pi->status = status;
		pi->check_errno = err;
	}
}

static enum ps_check_reason errno_reason(int err)
{
	return err == ECONNREFUSED ? PS_CHK_REFUSED :
	       err == ETIMEDOUT ? PS_CHK_TIMEOUT : PS_CHK_ERROR;
}

static int check_watch(struct health *h, uint32_t slot, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u32 = slot };

	return epoll_ctl(h->epfd, EPOLL_CTL_MOD, h->s[slot].fd, &ev);
}

/* The socket is writable (connected) or readable (answer). */
static void check_io(struct health *h, uint32_t slot)
{
	struct hslot *hs = &h->s[slot];
	struct ps_instance *pi = inst(h, slot);
	socklen_t len = sizeof(int);
	int err = 0;

	if (hs->fd < 0)
		return;
	if (!hs->sent) {
		char req[PS_PATH_MAX + 160], a[PS_ADDR_STRLEN];
		int n;

		if (getsockopt(hs->fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
			check_done(h, slot, errno_reason(err ? err : errno), 0, err ? err : errno);
			return;
		}
		if (!hs->http) {
			check_done(h, slot, PS_CHK_OK, 0, 0);
			return;
		}
		n = snprintf(req, sizeof(req),
			     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pathsplice-health\r\n"
			     "Connection: close\r\n\r\n", h->r->inst[slot].check,
			     ps_addr_str(pi->addr, pi->port, a, sizeof(a)));
		if (send(hs->fd, req, n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
			check_done(h, slot, errno_reason(errno), 0, errno);
			return;
		}
		hs->sent = true;
		check_watch(h, slot, EPOLLIN);
		return;
	}
	for (;;) {
		ssize_t n = recv(hs->fd, hs->rbuf + hs->rlen, sizeof(hs->rbuf) - 1 - hs->rlen,
				 MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			check_done(h, slot, errno_reason(errno), 0, errno);
			return;
		}
		hs->rlen += n;
		hs->rbuf[hs->rlen] = '\0';
		/* "HTTP/1.x NNN" is all a check needs */
		if (hs->rlen >= 12 || n == 0) {
			unsigned status;

			if (hs->rlen >= 12 && !strncmp(hs->rbuf, "HTTP/1.", 7) && hs->rbuf[8] == ' ' &&
			    sscanf(hs->rbuf + 9, "%3u", &status) == 1 && status >= 100 && status <= 999)
				check_done(h, slot, status >= 200 && status < 400 ? PS_CHK_OK :
					   PS_CHK_HTTP_STATUS, status, 0);
			else
				check_done(h, slot, PS_CHK_BAD_ANSWER, 0, 0);
			return;
		}
	}
}

static void check_start(struct health *h, uint32_t slot, uint64_t now)
{
	struct hslot *hs = &h->s[slot];
	struct ps_instance *pi = inst(h, slot);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = slot };
	int one = 1;

	hs->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	hs->http = h->r->inst[slot].check[0] != '\0';
	hs->sent = false;
	hs->rlen = 0;
	hs->deadline = now + h->o.timeout_ms;
	if (hs->fd < 0) {
		check_done(h, slot, PS_CHK_ERROR, 0, errno);
		return;
	}
	setsockopt(hs->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sa.sin_addr.s_addr = pi->addr;
	sa.sin_port = pi->port;
	if (connect(hs->fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
		check_done(h, slot, errno_reason(errno), 0, errno);
		return;
	}
	if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, hs->fd, &ev)) {
		check_done(h, slot, PS_CHK_ERROR, 0, errno);
		return;
	}
}

/* Every tick: start due checks, time out slow ones, follow slot changes. */
static void schedule(struct health *h)
{
	uint64_t now = ps_now_ms();
	uint32_t slot;

	for (slot = 0; slot < PS_MAX_INSTANCES; slot++) {
		struct hslot *hs = &h->s[slot];
		struct ps_instance *pi = inst(h, slot);
		uint8_t st = state_of(pi);

		if (st != PS_INST_UP && st != PS_INST_DOWN) {
			if (hs->gen) {
				check_close(h, hs);
				hs->gen = 0;
			}
			continue;
		}
		if (hs->gen != pi->gen) {
			/* a new instance: its first check somewhere in the next interval */
			check_close(h, hs);
			memset(hs, 0, sizeof(*hs));
			hs->fd = -1;
			hs->gen = pi->gen;
			h->seed = h->seed * 1103515245 + 12345;
			hs->next_at = now + (h->seed >> 8) % (h->o.interval_ms ? h->o.interval_ms : 1);
		}
		if (hs->fd >= 0 && now >= hs->deadline)
			check_done(h, slot, PS_CHK_TIMEOUT, 0, ETIMEDOUT);
		else if (hs->fd < 0 && now >= hs->next_at)
			check_start(h, slot, now);
	}
}

void health_run(void *arg)
{
	struct health *h = arg;
	struct epoll_event evs[64];
	int n, i;

	while ((n = epoll_wait(h->epfd, evs, 64, 0)) > 0) {
		for (i = 0; i < n; i++) {
			uint32_t key = evs[i].data.u32;

			if (key == TIMER_KEY) {
				uint64_t ticks;

				if (read(h->tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
					pr_err("health: timerfd: %s", strerror(errno));
				schedule(h);
			} else if (key < PS_MAX_INSTANCES) {
				check_io(h, key);
			}
		}
		if (n < 64)
			break;
	}
}

void health_passive(struct health *h, uint32_t slot, enum ps_check_reason why)
{
	struct ps_instance *pi;
	struct hslot *hs;

	if (slot >= PS_MAX_INSTANCES)
		return;
	pi = inst(h, slot);
	hs = &h->s[slot];
	if (state_of(pi) != PS_INST_UP)
		return;
	pi->reason = why;
	pi->passive_downs++;
	hs->oks = 0;
	hs->fails = h->o.fall;
	transition(h, slot, PS_INST_DOWN, "passive");
}

int health_fd(const struct health *h)
{
	return h->epfd;
}

struct health *health_new(struct router *r, const struct health_opts *opts)
{
	struct health *h = calloc(1, sizeof(*h));
	struct itimerspec its = {
		.it_interval = { 0, TICK_MS * 1000000L },
		.it_value = { 0, TICK_MS * 1000000L },
	};
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = TIMER_KEY };
	uint32_t i;

	if (!h)
		return NULL;
	h->r = r;
	h->o = *opts;
	h->epfd = h->tfd = -1;
	h->seed = (uint32_t)ps_now_ms() ^ (uint32_t)getpid();
	h->s = calloc(PS_MAX_INSTANCES, sizeof(*h->s));
	if (!h->s)
		goto err;
	for (i = 0; i < PS_MAX_INSTANCES; i++)
		h->s[i].fd = -1;
	h->epfd = epoll_create1(EPOLL_CLOEXEC);
	h->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (h->epfd < 0 || h->tfd < 0 || timerfd_settime(h->tfd, 0, &its, NULL) ||
	    epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->tfd, &ev)) {
		pr_err("health: %s", strerror(errno));
		goto err;
	}
	return h;
err:
	health_free(h);
	return NULL;
}

void health_free(struct health *h)
{
	uint32_t i;

	if (!h)
		return;
	for (i = 0; h->s && i < PS_MAX_INSTANCES; i++)
		check_close(h, &h->s[i]);
	if (h->tfd >= 0)
		close(h->tfd);
	if (h->epfd >= 0)
		close(h->epfd);
	free(h->s);
	free(h);
}
