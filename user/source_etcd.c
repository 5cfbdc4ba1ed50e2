// SPDX-License-Identifier: GPL-2.0
/*
 * The etcd registry source: etcd v3 through its JSON gateway (POST
 * /v3/kv/range and POST /v3/watch, served by etcd 3.4 and later), for fleets
 * where many hosts share one registry.
 *
 *   etcd://HOST[:PORT]/PREFIX		PORT defaults to 2379
 *
 * Every key under PREFIX is one instance; its value is one instance record,
 * the JSON object a registry file lists under "instances".
 *
 * How it stays in step with etcd:
 *  1. A range read of the prefix gives every key and the store revision R.
 *  2. A watch from R + 1 streams every later change, one JSON message per
 *     line (the gateway's rendering of the gRPC stream). Events are applied
 *     to an in-memory map key -> last good value; events that arrive together
 *     are delivered as one update.
 *  3. When the stream ends (etcd restarted, connection lost, or the periodic
 *     refresh that notices a peer that went silent) the watch resumes from
 *     the last revision applied + 1, so no change is lost or applied twice.
 *  4. When etcd no longer has that revision (compacted: the watch is canceled
 *     with a compact_revision), the whole prefix is read again (1.). So is it
 *     when the map could not follow a change (limits below, out of memory).
 *
 * A failed request is retried with backoff (source_net.h) and reported once
 * per attempt. A watch is re-created every ETCD_REFRESH_MS and must be
 * confirmed by etcd within timeout_ms, so a hung etcd is noticed too. The
 * first wait after opening returns a registry or an error, whatever its
 * max_wait_ms, since the daemon decides how to start on it.
 *
 * Limits keep memory bounded: at most PS_MAX_INSTANCES keys, ETCD_KEY_MAX
 * bytes per key, ETCD_VALUE_MAX per value, REG_MAX_BYTES of values in all,
 * ETCD_MESSAGE_MAX for one range answer or watch message.
 *
 * Each key is validated on its own: a bad value is logged with its key and
 * counted, and the key keeps its last good value (or stays absent); the
 * other keys apply. The set as a whole must still be a valid registry
 * (unique ids, one path per service name): when it is not, the read fails
 * and the last delivered registry stays in force.
 *
 * Both requests run on one curl multi handle driven from source_wait(), so a
 * wait never blocks past its max_wait_ms: a range read or watch still in
 * progress simply goes on during the next call.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log.h"
#include "source_net.h"
#include "util.h"

#define ETCD_DEFAULT_PORT	2379
#define ETCD_PREFIX_MAX		256		/* bytes of the key prefix */
#define ETCD_KEY_MAX		1024		/* longer keys are refused */
#define ETCD_VALUE_MAX		16384		/* a record is a few hundred bytes */
/* a range answer or one watch message: base64 makes values 4/3 larger */
#define ETCD_MESSAGE_MAX	(2 * REG_MAX_BYTES)
#define ETCD_REFRESH_MS		60000	/* a watch is re-created this often */
#define ETCD_SETTLE_MS		20	/* events this close together are one update */
#define ETCD_STABLE_MS		1000	/* a watch that lived this long resumes at once */

#define STR_(x)	#x
#define STR(x)	STR_(x)

/* One key under the prefix and its last good value. */
struct etcd_entry {
	char *key;
	size_t klen;
	char *value;
	size_t vlen;
};

/* Sorted by key bytes, so that the delivered registry has a stable order. */
struct etcd_map {
	struct etcd_entry *e;
	size_t n, cap;
	size_t bytes;		/* sum of vlen */
};

enum etcd_phase {
	ETCD_RANGE,		/* next or current request: read the whole prefix */
	ETCD_WATCH,		/* next or current request: watch from rev + 1 */
};

/* Why the watch callback ended a watch. */
enum watch_end {
	WATCH_RUNNING,
	WATCH_COMPACTED,	/* rev + 1 is gone: read the prefix again */
	WATCH_FAILED,		/* etcd refused or broke the watch: resume it */
	WATCH_LOST_TRACK,	/* the map can no longer follow etcd: read the prefix again */
};

struct etcd_source {
	struct source base;		/* first: the source API hands this out */
	char url_range[300];
	char url_watch[300];
	char *prefix;			/* raw key bytes */
	size_t prefix_len;
	char *key_b64, *end_b64;	/* the watched range, as the gateway wants it */
	CURLM *multi;
	CURL *easy;			/* the range read or the watch */
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE];
	bool busy;			/* easy is on multi */
	enum etcd_phase phase;
	uint64_t next_ms;		/* monotonic time the next request may start */
	uint64_t started_ms;		/* of the current request */
	struct net_backoff backoff;
	struct net_body buf;		/* the range answer, or the watch's partial line */
	/* the watch */
	bool created;			/* etcd confirmed it */
	enum watch_end end;
	char why[512];			/* the reason for WATCH_FAILED / WATCH_LOST_TRACK */
	int64_t compact_rev;
	/* the state */
	struct etcd_map map;
	int64_t rev;			/* every change up to this revision is in map */
	bool dirty;			/* map changed since the last delivery */
	uint64_t dirty_ms;		/* when it first did */
	bool stale;			/* map is half-way through a change: deliver nothing */
	bool delivered;			/* a registry was returned */
	bool answered;			/* a registry or an error was returned */
};

