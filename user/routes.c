// SPDX-License-Identifier: GPL-2.0
/*
 * Route table: a host's services grouped from the registry, and the
 * longest-prefix match the kernel framer performs, done in userspace for
 * requests the kernel hands back and for the first request of a connection.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"

uint64_t ps_path_hash(const char *path, size_t len)
{
	uint64_t h = PS_FNV_OFFSET;
	size_t i;

	for (i = 0; i < len; i++)
		h = ps_hash_byte(h, (unsigned char)path[i]);
	return h;
}

/* The index slot holding path[0:len], or the empty slot that ends its probe. */
static size_t index_slot(const struct routes *rt, uint64_t hash, const char *path, size_t len)
{
	size_t pos;

	for (pos = hash & rt->index_mask; rt->index[pos]; pos = (pos + 1) & rt->index_mask) {
		const struct route_service *s = &rt->svc[rt->index[pos] - 1];

		/* the bytes decide: a hash collision must never misroute */
		if (s->hash == hash && s->path_len == len && !memcmp(s->path, path, len))
			break;
	}
	return pos;
}

const struct route_service *routes_lookup(const struct routes *rt, uint64_t hash,
					  const char *path, size_t len)
{
	size_t pos;

	if (!rt->index || len >= PS_PATH_MAX)
		return NULL;
	pos = index_slot(rt, hash, path, len);
	return rt->index[pos] ? &rt->svc[rt->index[pos] - 1] : NULL;
}

const struct route_service *routes_match(const struct routes *rt, const char *path, size_t len)
{
	const struct route_service *best = NULL, *s;
	const char *query = memchr(path, '?', len);
	uint64_t h = PS_FNV_OFFSET;
	size_t i;

	if (query)
		len = (size_t)(query - path);
	if (len == 0 || path[0] != '/')
		return NULL;
	/* candidates in increasing length, each hashed incrementally like the kernel */
	for (i = 0; i < len && i < PS_PATH_MAX; i++) {
		if (i > 0 && path[i] == '/') {
			s = routes_lookup(rt, h, path, i);
			if (s)
				best = s;
		}
		h = ps_hash_byte(h, (unsigned char)path[i]);
		if (i == 0) {
			s = routes_lookup(rt, h, path, 1);
			if (s)
				best = s;
		}
	}
	if (len < PS_PATH_MAX) {
		s = routes_lookup(rt, h, path, len);
		if (s)
			best = s;
	}
	return best;
}

static int add_instance(struct routes *rt, const struct reg_instance *ri, const char *host,
			char *err, size_t errlen)
{
	size_t len = strlen(ri->path), pos;
	uint64_t hash = ps_path_hash(ri->path, len);
	struct route_service *s;
	struct route_inst *inst;

	pos = index_slot(rt, hash, ri->path, len);
	if (rt->index[pos]) {
		s = &rt->svc[rt->index[pos] - 1];
	} else {
		if (rt->n == PS_MAX_SERVICES) {
			snprintf(err, errlen, "host \"%s\": more than %d services: service \"%s\" "
				 "(path \"%s\") is over the limit", host, PS_MAX_SERVICES,
				 ri->name, ri->path);
			return -1;
		}
		s = &rt->svc[rt->n];
		memcpy(s->name, ri->name, sizeof(s->name));
		memcpy(s->path, ri->path, len + 1);
		s->path_len = (uint16_t)len;
		s->hash = hash;
		rt->index[pos] = (uint32_t)++rt->n;
	}
	if (s->n_inst == PS_SVC_MAX_INST) {
		snprintf(err, errlen, "host \"%s\": service \"%s\" (path \"%s\"): more than %d "
			 "instances: instance \"%s\" is over the limit", host, s->name, s->path,
			 PS_SVC_MAX_INST, ri->id);
		return -1;
	}
	inst = &s->inst[s->n_inst++];
	memcpy(inst->id, ri->id, sizeof(inst->id));
	inst->addr = ri->addr ? ri->addr : htonl(INADDR_LOOPBACK);
	inst->port = ri->port;
	memcpy(inst->check, ri->check, sizeof(inst->check));
	return 0;
}

int routes_build(const struct registry *reg, const char *host, struct routes *out,
		 char *err, size_t errlen)
{
	struct routes rt = { 0 };
	size_t i, mine = 0, cap = 8;
	struct route_service *fit;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < reg->n; i++)
		mine += !strcmp(reg->inst[i].host, host);
	if (!mine)
		return 0;

	/* one service per instance at most; trimmed once the real count is known */
	if (mine > PS_MAX_SERVICES)
		mine = PS_MAX_SERVICES;
	while (cap < 2 * mine)
		cap *= 2;
	rt.svc = calloc(mine, sizeof(*rt.svc));
	rt.index = calloc(cap, sizeof(*rt.index));
	rt.index_mask = cap - 1;
	if (!rt.svc || !rt.index) {
		snprintf(err, errlen, "host \"%s\": out of memory for %zu services", host, mine);
		routes_free(&rt);
		return -1;
	}
	for (i = 0; i < reg->n; i++) {
		if (strcmp(reg->inst[i].host, host))
			continue;
		if (add_instance(&rt, &reg->inst[i], host, err, errlen) < 0) {
			routes_free(&rt);
			return -1;
		}
	}
	fit = realloc(rt.svc, rt.n * sizeof(*rt.svc));
	if (fit)
		rt.svc = fit;
	*out = rt;
	return 0;
}

void routes_free(struct routes *rt)
{
	free(rt->svc);
	free(rt->index);
	memset(rt, 0, sizeof(*rt));
}
