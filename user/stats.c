// SPDX-License-Identifier: GPL-2.0
/*
 * Routing state and counters from the BPF maps (see stats.h): the collector,
 * its Prometheus text rendering, and the table of `pathsplice status`.
 *
 * The collector reads `services` (hash), `instances` (array) and `inst_stats`
 * (per-CPU array) through the bpf() syscall only, so it works the same on the
 * daemon's own map fds and on the pinned maps of a daemon running elsewhere.
 * The maps change while they are read; each record is read whole (a service
 * record is replaced in one map update by the router), so the document may
 * mix moments a few microseconds apart but never shows a torn record.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "health.h"
#include "pathsplice.h"
#include "stats.h"
#include "util.h"

/* ---- counters shared by instances, services and totals ------------------ */

enum {
	C_CONNS_ACTIVE,
	C_CONNS_TOTAL,
	C_REQUESTS,
	C_TO_BACKEND,
	C_TO_BACKEND_DIRECT,
	C_TO_CLIENT,
	C_TO_CLIENT_DIRECT,
	C_FROM_CALLER,
	C_TO_CALLER,
	C_RETRIES,
	C_TRANSITIONS,
	C_PASSIVE_DOWNS,
	C_CHECKS_FAILED,
	C_HANDBACKS,
	C_RETRANSMIT_CUT,
	C_RETRANSMIT_UNCUT,
	C_MAX,
};

static const char *const counter_key[C_MAX] = {
	[C_CONNS_ACTIVE] = "connections_active",
	[C_CONNS_TOTAL] = "connections_total",
	[C_REQUESTS] = "requests",
	[C_TO_BACKEND] = "bytes_to_backend",
	[C_TO_BACKEND_DIRECT] = "bytes_to_backend_direct",
	[C_TO_CLIENT] = "bytes_to_client",
	[C_TO_CLIENT_DIRECT] = "bytes_to_client_direct",
	[C_FROM_CALLER] = "bytes_from_caller_direct",
	[C_TO_CALLER] = "bytes_to_caller_direct",
	[C_RETRIES] = "retries",
	[C_TRANSITIONS] = "health_transitions",
	[C_PASSIVE_DOWNS] = "passive_downs",
	[C_CHECKS_FAILED] = "checks_failed",
	[C_HANDBACKS] = "handbacks",
	[C_RETRANSMIT_CUT] = "retransmit_bytes_cut",
	[C_RETRANSMIT_UNCUT] = "retransmit_cut_failures",
};

struct counters {
	uint64_t v[C_MAX];
};

static void counters_add(struct counters *sum, const struct counters *c)
{
	for (int i = 0; i < C_MAX; i++)
		sum->v[i] += c->v[i];
}

/* ---- JSON helpers ---------------------------------------------------------- */