/* ---- base64 (the gateway's encoding of keys and values) ----------------- */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* NUL-terminated encoding of n bytes, malloc'd. */
static char *b64_encode(const unsigned char *in, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = b64_alphabet[(v >> 6) & 63];
		*o++ = b64_alphabet[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);

		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Decode into out (room for n * 3 / 4 + 1 bytes); -1 on a malformed input. */
static int b64_decode(const char *in, size_t n, char *out, size_t *outlen)
{
	uint32_t acc = 0;
	size_t i, bits = 0, len = 0;

	while (n && in[n - 1] == '=')
		n--;
	for (i = 0; i < n; i++) {
		int v = b64_value((unsigned char)in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[len++] = (char)((acc >> bits) & 0xff);
		}
	}
	if (bits >= 6)
		return -1;	/* one stray character */
	out[len] = '\0';
	*outlen = len;
	return 0;
}

/*
 * The base64 string field `field` of obj, decoded into a malloc'd
 * NUL-terminated buffer. An absent field is empty (proto3 leaves out empty
 * bytes). Returns 0, -1 when malformed, -2 when longer than max.
 */
static int json_bytes(const json_t *obj, const char *field, size_t max, char **out, size_t *len)
{
	const json_t *v = json_object_get(obj, field);
	const char *s = "";
	size_t n = 0;

	if (v && !json_is_string(v))
		return -1;
	if (v) {
		s = json_string_value(v);
		n = json_string_length(v);
	}
	if (n / 4 * 3 > max + 2)
		return -2;
	*out = malloc(n / 4 * 3 + 4);
	if (!*out)
		return -1;
	if (b64_decode(s, n, *out, len) < 0) {
		free(*out);
		*out = NULL;
		return -1;
	}
	if (*len > max) {
		free(*out);
		*out = NULL;
		return -2;
	}
	return 0;
}

/* An int64 of the gateway: a decimal string (proto3 JSON) or a number; absent is 0. */
static int64_t json_i64(const json_t *v)
{
	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

/* ---- keys in messages ----------------------------------------------------- */

/* A key for a log line: visible ASCII as is, other bytes as \xNN. */
static const char *key_str(const char *key, size_t klen, char *buf, size_t len)
{
	size_t o = 0, i;

	for (i = 0; i < klen && o + 8 < len; i++) {
		unsigned char c = (unsigned char)key[i];

		if (c >= 0x21 && c <= 0x7e && c != '\\')
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
	}
	if (i < klen && o + 4 <= len)
		memcpy(buf + o, "...", 3), o += 3;
	buf[o] = '\0';
	return buf;
}

/*
 * registry_parse() numbers records ("instance #3"); here a record is a key.
 * Rewrite every "instance #N" of msg as "key <key of ents[N - 1]>". Returns
 * the number of references rewritten.
 */
static int name_keys(char *msg, size_t msglen, const struct etcd_entry *ents, size_t n)
{
	static const char ref[] = "instance #";
	char out[1024], kbuf[320];
	const char *p = msg, *hit;
	size_t o = 0;
	int rewritten = 0;

	while ((hit = strstr(p, ref)) && o < sizeof(out)) {
		char *endp;
		unsigned long idx = strtoul(hit + sizeof(ref) - 1, &endp, 10);

		if (endp == hit + sizeof(ref) - 1 || idx < 1 || idx > n) {
			o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*s",
					      (int)(endp - p), p);
		} else {
			o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*skey %s",
					      (int)(hit - p), p,
					      key_str(ents[idx - 1].key, ents[idx - 1].klen,
						      kbuf, sizeof(kbuf)));
			rewritten++;
		}
		p = endp;
	}
	if (o < sizeof(out))
		snprintf(out + o, sizeof(out) - o, "%s", p);
	snprintf(msg, msglen, "%s", out);
	return rewritten;
}

/* ---- the key map ---------------------------------------------------------- */

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* Index of key, or -1 with *pos its insertion point. */
static ssize_t map_find(const struct etcd_map *m, const char *key, size_t klen, size_t *pos)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(m->e[mid].key, m->e[mid].klen, key, klen);

		if (!c)
			return (ssize_t)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*pos = lo;
	return -1;
}

/* Set key to a copy of value. 0, or -1 when out of memory. */
static int map_put(struct etcd_map *m, const char *key, size_t klen, const char *value,
		   size_t vlen)
{
	char *v = malloc(vlen + 1), *k;
	size_t pos = 0;
	ssize_t i;

	if (!v)
		return -1;
	memcpy(v, value, vlen);
	v[vlen] = '\0';
	i = map_find(m, key, klen, &pos);
	if (i >= 0) {
		m->bytes -= m->e[i].vlen;
		free(m->e[i].value);
		m->e[i].value = v;
		m->e[i].vlen = vlen;
		m->bytes += vlen;
		return 0;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct etcd_entry *bigger = realloc(m->e, cap * sizeof(*bigger));

		if (!bigger) {
			free(v);
			return -1;
		}
		m->e = bigger;
		m->cap = cap;
	}
	k = malloc(klen + 1);
	if (!k) {
		free(v);
		return -1;
	}
	memcpy(k, key, klen);
	k[klen] = '\0';
	memmove(&m->e[pos + 1], &m->e[pos], (m->n - pos) * sizeof(*m->e));
	m->e[pos] = (struct etcd_entry){ k, klen, v, vlen };
	m->n++;
	m->bytes += vlen;
	return 0;
}

