// SPDX-License-Identifier: GPL-2.0
/*
 * Registry parser: the one place registry JSON is validated.
 *
 * Strict on everything that reaches the data path (a wrong path or port would
 * misroute traffic), lenient only on unknown fields, so that newer registries
 * still load. A document is accepted whole or not at all.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "registry.h"

/* Where the parser is, for error messages. */
struct reg_ctx {
	const char *source;
	char *err;
	size_t errlen;
	size_t index;		/* record number counted from 1; 0 outside records */
	const char *id;		/* the record's id once it is known to be valid */
};

/* "<source>: instance #N (id "x"): field "f": <reason>"; always returns -1. */
static int reg_fail(const struct reg_ctx *c, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int reg_fail(const struct reg_ctx *c, const char *field, const char *fmt, ...)
{
	char rec[PS_NAME_MAX + 48] = "", fld[48] = "", reason[768];
	va_list ap;

	if (!c->err || !c->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (c->index && c->id)
		snprintf(rec, sizeof(rec), "instance #%zu (id \"%s\"): ", c->index, c->id);
	else if (c->index)
		snprintf(rec, sizeof(rec), "instance #%zu: ", c->index);
	if (field)
		snprintf(fld, sizeof(fld), "field \"%s\": ", field);
	snprintf(c->err, c->errlen, "%s: %s%s%s", c->source, rec, fld, reason);
	return -1;
}

/* A JSON value as it would be written, shortened, for "got ..." in errors. */
static const char *describe(const json_t *v, char *buf, size_t len)
{
	char *s;

	if (json_is_object(v))
		return "an object";
	if (json_is_array(v))
		return "an array";
	s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
	if (!s)
		return "an unprintable value";
	if (strlen(s) < len)
		snprintf(buf, len, "%s", s);
	else
		snprintf(buf, len, "%.*s...", (int)(len - 4), s);
	free(s);
	return buf;
}

static bool is_visible(unsigned char b)
{
	return b >= 0x21 && b <= 0x7e;
}

/* One byte of a rejected string, readable in an error message. */
static const char *describe_byte(unsigned char b, char *buf, size_t len)
{
	if (is_visible(b))
		snprintf(buf, len, "'%c'", b);
	else
		snprintf(buf, len, "byte 0x%02x", b);
	return buf;
}

/*
 * Look up a string field. Returns 1 with `*val` set when present, 0 when
 * absent and optional, -1 (error reported) otherwise.
 */
static int get_string(const struct reg_ctx *c, const json_t *rec, const char *field,
		      bool required, const json_t **val)
{
	char got[48];
	const json_t *v = json_object_get(rec, field);

	if (!v) {
		if (required)
			return reg_fail(c, field, "missing");
		return 0;
	}
	if (!json_is_string(v))
		return reg_fail(c, field, "expected a string, got %s",
				describe(v, got, sizeof(got)));
	*val = v;
	return 1;
}

/* id, name, host: non-empty, shorter than PS_NAME_MAX, printable ASCII without spaces. */
static int parse_token(const struct reg_ctx *c, const json_t *rec, const char *field,
		       char out[PS_NAME_MAX])
{
	const json_t *v;
	const char *s;
	char b[16];
	size_t len, i;

	if (get_string(c, rec, field, true, &v) < 0)
		return -1;
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0)
		return reg_fail(c, field, "must not be empty");
	if (len >= PS_NAME_MAX)
		return reg_fail(c, field, "%zu bytes, longer than the limit of %d",
				len, PS_NAME_MAX - 1);
	for (i = 0; i < len; i++) {
		if (!is_visible((unsigned char)s[i]))
			return reg_fail(c, field, "%s at offset %zu; only printable ASCII "
					"without spaces (0x21-0x7e) is allowed",
					describe_byte((unsigned char)s[i], b, sizeof(b)), i);
	}
	memcpy(out, s, len + 1);
	return 0;
}

/*
 * The service path. Routing compares raw bytes (the kernel hashes the request
 * target as it arrives), so anything that a client could spell two ways, or
 * that never reaches the path matcher, is rejected rather than normalised.
 */
static int parse_path(const struct reg_ctx *c, const json_t *rec, char out[PS_PATH_MAX])
{
	const json_t *v;
	const char *s;
	char got[48], b[16];
	size_t len, i, seg;

	if (get_string(c, rec, "path", true, &v) < 0)
		return -1;
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0)
		return reg_fail(c, "path", "must not be empty");
	if (s[0] != '/')
		return reg_fail(c, "path", "must start with '/', got %s",
				describe(v, got, sizeof(got)));
	if (len >= PS_PATH_MAX)
		return reg_fail(c, "path", "%zu bytes, longer than the limit of %d",
				len, PS_PATH_MAX - 1);
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!is_visible(ch))
			return reg_fail(c, "path", "%s at offset %zu; only visible ASCII "
					"(0x21-0x7e) is allowed",
					describe_byte(ch, b, sizeof(b)), i);
		if (ch == '?' || ch == '#' || ch == '%')
			return reg_fail(c, "path", "'%c' at offset %zu is not allowed: paths "
					"are matched on raw bytes, without query, fragment or "
					"percent-decoding", ch, i);
	}
	/* segments start after each '/'; a trailing '/' is the one empty segment allowed */
	for (seg = 1, i = 1; i <= len; i++) {
		if (i < len && s[i] != '/')
			continue;
		if (i == seg && i < len)
			return reg_fail(c, "path", "empty segment (\"//\") in %s",
					describe(v, got, sizeof(got)));
		if ((i - seg == 1 && s[seg] == '.') ||
		    (i - seg == 2 && s[seg] == '.' && s[seg + 1] == '.'))
			return reg_fail(c, "path", "\".\" and \"..\" segments are not allowed, "
					"got %s", describe(v, got, sizeof(got)));
		seg = i + 1;
	}
	if (len > 1 && s[len - 1] == '/')
		len--;
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