static json_t *jint(uint64_t v)
{
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

json_t *stats_json_string(const char *s, size_t max)
{
	size_t n = strnlen(s, max), i;
	json_t *j = json_stringn(s, n);
	char *copy;

	if (j)
		return j;
	copy = malloc(n + 1);
	if (!copy)
		return NULL;
	for (i = 0; i < n; i++)
		copy[i] = (unsigned char)s[i] >= 0x80 || !s[i] ? '?' : s[i];
	copy[n] = '\0';
	j = json_stringn(copy, n);
	free(copy);
	return j;
}

/* json_object_set_new that remembers a failure in *ok */
static void jset(json_t *obj, const char *key, json_t *val, bool *ok)
{
	if (!val || json_object_set_new(obj, key, val))
		*ok = false;
}

static void jset_counters(json_t *obj, const struct counters *c, bool *ok)
{
	for (int i = 0; i < C_MAX; i++)
		jset(obj, counter_key[i], jint(c->v[i]), ok);
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, f);
	if (vasprintf(&s, f, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* ---- reading the maps -------------------------------------------------------- */

static int map_info(int fd, struct bpf_map_info *info)
{
	__u32 len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	return bpf_obj_get_info_by_fd(fd, info, &len) ? -errno : 0;
}

/* Is the map the one this build knows (a pin of another version is not)? */
static int check_map(int fd, __u32 type, __u32 key_size, __u32 value_size, __u32 max,
		     struct bpf_map_info *info)
{
	int err = map_info(fd, info);

	if (err)
		return err;
	if (info->type != type || info->key_size != key_size || info->value_size != value_size ||
	    info->max_entries == 0 || info->max_entries > max)
		return -EPROTO;
	return 0;
}

/* a batch read lays values out 8-byte aligned, like an array of these */
_Static_assert(sizeof(struct ps_instance) % 8 == 0, "ps_instance: batch stride");

/* All `n` records of the instances array, one batch call where the kernel
 * has it, else one lookup per slot. */
static int read_instances(int fd, struct ps_instance *out, uint32_t n)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	uint32_t *keys, done = 0, next = 0, i;
	int err = 0;

	keys = calloc(n, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	while (done < n) {
		__u32 count = n - done;
		int r = bpf_map_lookup_batch(fd, done ? &next : NULL, &next, keys + done,
					     out + done, &count, &opts);

		if (r && errno != ENOENT) {
			err = -errno;
			break;
		}
		if (count > n - done)
			count = n - done;
		done += count;
		if (r || count == 0)	/* ENOENT: the end of the array */
			break;
	}
	if (!err && done < n)
		err = -EINVAL;
	if (!err) {
		/* an array batch returns every index in order; be sure of it */
		for (i = 0; i < n && keys[i] == i; i++)
			;
		if (i < n)
			err = -EINVAL;
	}
	free(keys);
	if (err == -EINVAL || err == -ENOTSUP || err == -EOPNOTSUPP || err == -ENOSYS) {
		for (i = 0; i < n; i++)
			if (bpf_map_lookup_elem(fd, &i, &out[i]))
				return -errno;
		err = 0;
	}
	return err;
}

static int cmp_svc_path(const void *a, const void *b)
{
	const struct ps_service *x = a, *y = b;

	return strncmp(x->path, y->path, PS_PATH_MAX);
}

/* Every service of the hash map, each id once, sorted by path. A key deleted
 * between two calls makes get_next_key start over: the walk is capped and ids
 * seen twice are skipped. */
static int read_services(int fd, uint32_t max, struct ps_service **out, size_t *n_out)
{
	struct ps_service *v = calloc(max, sizeof(*v));
	uint8_t *seen = calloc(PS_MAX_SERVICES, 1);
	uint64_t key, next;
	size_t n = 0, steps;
	bool first = true;
	int err = 0;

	if (!v || !seen) {
		free(v);
		free(seen);
		return -ENOMEM;
	}
	for (steps = 0; steps < 2 * (size_t)max + 2 && n < max; steps++) {
		if (bpf_map_get_next_key(fd, first ? NULL : &key, &next)) {
			if (errno != ENOENT)
				err = -errno;
			break;
		}
		first = false;
		key = next;
		if (bpf_map_lookup_elem(fd, &key, &v[n])) {
			if (errno == ENOENT)	/* removed meanwhile */
				continue;
			err = -errno;
			break;
		}
		if (v[n].id >= PS_MAX_SERVICES || seen[v[n].id])
			continue;
		seen[v[n].id] = 1;
		v[n].path[PS_PATH_MAX - 1] = '\0';
		v[n].name[PS_NAME_MAX - 1] = '\0';
		if (v[n].n_inst > PS_SVC_MAX_INST)
			v[n].n_inst = PS_SVC_MAX_INST;
		n++;
	}
	free(seen);
	if (err) {
		free(v);
		return err;
	}
	qsort(v, n, sizeof(*v), cmp_svc_path);
	*out = v;
	*n_out = n;
	return 0;
}

static const char *state_name(uint8_t state)
{
	switch (state) {
	case PS_INST_UP:	return "up";
	case PS_INST_DOWN:	return "down";
	case PS_INST_DRAINING:	return "draining";
	case PS_INST_FREE:	return "free";
	}
	return "unknown";
}

/* What collect() needs across the helpers. */
struct collect {
	const struct stats_maps *m;
	struct ps_instance *inst;	/* [n_inst] */
	uint32_t n_inst;
	void *percpu;			/* one inst_stats lookup */
	size_t percpu_stride;
	int ncpu;
	struct counters total;
	uint32_t up, draining, listed;
};

static int inst_counters(struct collect *c, uint32_t slot, struct counters *out)
{
	const struct ps_instance *pi = &c->inst[slot];
	struct ps_inst_stats k = { 0 };
	int cpu;

	if (bpf_map_lookup_elem(c->m->inst_stats_fd, &slot, c->percpu))
		return -errno;
	for (cpu = 0; cpu < c->ncpu; cpu++) {
		const struct ps_inst_stats *s =
			(const void *)((const char *)c->percpu + cpu * c->percpu_stride);

		k.req_bytes += s->req_bytes;
		k.resp_bytes += s->resp_bytes;
		k.direct_bytes += s->direct_bytes;
		k.direct_req_bytes += s->direct_req_bytes;
		k.caller_req_bytes += s->caller_req_bytes;
		k.caller_resp_bytes += s->caller_resp_bytes;
		k.requests += s->requests;
		k.handbacks += s->handbacks;
		k.rx_cut_bytes += s->rx_cut_bytes;
		k.rx_uncut += s->rx_uncut;
	}
	memset(out, 0, sizeof(*out));
	out->v[C_CONNS_ACTIVE] = pi->conns_active;
	out->v[C_CONNS_TOTAL] = pi->conns_total;
	out->v[C_REQUESTS] = k.requests + pi->user_requests;
	out->v[C_TO_BACKEND] = k.req_bytes + pi->user_req_bytes;
	out->v[C_TO_CLIENT] = k.resp_bytes + pi->user_resp_bytes;
	out->v[C_TO_CLIENT_DIRECT] = k.direct_bytes;
	out->v[C_TO_BACKEND_DIRECT] = k.direct_req_bytes;
	out->v[C_FROM_CALLER] = k.caller_req_bytes;
	out->v[C_TO_CALLER] = k.caller_resp_bytes;
	out->v[C_RETRIES] = pi->connect_failures;
	out->v[C_TRANSITIONS] = pi->transitions;
	out->v[C_PASSIVE_DOWNS] = pi->passive_downs;
	out->v[C_CHECKS_FAILED] = pi->checks_failed;
	out->v[C_HANDBACKS] = k.handbacks;
	out->v[C_RETRANSMIT_CUT] = k.rx_cut_bytes;
	out->v[C_RETRANSMIT_UNCUT] = k.rx_uncut;
	return 0;
}

/* The JSON of one instance; its counters are added to *sum. NULL with errno. */
static json_t *inst_json(struct collect *c, uint32_t slot, struct counters *sum)
{
	const struct ps_instance *pi = &c->inst[slot];
	char addr[PS_ADDR_STRLEN], why[128];
	struct counters cn;
	json_t *j;
	bool ok = true;
	int err;

	if ((err = inst_counters(c, slot, &cn))) {
		errno = -err;
		return NULL;
	}
	ps_addr_str(pi->addr, pi->port, addr, sizeof(addr));
	j = json_object();
	if (!j) {
		errno = ENOMEM;
		return NULL;
	}
	jset(j, "slot", json_integer(slot), &ok);
	jset(j, "id", stats_json_string(pi->id, sizeof(pi->id)), &ok);
	jset(j, "address", json_string(addr), &ok);
	jset(j, "state", json_string(state_name(pi->state)), &ok);
	jset(j, "reason", stats_json_string(health_reason_str(pi, why, sizeof(why)), sizeof(why)), &ok);
	jset_counters(j, &cn, &ok);
	if (!ok) {
		json_decref(j);
		errno = ENOMEM;
		return NULL;
	}
	counters_add(sum, &cn);
	counters_add(&c->total, &cn);
	c->up += pi->state == PS_INST_UP;
	c->draining += pi->state == PS_INST_DRAINING;
	return j;
}

static json_t *uptime_json(int prog_fd)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	struct timespec ts;
	uint64_t now;

	memset(&info, 0, sizeof(info));
	if (prog_fd < 0 || bpf_obj_get_info_by_fd(prog_fd, &info, &len) || !info.load_time)
		return json_null();
	clock_gettime(CLOCK_BOOTTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	return json_integer(now > info.load_time ? (json_int_t)((now - info.load_time) / 1000000000ULL) : 0);
}

json_t *stats_collect(const struct stats_maps *m)
{
	struct bpf_map_info si, ii, ki;
	struct collect c = { .m = m };
	struct ps_service *svc = NULL;
	size_t n_svc = 0, i;
	uint8_t *listed = NULL;
	int32_t *svc_index = NULL;
	json_t *root = NULL, *services, *draining, *totals, **svc_inst = NULL, **svc_obj = NULL;
	struct counters *svc_sum = NULL;
	uint32_t *svc_up = NULL;
	bool ok = true;
	int err;

	if (!m || m->services_fd < 0 || m->instances_fd < 0 || m->inst_stats_fd < 0) {
		errno = EBADF;
		return NULL;
	}
	if ((err = check_map(m->services_fd, BPF_MAP_TYPE_HASH, sizeof(__u64),
			     sizeof(struct ps_service), PS_MAX_SERVICES, &si)) ||
	    (err = check_map(m->instances_fd, BPF_MAP_TYPE_ARRAY, sizeof(__u32),
			     sizeof(struct ps_instance), PS_MAX_INSTANCES, &ii)) ||
	    (err = check_map(m->inst_stats_fd, BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(__u32),
			     sizeof(struct ps_inst_stats), PS_MAX_INSTANCES, &ki)) ||
	    (ki.max_entries < ii.max_entries && (err = -EPROTO))) {
		errno = -err;
		return NULL;
	}
	c.ncpu = libbpf_num_possible_cpus();
	if (c.ncpu <= 0) {
		errno = c.ncpu < 0 ? -c.ncpu : EINVAL;
		return NULL;
	}
	c.n_inst = ii.max_entries;
	c.percpu_stride = (sizeof(struct ps_inst_stats) + 7) & ~(size_t)7;
	c.inst = calloc(c.n_inst, sizeof(*c.inst));
	c.percpu = calloc(c.ncpu, c.percpu_stride);
	listed = calloc(c.n_inst, 1);
	svc_index = malloc(PS_MAX_SERVICES * sizeof(*svc_index));
	if (!c.inst || !c.percpu || !listed || !svc_index) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = read_instances(m->instances_fd, c.inst, c.n_inst)) ||
	    (err = read_services(m->services_fd, si.max_entries, &svc, &n_svc)))
		goto out;
	for (i = 0; i < PS_MAX_SERVICES; i++)
		svc_index[i] = -1;
	svc_inst = calloc(n_svc + 1, sizeof(*svc_inst));
	svc_obj = calloc(n_svc + 1, sizeof(*svc_obj));
	svc_sum = calloc(n_svc + 1, sizeof(*svc_sum));
	svc_up = calloc(n_svc + 1, sizeof(*svc_up));
	root = json_object();
	services = json_array();
	draining = json_array();
	totals = json_object();
	if (!svc_inst || !svc_obj || !svc_sum || !svc_up || !root) {
		json_decref(services);
		json_decref(draining);
		json_decref(totals);
		err = -ENOMEM;
		goto out;
	}
	jset(root, "uptime_seconds", uptime_json(m->prog_fd), &ok);
	jset(root, "totals", totals, &ok);
	jset(root, "services", services, &ok);
	jset(root, "draining", draining, &ok);
	if (!ok) {
		err = -ENOMEM;
		goto out;
	}

	/* each service with its list, in registry order */
	for (i = 0; i < n_svc; i++) {
		const struct ps_service *s = &svc[i];
		json_t *obj = json_object(), *arr = json_array();
		uint32_t k;

		svc_index[s->id] = (int32_t)i;
		if (!obj || !arr || json_array_append_new(services, obj)) {
			json_decref(obj);
			json_decref(arr);
			err = -ENOMEM;
			goto out;
		}
		svc_obj[i] = obj;
		svc_inst[i] = arr;
		jset(obj, "id", json_integer(s->id), &ok);
		jset(obj, "name", stats_json_string(s->name, sizeof(s->name)), &ok);
		jset(obj, "path", stats_json_string(s->path, sizeof(s->path)), &ok);
		/* placeholders, so the summary comes before the list; set below */
		jset(obj, "state", json_string("down"), &ok);
		jset(obj, "instances_up", json_integer(0), &ok);
		jset(obj, "instances_listed", json_integer(0), &ok);
		jset_counters(obj, &svc_sum[i], &ok);
		jset(obj, "instances", arr, &ok);
		if (!ok) {
			err = -ENOMEM;
			goto out;
		}
		for (k = 0; k < s->n_inst; k++) {
			uint32_t slot = s->inst[k];
			json_t *ij;

			if (slot >= c.n_inst || listed[slot])
				continue;
			listed[slot] = 1;
			c.listed++;
			svc_up[i] += c.inst[slot].state == PS_INST_UP;
			if (!(ij = inst_json(&c, slot, &svc_sum[i])) ||
			    json_array_append_new(arr, ij)) {
				err = ij ? -ENOMEM : -errno;
				goto out;
			}
		}
		jset(obj, "instances_listed", json_integer(json_array_size(arr)), &ok);
	}

	/* draining instances: under their service while it exists */
	for (uint32_t slot = 0; slot < c.n_inst; slot++) {
		const struct ps_instance *pi = &c.inst[slot];
		int32_t si_ = -1;
		json_t *ij, *dst;

		if (listed[slot] || pi->state != PS_INST_DRAINING)
			continue;
		if (pi->service < PS_MAX_SERVICES)
			si_ = svc_index[pi->service];
		ij = inst_json(&c, slot, si_ >= 0 ? &svc_sum[si_] : &svc_sum[n_svc]);
		if (!ij) {
			err = -errno;
			goto out;
		}
		if (si_ < 0)
			jset(ij, "service_id", json_integer(pi->service), &ok);
		dst = si_ >= 0 ? svc_inst[si_] : draining;
		if (!ok || json_array_append_new(dst, ij)) {
			err = -ENOMEM;
			goto out;
		}
	}

	for (i = 0; i < n_svc; i++) {
		jset(svc_obj[i], "state", json_string(svc_up[i] ? "up" : "down"), &ok);
		jset(svc_obj[i], "instances_up", json_integer(svc_up[i]), &ok);
		jset_counters(svc_obj[i], &svc_sum[i], &ok);
	}
	jset(totals, "services", json_integer(n_svc), &ok);
	jset(totals, "instances", json_integer(c.listed + c.draining), &ok);
	jset(totals, "instances_up", json_integer(c.up), &ok);
	jset(totals, "instances_draining", json_integer(c.draining), &ok);
	jset_counters(totals, &c.total, &ok);
	if (!ok)
		err = -ENOMEM;
out:
	free(c.inst);
	free(c.percpu);
	free(listed);
	free(svc_index);
	free(svc);
	free(svc_inst);
	free(svc_obj);
	free(svc_sum);
	free(svc_up);
	if (err) {
		json_decref(root);
		errno = -err;
		return NULL;
	}
	return root;
}

/* ---- Prometheus text format 0.0.4 ----------------------------------------- */

void stats_prom_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static const char *jget_str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : "";
}