static void map_del(struct etcd_map *m, size_t i)
{
	m->bytes -= m->e[i].vlen;
	free(m->e[i].key);
	free(m->e[i].value);
	memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof(*m->e));
	m->n--;
}

static void map_free(struct etcd_map *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->e[i].key);
		free(m->e[i].value);
	}
	free(m->e);
	*m = (struct etcd_map){ 0 };
}

static bool map_equal(const struct etcd_map *a, const struct etcd_map *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		if (key_cmp(a->e[i].key, a->e[i].klen, b->e[i].key, b->e[i].klen) ||
		    a->e[i].vlen != b->e[i].vlen || memcmp(a->e[i].value, b->e[i].value, a->e[i].vlen))
			return false;
	}
	return true;
}

/* The limits a registry has anyway, checked early to bound memory. */
static int map_check_limits(const struct etcd_source *e, const struct etcd_map *m,
			    char *why, size_t whylen)
{
	if (m->n > PS_MAX_INSTANCES) {
		snprintf(why, whylen, "%s: more than the limit of %d keys under the prefix",
			 e->base.name, PS_MAX_INSTANCES);
		return -1;
	}
	if (m->bytes > REG_MAX_BYTES) {
		snprintf(why, whylen, "%s: the records under the prefix add up to more than "
			 "the limit of %u bytes", e->base.name, REG_MAX_BYTES);
		return -1;
	}
	return 0;
}

/* ---- validation ----------------------------------------------------------- */

/* The value of a kv; -1 with `why` naming the key when it cannot be had. */
static int decode_value(const struct etcd_source *e, const json_t *kv, const char *key,
			size_t klen, char **value, size_t *vlen, char *why, size_t whylen)
{
	char kbuf[320];
	int r = json_bytes(kv, "value", ETCD_VALUE_MAX, value, vlen);

	if (r == 0)
		return 0;
	snprintf(why, whylen, "%s: key %s: %s", e->base.name, key_str(key, klen, kbuf, sizeof(kbuf)),
		 r == -2 ? "value larger than the limit of " STR(ETCD_VALUE_MAX) " bytes"
			 : "value is not valid base64");
	return -1;
}

/*
 * A key's value must be exactly one valid instance record. Returns 0, or -1
 * with `why` naming the key, the field and the reason.
 */
static int check_value(const struct etcd_source *e, const char *key, size_t klen,
		       const char *value, size_t vlen, char *why, size_t whylen)
{
	const struct etcd_entry ent = { (char *)key, klen, NULL, 0 };
	struct registry reg = { 0 };
	char kbuf[320], got[32];
	json_error_t jerr;
	json_t *rec;
	char *doc;
	int ret = -1;

	/* JSON errors at the value's own line and column, before it is wrapped */
	rec = json_loadb(value, vlen, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(rec)) {
		if (rec)
			snprintf(got, sizeof(got), "%s", json_is_array(rec) ? "an array"
							 : json_is_string(rec) ? "a string"
							 : json_is_number(rec) ? "a number"
							 : json_is_null(rec) ? "null" : "a boolean");
		if (!rec && jerr.line > 0)
			snprintf(why, whylen, "%s: key %s: line %d, column %d: JSON syntax error: %s",
				 e->base.name, key_str(key, klen, kbuf, sizeof(kbuf)), jerr.line,
				 jerr.column, jerr.text);
		else
			snprintf(why, whylen, "%s: key %s: expected one instance record (a JSON "
				 "object), got %s", e->base.name,
				 key_str(key, klen, kbuf, sizeof(kbuf)), rec ? got : jerr.text);
		json_decref(rec);
		return -1;
	}
	json_decref(rec);

	/* then its fields, by the one registry parser */
	doc = malloc(vlen + 2);
	if (!doc) {
		snprintf(why, whylen, "%s: out of memory", e->base.name);
		return -1;
	}
	doc[0] = '[';
	memcpy(doc + 1, value, vlen);
	doc[vlen + 1] = ']';
	if (registry_parse(doc, vlen + 2, e->base.name, &reg, why, whylen) == 0)
		ret = 0;
	else
		name_keys(why, whylen, &ent, 1);
	free(doc);
	registry_free(&reg);
	return ret;
}

/*
 * Log and count a skipped value (it is not an SRC_ERROR: the other keys
 * apply); the key keeps its last good value, if any.
 */
static void skip_value(struct etcd_source *e, const char *why, bool had_good)
{
	e->base.errors++;
	pr_warn("registry: %s; %s", why, had_good ? "the key keeps its last good value"
					 : "the key is left out until it has a good value");
}

static void mark_dirty(struct etcd_source *e)
{
	if (!e->dirty)
		e->dirty_ms = ps_now_ms();
	e->dirty = true;
}

