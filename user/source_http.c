// SPDX-License-Identifier: GPL-2.0
/*
 * The HTTP registry source: GET the registry URL every poll_ms.
 *
 * Requests are conditional: the ETag of the last registry that parsed is sent
 * back as If-None-Match, so an unchanged registry costs the server a 304 and
 * us nothing. A 200 whose body is byte for byte the last good one (a server
 * without ETags) is "same" too, without a parse. Only a good registry updates
 * the remembered ETag and body: after a bad answer the next request still
 * names the last good one, so the server keeps sending its new (bad) version
 * and the error keeps being reported until it is fixed.
 *
 * Failures (HTTP error statuses, transport errors, timeouts, oversized or
 * invalid registries) are retried with backoff instead of poll_ms; the first
 * good answer ends the backoff and is returned at once.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "source_net.h"
#include "util.h"

#define HTTP_ETAG_MAX		256	/* longer ETags are not remembered */
#define HTTP_REASON_MAX		96
#define HTTP_MAX_REDIRS		3

struct http_source {
	struct source base;		/* first: the source API hands this out */
	CURLM *multi;
	CURL *easy;			/* one handle: its connection is reused between polls */
	char errbuf[CURL_ERROR_SIZE];
	struct net_body body;		/* the answer being read */
	char *good;			/* the last body that parsed; NULL before one did */
	size_t good_len;
	char etag[HTTP_ETAG_MAX];	/* ETag of `good`, "" when it had none */
	char resp_etag[HTTP_ETAG_MAX];	/* ETag of the answer being read */
	char reason[HTTP_REASON_MAX];	/* its status line's reason phrase */
	uint64_t next_ms;		/* monotonic time of the next request; 0: at once */
	struct net_backoff backoff;
	bool failing;			/* the last request failed */
};

/* "Name: value" of a header line, value trimmed; false when it is another header. */
static bool header_value(const char *line, size_t len, const char *name,
			 const char **val, size_t *vlen)
{
	size_t nlen = strlen(name);

	if (len <= nlen || strncasecmp(line, name, nlen) || line[nlen] != ':')
		return false;
	line += nlen + 1;
	len -= nlen + 1;
	while (len && (*line == ' ' || *line == '\t'))
		line++, len--;
	while (len && isspace((unsigned char)line[len - 1]))
		len--;
	*val = line;
	*vlen = len;
	return true;
}

/* CURLOPT_HEADERFUNCTION: the ETag and the reason phrase of the final answer. */
static size_t http_header(char *line, size_t size, size_t nmemb, void *ctx)
{
	struct http_source *h = ctx;
	size_t len = size * nmemb;
	const char *v;
	size_t vlen;

	if (len >= 5 && !memcmp(line, "HTTP/", 5)) {
		/* a new status line (after a redirect or a 100): forget the last head */
		const char *sp = memchr(line, ' ', len);

		h->resp_etag[0] = '\0';
		h->reason[0] = '\0';
		sp = sp ? memchr(sp + 1, ' ', len - (size_t)(sp + 1 - line)) : NULL;
		if (sp) {
			v = sp + 1;
			vlen = len - (size_t)(v - line);
			while (vlen && isspace((unsigned char)v[vlen - 1]))
				vlen--;
			snprintf(h->reason, sizeof(h->reason), "%.*s", (int)vlen, v);
			/* it ends up in a log line */
			for (char *c = h->reason; *c; c++)
				if (!isprint((unsigned char)*c))
					*c = '?';
		}
	} else if (header_value(line, len, "ETag", &v, &vlen)) {
		if (vlen < sizeof(h->resp_etag) && !memchr(v, '\r', vlen) && !memchr(v, '\n', vlen)) {
			memcpy(h->resp_etag, v, vlen);
			h->resp_etag[vlen] = '\0';
		}
	}
	return len;
}

/* A failed read (source_wait() counts it): schedule the retry. */
static enum source_result http_fail(struct http_source *h)
{
	h->failing = true;
	h->next_ms = ps_now_ms() + net_backoff_next(&h->backoff);
	return SRC_ERROR;
}

static void http_succeed(struct http_source *h)
{
	net_backoff_reset(&h->backoff);
	h->next_ms = ps_now_ms() + h->base.opts.poll_ms;
}

/*
 * The registry is unchanged: nothing new, unless this ends a run of failures.
 * Then the last good registry is delivered again, so that the controller
 * sees the recovery (its table does not change).
 */
static enum source_result http_unchanged(struct http_source *h, struct registry *out,
					 char *err, size_t errlen)
{
	bool was_failing = h->failing;

	h->failing = false;
	if (!was_failing)
		return SRC_SAME;
	if (registry_parse(h->good, h->good_len, h->base.name, out, err, errlen) < 0)
		return http_fail(h);
	return SRC_UPDATE;
}

