/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the network registry sources (source_http.c, source_etcd.c) share:
 * libcurl transfers that are bounded in time and size and give up within
 * SRC_STEP_MS of *stop being set, response bodies with a cap, failures
 * described for a log line, and the retry backoff of source.h.
 *
 * Transfers are driven through a curl multi handle polled in SRC_STEP_MS
 * steps rather than by curl_easy_perform(): libcurl calls its progress
 * callback only about once a second while a peer is silent, which is too
 * late for a stop request.
 */
#ifndef PS_SOURCE_NET_H
#define PS_SOURCE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "source.h"

#define SRC_STEP_MS		100	/* longest sleep between two looks at *stop */
#define SRC_BACKOFF_FIRST_MS	250	/* first retry delay after a failure */
#define SRC_BACKOFF_MAX_MS	5000	/* retry delays double up to this */
#define SRC_DEFAULT_POLL_MS	2000
#define SRC_DEFAULT_TIMEOUT_MS	5000

/* A response body collected by a curl write callback, at most `max` bytes. */
struct net_body {
	char *data;
	size_t len, cap;
	size_t max;
	bool too_big;		/* the answer was cut off at `max` */
};

/* CURLOPT_WRITEFUNCTION for a struct net_body (CURLOPT_WRITEDATA). */
size_t net_body_write(char *ptr, size_t size, size_t nmemb, void *ctx);

/*
 * Append n bytes. Returns 0, or -1 when the body would exceed its max (too_big
 * is set) or memory runs out.
 */
int net_body_append(struct net_body *b, const char *p, size_t n);
void net_body_clear(struct net_body *b);
void net_body_free(struct net_body *b);

/* Retry delays: SRC_BACKOFF_FIRST_MS, doubling, at most SRC_BACKOFF_MAX_MS. */
struct net_backoff {
	uint32_t next_ms;	/* 0 before the first failure */
};

uint32_t net_backoff_next(struct net_backoff *b);

static inline void net_backoff_reset(struct net_backoff *b)
{
	b->next_ms = 0;
}

/*
 * Sleep until the monotonic time `until_ms`, in steps of at most SRC_STEP_MS.
 * Returns false when the source was stopped first.
 */
bool net_sleep_until(const struct source *s, uint64_t until_ms);

/* Take a reference on libcurl's global state; 0, or -1 with err filled. */
int net_global_init(const char *name, char *err, size_t errlen);
void net_global_cleanup(void);

/*
 * An easy handle with what every registry request wants: no signals (we run
 * in a thread), http and https only (redirects included), TCP keepalive, a
 * connect timeout of the source's timeout_ms, errors into errbuf
 * (CURL_ERROR_SIZE bytes). NULL when out of memory.
 */
CURL *net_easy_new(const struct source *s, char *errbuf);

/*
 * Run one transfer on `multi` to its end (the easy handle's own
 * CURLOPT_TIMEOUT_MS bounds it) and remove it again. Returns libcurl's result,
 * or CURLE_ABORTED_BY_CALLBACK when the source was stopped first.
 */
CURLcode net_run(CURLM *multi, CURL *easy, const struct source *s);

/*
 * One line on why a transfer failed, for "<source>: <what>: <this>":
 * "connect: Connection refused", "no answer within 5000 ms", ...
 * `body` (may be NULL) is the collected answer, for its size limit.
 */
void net_describe(CURL *easy, CURLcode res, const char *errbuf, const struct net_body *body,
		  char *out, size_t outlen);

#endif /* PS_SOURCE_NET_H */