static void skip_long_key(struct etcd_source *e)
{
	e->base.errors++;
	pr_warn("registry: %s: a key longer than the limit of %d bytes is left out",
		e->base.name, ETCD_KEY_MAX);
}

/* ---- delivering ------------------------------------------------------------ */

/*
 * The map as a registry: the values, each validated already, in one array,
 * through registry_parse() for the rules across records.
 */
static enum source_result deliver(struct etcd_source *e, struct registry *out,
				  char *err, size_t errlen)
{
	char *doc, *p;
	size_t i;
	int ret;

	e->dirty = false;
	e->dirty_ms = 0;
	e->answered = true;
	doc = malloc(e->map.bytes + e->map.n + 2);
	if (!doc) {
		snprintf(err, errlen, "%s: out of memory", e->base.name);
		return SRC_ERROR;
	}
	p = doc;
	*p++ = '[';
	for (i = 0; i < e->map.n; i++) {
		if (i)
			*p++ = ',';
		memcpy(p, e->map.e[i].value, e->map.e[i].vlen);
		p += e->map.e[i].vlen;
	}
	*p++ = ']';
	ret = registry_parse(doc, (size_t)(p - doc), e->base.name, out, err, errlen);
	free(doc);
	if (ret < 0) {
		name_keys(err, errlen, e->map.e, e->map.n);
		return SRC_ERROR;
	}
	e->delivered = true;
	return SRC_UPDATE;
}

/* ---- requests ------------------------------------------------------------- */

/* What an error answer of the gateway says: its "message", or its first line. */
static void gateway_error(const char *body, size_t len, char *out, size_t outlen)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	const json_t *msg = NULL;
	size_t n = 0;

	if (json_is_object(root)) {
		msg = json_object_get(root, "message");
		if (!json_is_string(msg) && json_is_object(json_object_get(root, "error")))
			msg = json_object_get(json_object_get(root, "error"), "message");
	}
	if (json_is_string(msg)) {
		snprintf(out, outlen, "%s", json_string_value(msg));
	} else {
		while (n < len && n + 1 < outlen && body[n] != '\n') {
			out[n] = isprint((unsigned char)body[n]) ? body[n] : '?';
			n++;
		}
		out[n] = '\0';
	}
	json_decref(root);
}

/*
 * Apply one watch event to the map. -1 ends the watch with WATCH_LOST_TRACK:
 * the events before it in the same message are applied already, so only a
 * new range read gives a consistent map again.
 */
static int apply_event(struct etcd_source *e, const json_t *ev, int64_t *max_rev)
{
	const json_t *kv = json_object_get(ev, "kv");
	const json_t *type = json_object_get(ev, "type");
	char *key = NULL, *value = NULL, why[1024];
	size_t klen, vlen, pos;
	ssize_t i;
	int ret = 0, r;

	r = json_is_object(kv) ? json_bytes(kv, "key", ETCD_KEY_MAX, &key, &klen) : -1;
	if (r == -2) {
		skip_long_key(e);
		return 0;
	}
	if (r < 0) {
		snprintf(e->why, sizeof(e->why), "%s: watch: an event without a valid key",
			 e->base.name);
		e->end = WATCH_LOST_TRACK;
		return -1;
	}
	if (json_i64(json_object_get(kv, "mod_revision")) > *max_rev)
		*max_rev = json_i64(json_object_get(kv, "mod_revision"));
	if (klen < e->prefix_len || memcmp(key, e->prefix, e->prefix_len))
		goto out;	/* not ours */
	i = map_find(&e->map, key, klen, &pos);

	if (json_is_string(type) && !strcmp(json_string_value(type), "DELETE")) {
		if (i >= 0) {
			map_del(&e->map, (size_t)i);
			mark_dirty(e);
		}
		goto out;
	}
	if (decode_value(e, kv, key, klen, &value, &vlen, why, sizeof(why)) < 0) {
		skip_value(e, why, i >= 0);
		goto out;
	}
	if (i >= 0 && e->map.e[i].vlen == vlen && !memcmp(e->map.e[i].value, value, vlen))
		goto out;
	if (check_value(e, key, klen, value, vlen, why, sizeof(why)) < 0) {
		skip_value(e, why, i >= 0);
		goto out;
	}
	if (map_put(&e->map, key, klen, value, vlen) < 0) {
		snprintf(e->why, sizeof(e->why), "%s: out of memory", e->base.name);
		e->end = WATCH_LOST_TRACK;
		ret = -1;
		goto out;
	}
	mark_dirty(e);
	if (map_check_limits(e, &e->map, e->why, sizeof(e->why)) < 0) {
		e->end = WATCH_LOST_TRACK;
		ret = -1;
	}
out:
	free(key);
	free(value);
	return ret;
}