/* The health-check request path: an origin-form target, query allowed. */
static int parse_check(const struct reg_ctx *c, const json_t *rec, char out[PS_PATH_MAX])
{
	const json_t *v;
	const char *s;
	char got[48], b[16];
	size_t len, i;
	int ret;

	ret = get_string(c, rec, "check", false, &v);
	if (ret <= 0) {
		out[0] = '\0';
		return ret;
	}
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0 || s[0] != '/')
		return reg_fail(c, "check", "must start with '/', got %s",
				describe(v, got, sizeof(got)));
	if (len >= PS_PATH_MAX)
		return reg_fail(c, "check", "%zu bytes, longer than the limit of %d",
				len, PS_PATH_MAX - 1);
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!is_visible(ch) || ch == '#')
			return reg_fail(c, "check", "%s at offset %zu; only visible ASCII "
					"(0x21-0x7e) without '#' is allowed",
					describe_byte(ch, b, sizeof(b)), i);
	}
	memcpy(out, s, len + 1);
	return 0;
}

static int parse_port(const struct reg_ctx *c, const json_t *rec, uint16_t *port)
{
	const json_t *v = json_object_get(rec, "port");
	char got[48];

	if (!v)
		return reg_fail(c, "port", "missing");
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
		return reg_fail(c, "port", "expected an integer 1..65535, got %s",
				describe(v, got, sizeof(got)));
	*port = (uint16_t)json_integer_value(v);
	return 0;
}

/* Optional IPv4 the instance is reached at; 0 (absent) means 127.0.0.1 downstream. */
static int parse_address(const struct reg_ctx *c, const json_t *rec, uint32_t *addr)
{
	const json_t *v;
	struct in_addr in;
	char got[48];
	uint32_t h;
	int ret;

	*addr = 0;
	ret = get_string(c, rec, "address", false, &v);
	if (ret <= 0)
		return ret;
	if (inet_pton(AF_INET, json_string_value(v), &in) != 1)
		return reg_fail(c, "address", "expected a dotted IPv4 address such as "
				"\"127.0.0.2\", got %s", describe(v, got, sizeof(got)));
	h = ntohl(in.s_addr);
	if (h == 0 || h == 0xffffffffu || (h >> 28) == 0xe)
		return reg_fail(c, "address", "%s is not a unicast address an instance "
				"can listen on", describe(v, got, sizeof(got)));
	*addr = in.s_addr;
	return 0;
}

static int parse_record(const struct reg_ctx *rc, const json_t *rec, struct reg_instance *inst)
{
	struct reg_ctx c = *rc;
	char got[48];

	if (!json_is_object(rec))
		return reg_fail(&c, NULL, "expected an object, got %s",
				describe(rec, got, sizeof(got)));
	if (parse_token(&c, rec, "id", inst->id) < 0)
		return -1;
	c.id = inst->id;
	if (parse_token(&c, rec, "name", inst->name) < 0 ||
	    parse_path(&c, rec, inst->path) < 0 ||
	    parse_token(&c, rec, "host", inst->host) < 0 ||
	    parse_port(&c, rec, &inst->port) < 0 ||
	    parse_address(&c, rec, &inst->addr) < 0 ||
	    parse_check(&c, rec, inst->check) < 0)
		return -1;
	return 0;
}