static unsigned long long jget_u64(const json_t *obj, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(obj, key));

	return v > 0 ? (unsigned long long)v : 0;
}

/* An instance series: its labels, rendered once. */
struct prom_inst {
	const json_t *j;
	char *labels;			/* service="..",path="..",instance_id="..",address=".." */
};

static char *inst_labels(const char *service, const char *path, const json_t *inst)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	if (!f)
		return NULL;
	fputs("service=\"", f);
	stats_prom_escape(f, service);
	fputs("\",path=\"", f);
	stats_prom_escape(f, path);
	fputs("\",instance_id=\"", f);
	stats_prom_escape(f, jget_str(inst, "id"));
	fputs("\",address=\"", f);
	stats_prom_escape(f, jget_str(inst, "address"));
	fputc('"', f);
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

static int cmp_prom_inst(const void *a, const void *b)
{
	const struct prom_inst *x = a, *y = b;

	return strcmp(x->labels, y->labels);
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Instance families: the counter key of the stats document each one shows. */
static const struct {
	const char *name, *type, *key, *help;
} inst_families[] = {
	{ "pathsplice_instance_connections_active", "gauge", "connections_active",
	  "Backend connections to the instance open now." },
	{ "pathsplice_instance_connections_total", "counter", "connections_total",
	  "Backend connections opened to the instance." },
	{ "pathsplice_instance_requests_total", "counter", "requests",
	  "Requests routed to the instance, by the kernel and in userspace." },
	{ "pathsplice_instance_request_bytes_total", "counter", "bytes_to_backend",
	  "Bytes sent from clients to the instance." },
	{ "pathsplice_instance_request_bytes_direct_total", "counter", "bytes_to_backend_direct",
	  "Of the bytes sent to the instance, those put straight into its socket." },
	{ "pathsplice_instance_response_bytes_total", "counter", "bytes_to_client",
	  "Bytes sent from the instance to clients." },
	{ "pathsplice_instance_response_bytes_direct_total", "counter", "bytes_to_client_direct",
	  "Of the bytes sent to clients, those the instance wrote straight into the client socket." },
	{ "pathsplice_instance_caller_request_bytes_direct_total", "counter",
	  "bytes_from_caller_direct",
	  "Of the direct request bytes, those a same-host caller's sendmsg put into the instance's socket." },
	{ "pathsplice_instance_caller_response_bytes_direct_total", "counter",
	  "bytes_to_caller_direct",
	  "Of the direct response bytes, those put straight into a same-host caller's socket." },
	{ "pathsplice_instance_retries_total", "counter", "retries",
	  "Connects to the instance that failed; the request moved to the next instance." },
	{ "pathsplice_instance_health_transitions_total", "counter", "health_transitions",
	  "Changes of the instance between up and down." },
	{ "pathsplice_instance_passive_downs_total", "counter", "passive_downs",
	  "Times the data path took the instance down after a failed connect." },
	{ "pathsplice_instance_checks_failed_total", "counter", "checks_failed",
	  "Active health checks of the instance that failed." },
	{ "pathsplice_instance_handbacks_total", "counter", "handbacks",
	  "Segments the kernel handed back to userspace on connections to the instance." },
};

static const char *const inst_states[] = { "up", "down", "draining" };

/* Daemon-wide counters: keys of the stats document's "proxy" and
 * "registry" objects (the admin endpoint adds them). */
static const struct {
	const char *obj, *key, *name, *help;
} daemon_counters[] = {
	{ "proxy", "accepted", "pathsplice_connections_accepted_total",
	  "Client connections accepted." },
	{ "proxy", "spliced", "pathsplice_connections_spliced_total",
	  "Client connections whose sockets entered the sockhash." },
	{ "proxy", "relayed", "pathsplice_connections_relayed_total",
	  "Client connections relayed in userspace only." },
	{ "proxy", "reused", "pathsplice_requests_reused_total",
	  "One-shot requests sent over a kept instance connection." },
	{ "proxy", "handbacks", "pathsplice_handbacks_total",
	  "Streams the kernel handed back to the daemon." },
	{ "proxy", "reroutes", "pathsplice_reroutes_total",
	  "Keep-alive connections moved to another service." },
	{ "proxy", "reconnects", "pathsplice_reconnects_total",
	  "Client connections kept open when their instance closed between exchanges." },
	{ "proxy", "idle_closed", "pathsplice_idle_closed_total",
	  "Keep-alive connections closed idle (--idle-timeout, or a drain)." },
	{ "proxy", "response_timeouts", "pathsplice_response_timeouts_total",
	  "Requests answered 504 after --response-timeout." },
	{ "proxy", "stalls_closed", "pathsplice_stalls_closed_total",
	  "Exchanges closed after --idle-timeout with nothing moving." },
	{ "proxy", "connect_failures", "pathsplice_connect_failures_total",
	  "Connects to instances that failed." },
	{ "registry", "tables", "pathsplice_registry_tables_total",
	  "Routing tables the registry gave after the first (changes applied)." },
	{ "registry", "errors", "pathsplice_registry_errors_total",
	  "Failed registry reads, records skipped and tables not built." },
};

/* The daemon-wide counters and its own answers by status, where present. */
static void daemon_families(FILE *f, const json_t *stats)
{
	json_t *answers = json_object_get(json_object_get(stats, "proxy"), "answers"), *v;
	const char *status;

	for (size_t k = 0; k < sizeof(daemon_counters) / sizeof(daemon_counters[0]); k++) {
		v = json_object_get(json_object_get(stats, daemon_counters[k].obj),
				    daemon_counters[k].key);
		if (!json_is_integer(v))
			continue;
		family(f, daemon_counters[k].name, "counter", daemon_counters[k].help);
		fprintf(f, "%s %lld\n", daemon_counters[k].name, (long long)json_integer_value(v));
	}
	if (!json_is_object(answers))
		return;
	family(f, "pathsplice_answers_total", "counter",
	       "Answers the daemon sent itself (errors), by status.");
	json_object_foreach(answers, status, v)
		fprintf(f, "pathsplice_answers_total{status=\"%s\"} %lld\n", status,
			(long long)json_integer_value(v));
}

/* `metric{service="..",path=".."}` of a service, without the value. */
static void service_series(FILE *f, const char *metric, const json_t *s)
{
	fprintf(f, "%s{service=\"", metric);
	stats_prom_escape(f, jget_str(s, "name"));
	fputs("\",path=\"", f);
	stats_prom_escape(f, jget_str(s, "path"));
	fputs("\"}", f);
}

/* Append an instance and its labels to a growing array; -1 when out of memory. */
static int prom_inst_add(struct prom_inst **pi, size_t *n, size_t *cap, const char *service,
			 const char *path, const json_t *inst)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		struct prom_inst *bigger = realloc(*pi, ncap * sizeof(**pi));

		if (!bigger)
			return -1;
		*pi = bigger;
		*cap = ncap;
	}
	(*pi)[*n].j = inst;
	(*pi)[*n].labels = inst_labels(service, path, inst);
	if (!(*pi)[*n].labels)
		return -1;
	(*n)++;
	return 0;
}