/* One message of the watch stream. -1 ends the watch (e->end says why). */
static int watch_message(struct etcd_source *e, const char *line, size_t len)
{
	const json_t *res, *events, *ev;
	int64_t max_rev = 0;
	json_error_t jerr;
	json_t *root;
	char msg[256];
	int ret = -1;
	size_t i;

	root = json_loadb(line, len, 0, &jerr);
	if (!json_is_object(root)) {
		snprintf(e->why, sizeof(e->why), "%s: watch: etcd sent a message that is not "
			 "a JSON object%s%s", e->base.name, root ? "" : ": ", root ? "" : jerr.text);
		e->end = WATCH_FAILED;
		goto out;
	}
	res = json_object_get(root, "result");
	if (!json_is_object(res)) {
		/* the gateway reports a broken stream as {"error": {...}} */
		gateway_error(line, len, msg, sizeof(msg));
		snprintf(e->why, sizeof(e->why), "%s: watch: etcd: %s", e->base.name,
			 msg[0] ? msg : "an answer without a result");
		e->end = WATCH_FAILED;
		goto out;
	}
	if (json_is_true(json_object_get(res, "canceled"))) {
		e->compact_rev = json_i64(json_object_get(res, "compact_revision"));
		if (e->compact_rev > 0) {
			e->end = WATCH_COMPACTED;
		} else {
			const json_t *reason = json_object_get(res, "cancel_reason");

			snprintf(e->why, sizeof(e->why), "%s: watch: canceled by etcd: %s",
				 e->base.name, json_is_string(reason) ? json_string_value(reason)
								      : "no reason given");
			e->end = WATCH_FAILED;
		}
		goto out;
	}
	events = json_object_get(res, "events");
	if (json_is_true(json_object_get(res, "created"))) {
		/* its header has the store's revision, not how far the watch got */
		e->created = true;
	} else if (!json_array_size(events)) {
		/* a progress notification: every change up to its revision was sent */
		max_rev = json_i64(json_object_get(json_object_get(res, "header"), "revision"));
	}
	json_array_foreach(events, i, ev) {
		if (apply_event(e, ev, &max_rev) < 0)
			goto out;
	}
	if (max_rev > e->rev)
		e->rev = max_rev;
	ret = 0;
out:
	json_decref(root);
	return ret;
}

/* CURLOPT_WRITEFUNCTION of the watch: split the stream into messages. */
static size_t watch_write(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	struct etcd_source *e = ctx;
	size_t n = size * nmemb, start = 0, scan;
	long code = 0;
	char *nl;

	if (e->end != WATCH_RUNNING)
		return 0;
	curl_easy_getinfo(e->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		char msg[256];

		gateway_error(ptr, n, msg, sizeof(msg));
		snprintf(e->why, sizeof(e->why), "%s: watch: HTTP %ld%s%s", e->base.name, code,
			 msg[0] ? ": " : "", msg);
		e->end = WATCH_FAILED;
		return 0;
	}
	scan = e->buf.len;
	if (net_body_append(&e->buf, ptr, n) < 0) {
		snprintf(e->why, sizeof(e->why), "%s: watch: %s", e->base.name,
			 e->buf.too_big ? "a message larger than the limit" : "out of memory");
		e->end = WATCH_LOST_TRACK;
		return 0;
	}
	while ((nl = memchr(e->buf.data + scan, '\n', e->buf.len - scan))) {
		size_t end = (size_t)(nl - e->buf.data);

		if (end > start && watch_message(e, e->buf.data + start, end - start) < 0)
			return 0;
		start = scan = end + 1;
	}
	if (start) {
		memmove(e->buf.data, e->buf.data + start, e->buf.len - start);
		e->buf.len -= start;
	}
	return n;
}

static int start_request(struct etcd_source *e, char *err, size_t errlen)
{
	char body[1024];

	net_body_clear(&e->buf);
	e->errbuf[0] = '\0';
	if (e->phase == ETCD_RANGE) {
		snprintf(body, sizeof(body),
			 "{\"key\":\"%s\",\"range_end\":\"%s\",\"limit\":\"%d\"}",
			 e->key_b64, e->end_b64, PS_MAX_INSTANCES + 1);
		curl_easy_setopt(e->easy, CURLOPT_URL, e->url_range);
		curl_easy_setopt(e->easy, CURLOPT_TIMEOUT_MS, (long)e->base.opts.timeout_ms);
		curl_easy_setopt(e->easy, CURLOPT_WRITEFUNCTION, net_body_write);
		curl_easy_setopt(e->easy, CURLOPT_WRITEDATA, &e->buf);
	} else {
		/* progress_notify: etcd tells an idle watch how far it got, now and then */
		snprintf(body, sizeof(body),
			 "{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\","
			 "\"start_revision\":\"%lld\",\"progress_notify\":true}}",
			 e->key_b64, e->end_b64, (long long)e->rev + 1);
		curl_easy_setopt(e->easy, CURLOPT_URL, e->url_watch);
		curl_easy_setopt(e->easy, CURLOPT_TIMEOUT_MS, (long)ETCD_REFRESH_MS);
		curl_easy_setopt(e->easy, CURLOPT_WRITEFUNCTION, watch_write);
		curl_easy_setopt(e->easy, CURLOPT_WRITEDATA, e);
		e->created = false;
		e->end = WATCH_RUNNING;
	}
	curl_easy_setopt(e->easy, CURLOPT_COPYPOSTFIELDS, body);
	if (curl_multi_add_handle(e->multi, e->easy) != CURLM_OK) {
		snprintf(err, errlen, "%s: cannot start a request", e->base.name);
		return -1;
	}
	e->busy = true;
	e->started_ms = ps_now_ms();
	return 0;
}

