// SPDX-License-Identifier: GPL-2.0
/* One-shot requests on kept instance connections: see reuse.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "pathsplice.h"
#include "reuse.h"

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Are the n bytes at s the lower-case literal `lit`, ignoring case? */
static int ci_is(const uint8_t *s, size_t n, const char *lit)
{
	size_t i;

	if (n != strlen(lit))
		return 0;
	for (i = 0; i < n; i++)
		if (lower(s[i]) != lit[i])
			return 0;
	return 1;
}

static int is_ows(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* Call fn on every token (trimmed) of every Connection field of a head. */
static void each_connection_token(uint8_t *head, size_t len,
				  void (*fn)(uint8_t *tok, size_t n, int *acc), int *acc)
{
	size_t i = 0, ls, le, colon, t, ts, te;
	int start_line = 1;

	while (i < len) {
		ls = i;
		while (i < len && head[i] != '\n')
			i++;
		le = i;
		if (le > ls && head[le - 1] == '\r')
			le--;
		i++;
		if (start_line) {
			start_line = 0;
			continue;
		}
		if (le == ls)
			break;	/* the empty line: end of the head */
		for (colon = ls; colon < le && head[colon] != ':'; colon++)
			;
		if (colon == le || !ci_is(head + ls, colon - ls, "connection"))
			continue;
		for (t = colon + 1; t <= le; t++) {
			ts = t;
			while (t < le && head[t] != ',')
				t++;
			te = t;
			while (ts < te && is_ows(head[ts]))
				ts++;
			while (te > ts && is_ows(head[te - 1]))
				te--;
			fn(head + ts, te - ts, acc);
		}
	}
}

static void blank_close(uint8_t *tok, size_t n, int *acc)
{
	if (ci_is(tok, n, "close")) {
		memset(tok, ' ', n);
		(*acc)++;
	}
}

int reuse_request_head(uint8_t *head, size_t len)
{
	int blanked = 0;

	each_connection_token(head, len, blank_close, &blanked);
	return blanked;
}

static void keep_alive_to_close(uint8_t *tok, size_t n, int *acc)
{
	if (ci_is(tok, n, "keep-alive")) {
		memcpy(tok, "close     ", n);
		*acc = 1;
	} else if (ci_is(tok, n, "close")) {
		*acc = 1;
	}
}

int reuse_response_head(uint8_t *head, size_t len)
{
	int says_close = 0;

	each_connection_token(head, len, keep_alive_to_close, &says_close);
	return says_close;
}

size_t reuse_head_end(const uint8_t *head, size_t len)
{
	if (len >= 2 && head[len - 2] == '\r' && head[len - 1] == '\n')
		return len - 2;
	return len ? len - 1 : 0;
}

/* ---- the pool ------------------------------------------------------------ */

struct idle {
	int fd;
	uint32_t gen;
	uint64_t since;
};

/* One instance's idle connections, oldest first. */
struct inst_pool {
	uint32_t n;
	struct idle e[];
};

struct pool {
	uint32_t max, idle_ms, total;
	struct inst_pool *inst[PS_MAX_INSTANCES];
};

struct pool *pool_new(uint32_t max_per_inst, uint32_t idle_ms)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (p) {
		p->max = max_per_inst;
		p->idle_ms = idle_ms;
	}
	return p;
}

/* Open, and nothing to read: the instance has neither closed it nor sent
 * anything unasked. */
static int silent(int fd)
{
	char b;

	return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
	       (errno == EAGAIN || errno == EWOULDBLOCK);
}

int pool_get(struct pool *p, uint32_t inst, uint32_t gen, uint64_t now_ms)
{
	struct inst_pool *ip = inst < PS_MAX_INSTANCES ? p->inst[inst] : NULL;
	struct idle e;

	while (ip && ip->n) {
		e = ip->e[--ip->n];	/* the most recent: the least likely closed */
		p->total--;
		if (e.gen == gen && now_ms - e.since <= p->idle_ms && silent(e.fd))
			return e.fd;
		close(e.fd);
	}
	return -1;
}

void pool_put(struct pool *p, uint32_t inst, uint32_t gen, int fd, uint64_t now_ms)
{
	struct inst_pool *ip;

	if (inst >= PS_MAX_INSTANCES || !p->max) {
		close(fd);
		return;
	}
	ip = p->inst[inst];
	if (!ip) {
		ip = calloc(1, sizeof(*ip) + p->max * sizeof(ip->e[0]));
		if (!ip) {
			close(fd);
			return;
		}
		p->inst[inst] = ip;
	}
	if (ip->n == p->max) {
		close(fd);
		return;
	}
	ip->e[ip->n++] = (struct idle){ .fd = fd, .gen = gen, .since = now_ms };
	p->total++;
}

void pool_sweep(struct pool *p, uint64_t now_ms)
{
	struct inst_pool *ip;
	uint32_t i, k;

	for (i = 0; i < PS_MAX_INSTANCES && p->total; i++) {
		ip = p->inst[i];
		if (!ip || !ip->n)
			continue;
		for (k = 0; k < ip->n && now_ms - ip->e[k].since > p->idle_ms; k++)
			close(ip->e[k].fd);
		if (!k)
			continue;
		memmove(ip->e, ip->e + k, (ip->n - k) * sizeof(ip->e[0]));
		ip->n -= k;
		p->total -= k;
	}
}

uint32_t pool_size(const struct pool *p)
{
	return p->total;
}

void pool_free(struct pool *p)
{
	uint32_t i, k;

	if (!p)
		return;
	for (i = 0; i < PS_MAX_INSTANCES; i++) {
		if (!p->inst[i])
			continue;
		for (k = 0; k < p->inst[i]->n; k++)
			close(p->inst[i]->e[k].fd);
		free(p->inst[i]);
	}
	free(p);
}