int stats_to_prometheus(const json_t *stats, char **out, size_t *len)
{
	const json_t *services = json_object_get(stats, "services");
	const json_t *draining = json_object_get(stats, "draining");
	const json_t *uptime = json_object_get(stats, "uptime_seconds");
	const json_t *s, *inst;
	struct prom_inst *pi = NULL;
	size_t n = 0, cap = 0, i, k, si;
	char *buf = NULL;
	size_t blen = 0;
	FILE *f;
	int ret = -1;

	if (!json_is_object(stats) || !json_is_array(services)) {
		errno = EINVAL;
		return -1;
	}
	/* every instance, with its service's name and path */
	json_array_foreach(services, si, s) {
		json_array_foreach(json_object_get(s, "instances"), k, inst)
			if (prom_inst_add(&pi, &n, &cap, jget_str(s, "name"), jget_str(s, "path"),
					  inst))
				goto out;
	}
	json_array_foreach(draining, k, inst)
		if (prom_inst_add(&pi, &n, &cap, "", "", inst))
			goto out;
	/* two instances with the same labels (draining instances of removed
	 * services have no service or path to tell them apart): add the slot */
	if (n > 1) {
		qsort(pi, n, sizeof(*pi), cmp_prom_inst);
		for (i = 0; i + 1 < n; i = k) {
			for (k = i + 1; k < n && !strcmp(pi[k].labels, pi[i].labels); k++)
				;
			for (size_t d = i; k - i > 1 && d < k; d++) {
				char *full = fmt("%s,slot=\"%llu\"", pi[d].labels,
						  jget_u64(pi[d].j, "slot"));

				if (!full)
					goto out;
				free(pi[d].labels);
				pi[d].labels = full;
			}
		}
	}

	f = open_memstream(&buf, &blen);
	if (!f)
		goto out;
	if (json_is_integer(uptime)) {
		family(f, "pathsplice_uptime_seconds", "gauge",
		       "Seconds since the data path was loaded.");
		fprintf(f, "pathsplice_uptime_seconds %lld\n", (long long)json_integer_value(uptime));
	}
	family(f, "pathsplice_service_up", "gauge",
	       "1 if at least one instance of the service is up, else 0.");
	json_array_foreach(services, si, s) {
		service_series(f, "pathsplice_service_up", s);
		fprintf(f, " %d\n", !strcmp(jget_str(s, "state"), "up"));
	}
	family(f, "pathsplice_service_instances_up", "gauge",
	       "Instances of the service that are up.");
	json_array_foreach(services, si, s) {
		service_series(f, "pathsplice_service_instances_up", s);
		fprintf(f, " %llu\n", jget_u64(s, "instances_up"));
	}
	family(f, "pathsplice_instance_up", "gauge",
	       "1 if the instance is up (takes new requests), else 0.");
	for (i = 0; i < n; i++)
		fprintf(f, "pathsplice_instance_up{%s} %d\n", pi[i].labels,
			!strcmp(jget_str(pi[i].j, "state"), "up"));
	family(f, "pathsplice_instance_state", "gauge",
	       "1 for the state the instance is in: up, down or draining.");
	for (i = 0; i < n; i++)
		for (k = 0; k < sizeof(inst_states) / sizeof(inst_states[0]); k++)
			fprintf(f, "pathsplice_instance_state{%s,state=\"%s\"} %d\n", pi[i].labels,
				inst_states[k], !strcmp(jget_str(pi[i].j, "state"), inst_states[k]));
	for (k = 0; k < sizeof(inst_families) / sizeof(inst_families[0]); k++) {
		family(f, inst_families[k].name, inst_families[k].type, inst_families[k].help);
		for (i = 0; i < n; i++)
			fprintf(f, "%s{%s} %llu\n", inst_families[k].name, pi[i].labels,
				jget_u64(pi[i].j, inst_families[k].key));
	}
	daemon_families(f, stats);
	if (fclose(f)) {
		free(buf);
		buf = NULL;
		goto out;
	}
	*out = buf;
	*len = blen;
	ret = 0;
out:
	for (i = 0; i < n; i++)
		free(pi[i].labels);
	free(pi);
	if (ret)
		errno = ENOMEM;
	return ret;
}