static void stop_request(struct etcd_source *e)
{
	if (e->busy)
		curl_multi_remove_handle(e->multi, e->easy);
	e->busy = false;
}

/* A failed request (source_wait() counts it): retry `phase` after the backoff. */
static enum source_result request_failed(struct etcd_source *e, enum etcd_phase phase)
{
	e->answered = true;
	e->phase = phase;
	e->next_ms = ps_now_ms() + net_backoff_next(&e->backoff);
	return SRC_ERROR;
}

/*
 * The range read ended. Returns true when *result is the answer of this
 * wait; false when the watch should just start.
 */
static bool range_done(struct etcd_source *e, CURLcode res, enum source_result *result,
		       struct registry *out, char *err, size_t errlen)
{
	const json_t *kvs, *kv;
	struct etcd_map fresh = { 0 };
	char why[1024], detail[CURL_ERROR_SIZE + 64];
	json_error_t jerr;
	json_t *root = NULL;
	long code = 0;
	int64_t rev;
	size_t i;

	*result = SRC_ERROR;
	if (res != CURLE_OK) {
		net_describe(e->easy, res, e->errbuf, &e->buf, detail, sizeof(detail));
		snprintf(err, errlen, "%s: range read: %s", e->base.name, detail);
		goto fail;
	}
	curl_easy_getinfo(e->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200) {
		gateway_error(e->buf.data ? e->buf.data : "", e->buf.len, detail, sizeof(detail));
		snprintf(err, errlen, "%s: range read: HTTP %ld%s%s", e->base.name, code,
			 detail[0] ? ": " : "", detail);
		goto fail;
	}
	root = json_loadb(e->buf.data ? e->buf.data : "", e->buf.len, 0, &jerr);
	rev = json_i64(json_object_get(json_object_get(root, "header"), "revision"));
	kvs = json_object_get(root, "kvs");
	if (!json_is_object(root) || rev <= 0 || (kvs && !json_is_array(kvs))) {
		snprintf(err, errlen, "%s: range read: not an etcd range answer%s%s", e->base.name,
			 root ? "" : ": ", root ? "" : jerr.text);
		goto fail;
	}
	if (json_is_true(json_object_get(root, "more")) || json_array_size(kvs) > PS_MAX_INSTANCES) {
		snprintf(err, errlen, "%s: %lld keys under the prefix, more than the limit of %d",
			 e->base.name, (long long)json_i64(json_object_get(root, "count")),
			 PS_MAX_INSTANCES);
		goto fail;
	}
	json_array_foreach(kvs, i, kv) {
		char *key = NULL, *value = NULL;
		size_t klen, vlen, pos;
		ssize_t old;
		bool good;
		int r;

		r = json_bytes(kv, "key", ETCD_KEY_MAX, &key, &klen);
		if (r == -2) {
			skip_long_key(e);
			continue;
		}
		if (r < 0) {
			snprintf(err, errlen, "%s: range read: a key that is not valid base64",
				 e->base.name);
			goto fail;
		}
		old = map_find(&e->map, key, klen, &pos);
		good = decode_value(e, kv, key, klen, &value, &vlen, why, sizeof(why)) == 0 &&
		       check_value(e, key, klen, value, vlen, why, sizeof(why)) == 0;
		if (good) {
			r = map_put(&fresh, key, klen, value, vlen);
		} else {
			skip_value(e, why, old >= 0);
			r = old >= 0 ? map_put(&fresh, key, klen, e->map.e[old].value,
					       e->map.e[old].vlen) : 0;
		}
		free(key);
		free(value);
		if (r < 0) {
			snprintf(err, errlen, "%s: out of memory", e->base.name);
			goto fail;
		}
	}
	if (map_check_limits(e, &fresh, err, errlen) < 0)
		goto fail;
	json_decref(root);

	if (!e->delivered || !map_equal(&e->map, &fresh))
		mark_dirty(e);
	map_free(&e->map);
	e->map = fresh;
	e->stale = false;
	e->rev = rev;
	e->phase = ETCD_WATCH;
	e->next_ms = 0;
	net_backoff_reset(&e->backoff);
	if (!e->dirty)
		return false;
	*result = deliver(e, out, err, errlen);
	return true;

fail:
	json_decref(root);
	map_free(&fresh);
	*result = request_failed(e, ETCD_RANGE);
	return true;
}