/* One conditional GET and what it means for the registry. */
static enum source_result http_fetch(struct http_source *h, struct registry *out,
				     char *err, size_t errlen)
{
	struct curl_slist *headers = NULL, *more;
	char inm[HTTP_ETAG_MAX + 32], why[CURL_ERROR_SIZE + 64];
	const char *name = h->base.name;
	struct registry reg;
	long code = 0;
	CURLcode res;

	net_body_clear(&h->body);
	h->resp_etag[0] = h->reason[0] = h->errbuf[0] = '\0';
	headers = curl_slist_append(NULL, "Accept: application/json");
	if (headers && h->etag[0]) {
		snprintf(inm, sizeof(inm), "If-None-Match: %s", h->etag);
		more = curl_slist_append(headers, inm);
		if (!more) {
			curl_slist_free_all(headers);
			headers = NULL;
		} else {
			headers = more;
		}
	}
	if (!headers) {
		snprintf(err, errlen, "%s: out of memory", name);
		return http_fail(h);
	}
	curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, headers);
	res = net_run(h->multi, h->easy, &h->base);
	curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);

	if (res == CURLE_ABORTED_BY_CALLBACK && source_stopping(&h->base))
		return SRC_SAME;
	if (res != CURLE_OK) {
		net_describe(h->easy, res, h->errbuf, &h->body, why, sizeof(why));
		snprintf(err, errlen, "%s: %s", name, why);
		return http_fail(h);
	}
	curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code == 304 && h->good) {
		http_succeed(h);
		return http_unchanged(h, out, err, errlen);
	}
	if (code != 200) {
		snprintf(err, errlen, "%s: HTTP %ld%s%s", name, code, h->reason[0] ? " " : "",
			 h->reason);
		return http_fail(h);
	}
	if (h->good && h->body.len == h->good_len && !memcmp(h->body.data, h->good, h->good_len)) {
		memcpy(h->etag, h->resp_etag, sizeof(h->etag));
		http_succeed(h);
		return http_unchanged(h, out, err, errlen);
	}
	if (registry_parse(h->body.data ? h->body.data : "", h->body.len, name, &reg,
			   err, errlen) < 0)
		return http_fail(h);

	/* keep this body as the last good one; its buffer is not reused */
	free(h->good);
	h->good = h->body.data;
	h->good_len = h->body.len;
	h->body.data = NULL;
	h->body.len = h->body.cap = 0;
	memcpy(h->etag, h->resp_etag, sizeof(h->etag));
	*out = reg;
	http_succeed(h);
	h->failing = false;
	return SRC_UPDATE;
}

static enum source_result http_wait(struct source *s, uint32_t max_wait_ms, struct registry *out,
				    char *err, size_t errlen)
{
	struct http_source *h = (struct http_source *)s;
	uint64_t now = ps_now_ms(), deadline = now + max_wait_ms;

	if (source_stopping(s))
		return SRC_SAME;
	if (now < h->next_ms) {
		if (!net_sleep_until(s, h->next_ms < deadline ? h->next_ms : deadline))
			return SRC_SAME;
		if (ps_now_ms() < h->next_ms)
			return SRC_SAME;
	}
	return http_fetch(h, out, err, errlen);
}

static void http_close(struct source *s)
{
	struct http_source *h = (struct http_source *)s;

	curl_easy_cleanup(h->easy);
	curl_multi_cleanup(h->multi);
	net_body_free(&h->body);
	free(h->good);
	free(h);
	net_global_cleanup();
}

static const struct source_ops http_ops = {
	.wait = http_wait,
	.close = http_close,
};

/* http:// or https:// with a host; CURLU does the parsing. */
static int check_url(const char *url, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	CURLUcode uc;
	int ret = -1;

	if (!u) {
		snprintf(err, errlen, "%s: out of memory", url);
		return -1;
	}
	uc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (uc != CURLUE_OK) {
		snprintf(err, errlen, "%s: not a valid URL: %s", url, curl_url_strerror(uc));
		goto cleanup;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    (strcmp(scheme, "http") && strcmp(scheme, "https"))) {
		snprintf(err, errlen, "%s: only http:// and https:// registry URLs are supported",
			 url);
		goto cleanup;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host[0]) {
		snprintf(err, errlen, "%s: the URL has no host", url);
		goto cleanup;
	}
	ret = 0;
cleanup:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ret;
}

struct source *source_http_open(const char *url, const struct source_opts *opts,
				char *err, size_t errlen)
{
	struct http_source *h;

	if (strlen(url) >= sizeof(h->base.name)) {
		snprintf(err, errlen, "%.64s...: URL longer than %zu bytes", url,
			 sizeof(h->base.name) - 1);
		return NULL;
	}
	if (net_global_init(url, err, errlen) < 0)
		return NULL;
	if (check_url(url, err, errlen) < 0)
		goto fail_global;
	h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "%s: out of memory", url);
		goto fail_global;
	}
	h->base.ops = &http_ops;
	h->base.opts = *opts;
	if (!h->base.opts.poll_ms)
		h->base.opts.poll_ms = SRC_DEFAULT_POLL_MS;
	if (!h->base.opts.timeout_ms)
		h->base.opts.timeout_ms = SRC_DEFAULT_TIMEOUT_MS;
	snprintf(h->base.name, sizeof(h->base.name), "%s", url);
	h->body.max = REG_MAX_BYTES;

	h->multi = curl_multi_init();
	h->easy = net_easy_new(&h->base, h->errbuf);
	if (!h->multi || !h->easy) {
		snprintf(err, errlen, "%s: out of memory", url);
		curl_easy_cleanup(h->easy);
		curl_multi_cleanup(h->multi);
		free(h);
		goto fail_global;
	}
	curl_easy_setopt(h->easy, CURLOPT_URL, url);
	curl_easy_setopt(h->easy, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, (long)h->base.opts.timeout_ms);
	curl_easy_setopt(h->easy, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h->easy, CURLOPT_MAXREDIRS, (long)HTTP_MAX_REDIRS);
	curl_easy_setopt(h->easy, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(h->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)REG_MAX_BYTES);
	curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, net_body_write);
	curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, &h->body);
	curl_easy_setopt(h->easy, CURLOPT_HEADERFUNCTION, http_header);
	curl_easy_setopt(h->easy, CURLOPT_HEADERDATA, h);
	return &h->base;

fail_global:
	net_global_cleanup();
	return NULL;
}