/* ---- the status table ----------------------------------------------------- */

const char *stats_human_bytes(unsigned long long n, char *buf, size_t len)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(buf, len, "%llu B", n);
		return buf;
	}
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, unit[u]);
	return buf;
}

static void human_duration(unsigned long long s, char *buf, size_t len)
{
	if (s >= 86400)
		snprintf(buf, len, "%llud %02lluh", s / 86400, s % 86400 / 3600);
	else if (s >= 3600)
		snprintf(buf, len, "%lluh %02llum", s / 3600, s % 3600 / 60);
	else if (s >= 60)
		snprintf(buf, len, "%llum %02llus", s / 60, s % 60);
	else
		snprintf(buf, len, "%llus", s);
}

enum {
	T_NAME, T_WHERE, T_STATE, T_ACTIVE, T_CONNS, T_REQS, T_TO_BE, T_TO_CL, T_RETRIES,
	T_FAILED, T_NOTE, T_COLS,
};

static const char *const t_head[T_COLS] = {
	"SERVICE/INSTANCE", "PATH/ADDRESS", "STATE", "ACTIVE", "CONNS", "REQUESTS",
	"TO-BACKEND", "TO-CLIENT", "RETRIES", "FAILED-CHECKS", "REASON",
};

static const bool t_right[T_COLS] = {
	[T_ACTIVE] = true, [T_CONNS] = true, [T_REQS] = true, [T_TO_BE] = true,
	[T_TO_CL] = true, [T_RETRIES] = true, [T_FAILED] = true,
};