/* The watch ended. Same contract as range_done(). */
static bool watch_done(struct etcd_source *e, CURLcode res, enum source_result *result,
		       char *err, size_t errlen)
{
	char detail[CURL_ERROR_SIZE + 64];
	uint64_t lived = ps_now_ms() - e->started_ms;
	long code = 0;

	switch (e->end) {
	case WATCH_COMPACTED:
		pr_info("registry: %s: revision %lld is compacted (etcd keeps %lld and later): "
			"reading the whole prefix again", e->base.name, (long long)e->rev + 1,
			(long long)e->compact_rev);
		e->phase = ETCD_RANGE;
		e->next_ms = 0;
		return false;
	case WATCH_LOST_TRACK:
		snprintf(err, errlen, "%s; reading the whole prefix again", e->why);
		e->stale = true;
		*result = request_failed(e, ETCD_RANGE);
		return true;
	case WATCH_FAILED:
		snprintf(err, errlen, "%s", e->why);
		*result = request_failed(e, ETCD_WATCH);
		return true;
	case WATCH_RUNNING:
		break;
	}
	if (res == CURLE_OPERATION_TIMEDOUT && e->created) {
		/* the periodic refresh: resume at once, nothing was lost */
		e->next_ms = 0;
		return false;
	}
	curl_easy_getinfo(e->easy, CURLINFO_RESPONSE_CODE, &code);
	if (res == CURLE_OK && code != 200)
		snprintf(detail, sizeof(detail), "HTTP %ld", code);
	else if (res == CURLE_OK)
		snprintf(detail, sizeof(detail), "etcd ended the stream");
	else
		net_describe(e->easy, res, e->errbuf, NULL, detail, sizeof(detail));
	if (e->created && lived >= ETCD_STABLE_MS) {
		/* a watch that worked: resume it at once, errors from now on back off */
		snprintf(err, errlen, "%s: watch interrupted: %s; resuming from revision %lld",
			 e->base.name, detail, (long long)e->rev + 1);
		net_backoff_reset(&e->backoff);
		e->answered = true;
		e->next_ms = 0;
		*result = SRC_ERROR;
		return true;
	}
	snprintf(err, errlen, "%s: watch: %s", e->base.name, detail);
	*result = request_failed(e, ETCD_WATCH);
	return true;
}

static enum source_result etcd_wait(struct source *s, uint32_t max_wait_ms, struct registry *out,
				    char *err, size_t errlen)
{
	struct etcd_source *e = (struct etcd_source *)s;
	uint64_t now = ps_now_ms(), deadline = now + max_wait_ms;
	enum source_result result;

	/* the first answer is a registry or an error, never "nothing yet" */
	if (!e->answered && deadline < now + e->base.opts.timeout_ms + SRC_STEP_MS)
		deadline = now + e->base.opts.timeout_ms + SRC_STEP_MS;

	for (;;) {
		struct CURLMsg *msg;
		int running, left, timeout;
		bool ended = false;
		CURLcode res = CURLE_OK;

		if (source_stopping(s))
			return SRC_SAME;
		now = ps_now_ms();
		/* changes wait a moment for the rest of their burst, never for a retry */
		if (e->dirty && !e->stale &&
		    (!e->busy || now >= e->dirty_ms + ETCD_SETTLE_MS || now >= deadline))
			return deliver(e, out, err, errlen);
		if (!e->busy) {
			if (now < e->next_ms) {
				if (now >= deadline)
					return SRC_SAME;
				net_sleep_until(s, e->next_ms < deadline ? e->next_ms : deadline);
				continue;
			}
			if (start_request(e, err, errlen) < 0)
				return request_failed(e, e->phase);
		}

		curl_multi_perform(e->multi, &running);
		while ((msg = curl_multi_info_read(e->multi, &left))) {
			if (msg->msg == CURLMSG_DONE) {
				res = msg->data.result;
				ended = true;
			}
		}
		if (!ended && e->phase == ETCD_WATCH && !e->created &&
		    ps_now_ms() - e->started_ms > e->base.opts.timeout_ms) {
			ended = true;
			e->end = WATCH_FAILED;
			snprintf(e->why, sizeof(e->why), "%s: watch: no answer within %u ms",
				 e->base.name, e->base.opts.timeout_ms);
		}
		if (ended) {
			bool answer;

			stop_request(e);
			if (e->phase == ETCD_RANGE)
				answer = range_done(e, res, &result, out, err, errlen);
			else
				answer = watch_done(e, res, &result, err, errlen);
			if (answer)
				return result;
			continue;
		}

		now = ps_now_ms();
		if (e->dirty && !e->stale && (now >= e->dirty_ms + ETCD_SETTLE_MS || now >= deadline))
			return deliver(e, out, err, errlen);
		if (now >= deadline)
			return SRC_SAME;
		timeout = (int)(deadline - now < SRC_STEP_MS ? deadline - now : SRC_STEP_MS);
		if (e->dirty && !e->stale && e->dirty_ms + ETCD_SETTLE_MS - now < (uint64_t)timeout)
			timeout = (int)(e->dirty_ms + ETCD_SETTLE_MS - now);
		curl_multi_poll(e->multi, NULL, 0, timeout, NULL);
	}
}

static void etcd_close(struct source *s)
{
	struct etcd_source *e = (struct etcd_source *)s;

	stop_request(e);
	curl_easy_cleanup(e->easy);
	curl_multi_cleanup(e->multi);
	curl_slist_free_all(e->headers);
	net_body_free(&e->buf);
	map_free(&e->map);
	free(e->prefix);
	free(e->key_b64);
	free(e->end_b64);
	free(e);
	net_global_cleanup();
}

static const struct source_ops etcd_ops = {
	.wait = etcd_wait,
	.close = etcd_close,
};