/*
 * Open-addressing index of records by one string field (id, name or path),
 * for the rules that span records. Slots hold record index + 1; 0 is empty.
 */
struct field_index {
	uint32_t *slot;
	size_t mask;
	size_t off;		/* offsetof(struct reg_instance, <field>) */
};

static const char *field_of(const struct reg_instance *inst, size_t off)
{
	return (const char *)inst + off;
}

/* The record holding the same value as inst[i] in the indexed field; adds i if none. */
static const struct reg_instance *index_claim(struct field_index *fi,
					      const struct reg_instance *inst, size_t i)
{
	const char *key = field_of(&inst[i], fi->off);
	uint64_t h = PS_FNV_OFFSET;
	size_t pos;

	for (const char *p = key; *p; p++)
		h = ps_hash_byte(h, (unsigned char)*p);
	for (pos = h & fi->mask; fi->slot[pos]; pos = (pos + 1) & fi->mask) {
		const struct reg_instance *other = &inst[fi->slot[pos] - 1];

		if (!strcmp(field_of(other, fi->off), key))
			return other;
	}
	fi->slot[pos] = (uint32_t)(i + 1);
	return NULL;
}

/* Unique ids; one name per path and one path per name (a service is the pair). */
static int check_across(const struct reg_ctx *rc, const struct reg_instance *inst, size_t n)
{
	struct field_index by_id, by_path, by_name;
	size_t cap = 8, i;
	uint32_t *slots;
	int ret = -1;

	while (cap < 2 * n)
		cap *= 2;
	slots = calloc(3 * cap, sizeof(*slots));
	if (!slots)
		return reg_fail(rc, NULL, "out of memory");
	by_id = (struct field_index){ slots, cap - 1, offsetof(struct reg_instance, id) };
	by_path = (struct field_index){ slots + cap, cap - 1, offsetof(struct reg_instance, path) };
	by_name = (struct field_index){ slots + 2 * cap, cap - 1,
					offsetof(struct reg_instance, name) };

	for (i = 0; i < n; i++) {
		struct reg_ctx c = *rc;
		const struct reg_instance *other;

		c.index = i + 1;
		c.id = inst[i].id;
		other = index_claim(&by_id, inst, i);
		if (other) {
			reg_fail(&c, "id", "duplicate of instance #%zu",
				 (size_t)(other - inst) + 1);
			goto cleanup;
		}
		other = index_claim(&by_path, inst, i);
		if (other && strcmp(other->name, inst[i].name)) {
			reg_fail(&c, "name", "\"%s\" differs from \"%s\" of instance #%zu "
				 "(id \"%s\") at the same path \"%s\"; a service is one "
				 "name+path pair", inst[i].name, other->name,
				 (size_t)(other - inst) + 1, other->id, inst[i].path);
			goto cleanup;
		}
		other = index_claim(&by_name, inst, i);
		if (other && strcmp(other->path, inst[i].path)) {
			reg_fail(&c, "path", "\"%s\" differs from \"%s\" of instance #%zu "
				 "(id \"%s\") with the same name \"%s\"; a service is one "
				 "name+path pair", inst[i].path, other->path,
				 (size_t)(other - inst) + 1, other->id, inst[i].name);
			goto cleanup;
		}
	}
	ret = 0;
cleanup:
	free(slots);
	return ret;
}

/* The instance array of a document: {"instances": [...]} or [...]. */
static const json_t *document_instances(const struct reg_ctx *c, const json_t *root)
{
	const json_t *list;
	char got[48];

	if (json_is_array(root))
		return root;
	if (!json_is_object(root)) {
		reg_fail(c, NULL, "top level: expected {\"instances\": [...]} or an array of "
			 "instances, got %s", describe(root, got, sizeof(got)));
		return NULL;
	}
	list = json_object_get(root, "instances");
	if (!list) {
		reg_fail(c, "instances", "missing from the top-level object");
		return NULL;
	}
	if (!json_is_array(list)) {
		reg_fail(c, "instances", "expected an array, got %s",
			 describe(list, got, sizeof(got)));
		return NULL;
	}
	return list;
}