struct table {
	char *(*row)[T_COLS];
	size_t n, cap;
	bool oom;
};

static void table_add(struct table *t, char *cells[T_COLS])
{
	int i;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 32;
		void *bigger = realloc(t->row, cap * sizeof(*t->row));

		if (!bigger) {
			t->oom = true;
			for (i = 0; i < T_COLS; i++)
				free(cells[i]);
			return;
		}
		t->row = bigger;
		t->cap = cap;
	}
	for (i = 0; i < T_COLS; i++)
		t->row[t->n][i] = cells[i];
	t->n++;
}

/* Terminal columns of a UTF-8 string (one per character). */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void table_print(struct table *t, FILE *f)
{
	size_t width[T_COLS] = { 0 }, r, w;
	int i;

	for (r = 0; r < t->n; r++)
		for (i = 0; i < T_COLS; i++)
			if (t->row[r][i] && (w = text_width(t->row[r][i])) > width[i])
				width[i] = w;
	for (r = 0; r < t->n; r++) {
		int last = T_COLS - 1;
		size_t len = 0;
		char line[4096];

		while (last > 0 && (!t->row[r][last] || !*t->row[r][last]))
			last--;
		for (i = 0; i <= last; i++) {
			const char *cell = t->row[r][i] ? t->row[r][i] : "";
			size_t pad = width[i] - text_width(cell);

			if (i && len < sizeof(line))
				len += snprintf(line + len, sizeof(line) - len, "  ");
			if (len < sizeof(line))
				len += snprintf(line + len, sizeof(line) - len, "%*s%s%*s",
						t_right[i] ? (int)pad : 0, "", cell,
						t_right[i] || i == last ? 0 : (int)pad, "");
		}
		fprintf(f, "%s\n", line);
	}
}