/*
 * etcd://HOST[:PORT]/PREFIX: fills the request URLs and the prefix. HOST is a
 * name, an IPv4 address or a bracketed IPv6 address.
 */
static int parse_spec(struct etcd_source *e, const char *spec, char *err, size_t errlen)
{
	const char *hp = spec + strlen("etcd://"), *slash, *colon, *p;
	char host[256];
	unsigned long port = ETCD_DEFAULT_PORT;
	size_t hlen;

	slash = strchr(hp, '/');
	if (!slash) {
		snprintf(err, errlen, "%s: expected etcd://HOST[:PORT]/PREFIX", spec);
		return -1;
	}
	colon = NULL;
	for (p = hp; p < slash; p++) {
		if (*p == ':' && (hp[0] != '[' || (p > hp && p[-1] == ']')))
			colon = p;
	}
	hlen = (size_t)((colon ? colon : slash) - hp);
	if (!hlen || hlen >= sizeof(host)) {
		snprintf(err, errlen, "%s: expected etcd://HOST[:PORT]/PREFIX, the host is %s",
			 spec, hlen ? "too long" : "missing");
		return -1;
	}
	memcpy(host, hp, hlen);
	host[hlen] = '\0';
	for (p = host; *p; p++) {
		if (!isalnum((unsigned char)*p) && !strchr(".-[]:", *p)) {
			snprintf(err, errlen, "%s: '%c' is not allowed in the host name", spec, *p);
			return -1;
		}
	}
	if (colon) {
		char *end;

		port = strtoul(colon + 1, &end, 10);
		if (end != slash || colon + 1 == slash || port < 1 || port > 65535) {
			snprintf(err, errlen, "%s: expected a port 1..65535 after the host", spec);
			return -1;
		}
	}
	e->prefix_len = strlen(slash);
	if (e->prefix_len > ETCD_PREFIX_MAX) {
		snprintf(err, errlen, "%s: the prefix is longer than %d bytes", spec,
			 ETCD_PREFIX_MAX);
		return -1;
	}
	for (p = slash; *p; p++) {
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e || strchr("%?#", *p)) {
			snprintf(err, errlen, "%s: the prefix may hold visible ASCII except "
				 "'%%', '?' and '#'", spec);
			return -1;
		}
	}
	snprintf(e->url_range, sizeof(e->url_range), "http://%s:%lu/v3/kv/range", host, port);
	snprintf(e->url_watch, sizeof(e->url_watch), "http://%s:%lu/v3/watch", host, port);
	e->prefix = strdup(slash);
	if (!e->prefix) {
		snprintf(err, errlen, "%s: out of memory", spec);
		return -1;
	}
	return 0;
}

/* The key range of the prefix: [prefix, prefix with its last byte + 1). */
static int make_range(struct etcd_source *e)
{
	unsigned char end[ETCD_PREFIX_MAX];
	size_t n = e->prefix_len;

	memcpy(end, e->prefix, n);
	while (n && end[n - 1] == 0xff)
		n--;
	end[n - 1]++;	/* the prefix is visible ASCII: some byte can be bumped */
	e->key_b64 = b64_encode((const unsigned char *)e->prefix, e->prefix_len);
	e->end_b64 = b64_encode(end, n);
	return e->key_b64 && e->end_b64 ? 0 : -1;
}

struct source *source_etcd_open(const char *spec, const struct source_opts *opts,
				char *err, size_t errlen)
{
	struct etcd_source *e;

	if (strncmp(spec, "etcd://", 7)) {
		snprintf(err, errlen, "%s: not an etcd:// registry", spec);
		return NULL;
	}
	if (strlen(spec) >= sizeof(e->base.name)) {
		snprintf(err, errlen, "%.64s...: longer than %zu bytes", spec,
			 sizeof(e->base.name) - 1);
		return NULL;
	}
	if (net_global_init(spec, err, errlen) < 0)
		return NULL;
	e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(err, errlen, "%s: out of memory", spec);
		net_global_cleanup();
		return NULL;
	}
	e->base.ops = &etcd_ops;
	e->base.opts = *opts;
	if (!e->base.opts.timeout_ms)
		e->base.opts.timeout_ms = SRC_DEFAULT_TIMEOUT_MS;
	snprintf(e->base.name, sizeof(e->base.name), "%s", spec);
	e->phase = ETCD_RANGE;
	e->buf.max = ETCD_MESSAGE_MAX;
	if (parse_spec(e, spec, err, errlen) < 0)
		goto fail;
	e->multi = curl_multi_init();
	e->easy = net_easy_new(&e->base, e->errbuf);
	e->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (e->headers && !curl_slist_append(e->headers, "Expect:")) {
		curl_slist_free_all(e->headers);
		e->headers = NULL;
	}
	if (!e->multi || !e->easy || !e->headers || make_range(e) < 0) {
		snprintf(err, errlen, "%s: out of memory", spec);
		goto fail;
	}
	curl_easy_setopt(e->easy, CURLOPT_HTTPHEADER, e->headers);
	return &e->base;
fail:
	etcd_close(&e->base);
	return NULL;
}