int registry_parse(const char *text, size_t len, const char *source,
		   struct registry *out, char *err, size_t errlen)
{
	struct reg_ctx c = { source ? source : "registry", err, errlen, 0, NULL };
	struct reg_instance *inst = NULL;
	const json_t *list;
	json_error_t jerr;
	json_t *root;
	size_t n, i;
	int ret = -1;

	out->inst = NULL;
	out->n = 0;
	if (len > REG_MAX_BYTES)
		return reg_fail(&c, NULL, "%zu bytes, more than the limit of %u",
				len, REG_MAX_BYTES);

	root = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (jerr.line > 0)
			return reg_fail(&c, NULL, "line %d, column %d: JSON syntax error: %s",
					jerr.line, jerr.column, jerr.text);
		return reg_fail(&c, NULL, "JSON syntax error: %s", jerr.text);
	}

	list = document_instances(&c, root);
	if (!list)
		goto cleanup;
	n = json_array_size(list);
	if (n > PS_MAX_INSTANCES) {
		reg_fail(&c, NULL, "%zu instances, more than the limit of %d",
			 n, PS_MAX_INSTANCES);
		goto cleanup;
	}
	if (n) {
		inst = calloc(n, sizeof(*inst));
		if (!inst) {
			reg_fail(&c, NULL, "out of memory");
			goto cleanup;
		}
	}
	for (i = 0; i < n; i++) {
		c.index = i + 1;
		if (parse_record(&c, json_array_get(list, i), &inst[i]) < 0)
			goto cleanup;
	}
	c.index = 0;
	if (check_across(&c, inst, n) < 0)
		goto cleanup;

	out->inst = inst;
	out->n = n;
	inst = NULL;
	ret = 0;
cleanup:
	free(inst);
	json_decref(root);
	return ret;
}

/* Read a whole regular file of at most REG_MAX_BYTES into a malloc'd buffer. */
static int read_file(const struct reg_ctx *c, const char *path, char **buf, size_t *len)
{
	size_t cap = 4096, used = 0;
	char *data = NULL;
	struct stat st;
	int fd, ret = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return reg_fail(c, NULL, "cannot open: %s", strerror(errno));
	if (fstat(fd, &st) < 0) {
		reg_fail(c, NULL, "cannot stat: %s", strerror(errno));
		goto cleanup;
	}
	if (!S_ISREG(st.st_mode)) {
		reg_fail(c, NULL, "not a regular file");
		goto cleanup;
	}
	if ((uint64_t)st.st_size > REG_MAX_BYTES) {
		reg_fail(c, NULL, "%jd bytes, more than the limit of %u",
			 (intmax_t)st.st_size, REG_MAX_BYTES);
		goto cleanup;
	}
	/* the size is only a hint: the file may grow while it is read */
	if ((size_t)st.st_size >= cap)
		cap = (size_t)st.st_size + 1;
	data = malloc(cap);
	if (!data) {
		reg_fail(c, NULL, "out of memory");
		goto cleanup;
	}
	for (;;) {
		ssize_t got;

		if (used == cap) {
			char *bigger;

			if (cap > REG_MAX_BYTES) {
				reg_fail(c, NULL, "more than the limit of %u bytes", REG_MAX_BYTES);
				goto cleanup;
			}
			cap = cap * 2 > REG_MAX_BYTES + 1 ? REG_MAX_BYTES + 1 : cap * 2;
			bigger = realloc(data, cap);
			if (!bigger) {
				reg_fail(c, NULL, "out of memory");
				goto cleanup;
			}
			data = bigger;
		}
		got = read(fd, data + used, cap - used);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			reg_fail(c, NULL, "cannot read: %s", strerror(errno));
			goto cleanup;
		}
		if (got == 0)
			break;
		used += (size_t)got;
	}
	*buf = data;
	*len = used;
	data = NULL;
	ret = 0;
cleanup:
	free(data);
	close(fd);
	return ret;
}

int registry_load_file(const char *path, struct registry *out, char *err, size_t errlen)
{
	struct reg_ctx c = { path, err, errlen, 0, NULL };
	char *text = NULL;
	size_t len = 0;
	int ret;

	out->inst = NULL;
	out->n = 0;
	if (read_file(&c, path, &text, &len) < 0)
		return -1;
	ret = registry_parse(text, len, path, out, err, errlen);
	free(text);
	return ret;
}

void registry_free(struct registry *reg)
{
	free(reg->inst);
	reg->inst = NULL;
	reg->n = 0;
}