static void table_free(struct table *t)
{
	for (size_t r = 0; r < t->n; r++)
		for (int i = 0; i < T_COLS; i++)
			free(t->row[r][i]);
	free(t->row);
}

static void counter_cells(char *cells[T_COLS], const json_t *o)
{
	char b[32];

	cells[T_ACTIVE] = fmt("%llu", jget_u64(o, "connections_active"));
	cells[T_CONNS] = fmt("%llu", jget_u64(o, "connections_total"));
	cells[T_REQS] = fmt("%llu", jget_u64(o, "requests"));
	cells[T_TO_BE] = strdup(stats_human_bytes(jget_u64(o, "bytes_to_backend"), b, sizeof(b)));
	cells[T_TO_CL] = strdup(stats_human_bytes(jget_u64(o, "bytes_to_client"), b, sizeof(b)));
	cells[T_RETRIES] = fmt("%llu", jget_u64(o, "retries"));
	cells[T_FAILED] = fmt("%llu", jget_u64(o, "checks_failed"));
}

static void inst_row(struct table *t, const json_t *inst, const char *note)
{
	char *cells[T_COLS] = { 0 };

	cells[T_NAME] = fmt("  %s", jget_str(inst, "id"));
	cells[T_WHERE] = strdup(jget_str(inst, "address"));
	cells[T_STATE] = strdup(jget_str(inst, "state"));
	counter_cells(cells, inst);
	cells[T_NOTE] = note ? strdup(note) : strdup(jget_str(inst, "reason"));
	table_add(t, cells);
}

