// SPDX-License-Identifier: GPL-2.0
/*
 * libcurl plumbing for the network registry sources; see source_net.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "source_net.h"
#include "util.h"

#ifndef PS_VERSION
#define PS_VERSION "dev"
#endif

size_t net_body_write(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	size_t n = size * nmemb;

	/* returning less than n makes libcurl end the transfer (CURLE_WRITE_ERROR) */
	return net_body_append(ctx, ptr, n) < 0 ? 0 : n;
}

int net_body_append(struct net_body *b, const char *p, size_t n)
{
	if (n > b->max - b->len) {
		b->too_big = true;
		return -1;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *bigger;

		while (cap < b->len + n + 1)
			cap *= 2;
		bigger = realloc(b->data, cap);
		if (!bigger)
			return -1;
		b->data = bigger;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';	/* for the string functions of the callers */
	return 0;
}

void net_body_clear(struct net_body *b)
{
	b->len = 0;
	b->too_big = false;
	if (b->data)
		b->data[0] = '\0';
}

void net_body_free(struct net_body *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->too_big = false;
}

uint32_t net_backoff_next(struct net_backoff *b)
{
	uint32_t delay = b->next_ms ? b->next_ms : SRC_BACKOFF_FIRST_MS;

	b->next_ms = delay >= SRC_BACKOFF_MAX_MS / 2 ? SRC_BACKOFF_MAX_MS : delay * 2;
	return delay;
}

bool net_sleep_until(const struct source *s, uint64_t until_ms)
{
	for (;;) {
		uint64_t now = ps_now_ms(), step;
		struct timespec ts;

		if (source_stopping(s))
			return false;
		if (now >= until_ms)
			return true;
		step = until_ms - now < SRC_STEP_MS ? until_ms - now : SRC_STEP_MS;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)step * 1000000;
		nanosleep(&ts, NULL);
	}
}

int net_global_init(const char *name, char *err, size_t errlen)
{
	CURLcode res = curl_global_init(CURL_GLOBAL_DEFAULT);

	if (res != CURLE_OK) {
		snprintf(err, errlen, "%s: cannot initialise libcurl: %s", name,
			 curl_easy_strerror(res));
		return -1;
	}
	return 0;
}

void net_global_cleanup(void)
{
	curl_global_cleanup();
}

CURL *net_easy_new(const struct source *s, char *errbuf)
{
	CURL *easy = curl_easy_init();

	if (!easy)
		return NULL;
	errbuf[0] = '\0';
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)s->opts.timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 10L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 5L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "pathsplice/" PS_VERSION);
	return easy;
}

CURLcode net_run(CURLM *multi, CURL *easy, const struct source *s)
{
	CURLcode res = CURLE_ABORTED_BY_CALLBACK;
	CURLMcode mres;
	bool done = false;

	mres = curl_multi_add_handle(multi, easy);
	if (mres != CURLM_OK)
		return CURLE_OUT_OF_MEMORY;
	while (!done && !source_stopping(s)) {
		struct CURLMsg *msg;
		int running, left;

		mres = curl_multi_perform(multi, &running);
		if (mres != CURLM_OK) {
			res = CURLE_OUT_OF_MEMORY;
			break;
		}
		while ((msg = curl_multi_info_read(multi, &left))) {
			if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
				res = msg->data.result;
				done = true;
			}
		}
		if (!done)
			curl_multi_poll(multi, NULL, 0, SRC_STEP_MS, NULL);
	}
	curl_multi_remove_handle(multi, easy);
	return res;
}

void net_describe(CURL *easy, CURLcode res, const char *errbuf, const struct net_body *body,
		  char *out, size_t outlen)
{
	long os_errno = 0;
	curl_off_t total_us = 0, got = 0;

	curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
	switch (res) {
	case CURLE_COULDNT_CONNECT:
		if (os_errno) {
			snprintf(out, outlen, "connect: %s", strerror((int)os_errno));
			return;
		}
		break;
	case CURLE_OPERATION_TIMEDOUT:
		curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total_us);
		curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &got);
		snprintf(out, outlen, "no %sanswer within %lld ms", got ? "complete " : "",
			 (long long)(total_us / 1000));
		return;
	case CURLE_GOT_NOTHING:
		snprintf(out, outlen, "connection closed without an answer");
		return;
	case CURLE_PARTIAL_FILE:
		snprintf(out, outlen, "connection closed in the middle of the answer");
		return;
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
		if (body && (body->too_big || res == CURLE_FILESIZE_EXCEEDED)) {
			snprintf(out, outlen, "answer larger than the limit of %zu bytes",
				 body->max);
			return;
		}
		break;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		if (os_errno) {
			snprintf(out, outlen, "%s: %s", res == CURLE_RECV_ERROR ? "recv" : "send",
				 strerror((int)os_errno));
			return;
		}
		break;
	default:
		break;
	}
	snprintf(out, outlen, "%s", errbuf && errbuf[0] ? errbuf : curl_easy_strerror(res));
}