void stats_print_table(const json_t *stats, FILE *f)
{
	const json_t *services = json_object_get(stats, "services");
	const json_t *draining = json_object_get(stats, "draining");
	const json_t *totals = json_object_get(stats, "totals");
	const json_t *uptime = json_object_get(stats, "uptime_seconds");
	const json_t *s, *inst;
	struct table t = { 0 };
	size_t si, k, n_svc = json_array_size(services), svc_up = 0;
	unsigned long long n_inst = jget_u64(totals, "instances");
	unsigned long long up = jget_u64(totals, "instances_up");
	unsigned long long dr = jget_u64(totals, "instances_draining");
	char *cells[T_COLS];
	char up_s[64] = "";

	json_array_foreach(services, si, s)
		svc_up += !strcmp(jget_str(s, "state"), "up");
	if (json_is_integer(uptime) && json_integer_value(uptime) >= 0) {
		char d[48];

		human_duration((unsigned long long)json_integer_value(uptime), d, sizeof(d));
		snprintf(up_s, sizeof(up_s), ", up %s", d);
	}
	fprintf(f, "pathsplice: %zu service%s (%zu up), %llu instance%s (%llu up, %llu down, "
		"%llu draining)%s\n", n_svc, n_svc == 1 ? "" : "s", svc_up, n_inst,
		n_inst == 1 ? "" : "s", up, n_inst - up - dr, dr, up_s);
	if (!n_svc && !json_array_size(draining)) {
		fprintf(f, "no services: the registry has none for this host, or none was read yet\n");
		return;
	}
	fputc('\n', f);

	for (k = 0; k < T_COLS; k++)
		cells[k] = strdup(t_head[k]);
	table_add(&t, cells);
	json_array_foreach(services, si, s) {
		memset(cells, 0, sizeof(cells));
		cells[T_NAME] = strdup(jget_str(s, "name"));
		cells[T_WHERE] = strdup(jget_str(s, "path"));
		cells[T_STATE] = strdup(jget_str(s, "state"));
		counter_cells(cells, s);
		cells[T_NOTE] = fmt("%llu of %llu instances up", jget_u64(s, "instances_up"),
				    jget_u64(s, "instances_listed"));
		table_add(&t, cells);
		json_array_foreach(json_object_get(s, "instances"), k, inst)
			inst_row(&t, inst, NULL);
	}
	if (json_array_size(draining)) {
		memset(cells, 0, sizeof(cells));
		cells[T_NAME] = strdup("(removed services)");
		table_add(&t, cells);
		json_array_foreach(draining, k, inst) {
			char note[64];

			snprintf(note, sizeof(note), "draining, service #%llu removed",
				 jget_u64(inst, "service_id"));
			inst_row(&t, inst, note);
		}
	}
	table_print(&t, f);
	if (t.oom)
		fprintf(f, "(out of memory: rows are missing)\n");
	table_free(&t);
}
