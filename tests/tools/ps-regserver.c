/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ps-regserver: the HTTP registry server of the integration tests of
 * pathsplice's HTTP registry source.
 *
 *   ps-regserver --listen 127.0.0.1:PORT --file PATH [--mode-file PATH]
 *
 * A GET of any path answers the current contents of --file, with an ETag
 * (a hash of the contents) and a 304 when If-None-Match names it. The mode
 * file, re-read for every request, makes the server misbehave the way a real
 * registry can:
 *
 *   ok        the file (also: no mode file, an empty one)
 *   500       500 Internal Server Error
 *   garbage   200 with a body that is not JSON
 *   slow      the file, but only after SLOW_MS: longer than any sane timeout
 *   close     close the connection without an answer
 *
 * GET /__stats answers the counters as JSON; they are printed on stdout at
 * SIGTERM / SIGINT as well:
 *
 *   {"requests":N,"not_modified":N,"ok":N,"failed":N}
 *
 * (/__stats itself is not counted.) One thread per connection with blocking
 * sockets, so a slow answer holds up nobody else, and a signal thread that
 * exits at once, whatever the other threads are doing.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ps_http.h"
#include "ps_server.h"

#define INBUF_SIZE	(16 * 1024)
#define FILE_MAX	(32u << 20)	/* larger than the daemon's limit, to test it */
#define SLOW_MS		30000
#define IDLE_SECONDS	60		/* a keep-alive connection this idle is closed */
#define THREAD_STACK	(256 * 1024)

static const char *g_file;
static const char *g_mode_file;

static struct {
	atomic_uint_fast64_t requests;		/* registry requests, whatever the answer */
	atomic_uint_fast64_t not_modified;	/* of which 304 */
	atomic_uint_fast64_t ok;		/* of which 200 with the file */
	atomic_uint_fast64_t failed;		/* of which 500, garbage or closed */
} g_stats;

struct conn {
	int fd;
	struct ps_in in;
	uint8_t inbuf[INBUF_SIZE];
};

static ssize_t sock_read(void *ctx, void *dst, size_t n)
{
	const struct conn *c = ctx;
	ssize_t r;

	do
		r = recv(c->fd, dst, n, 0);
	while (r < 0 && errno == EINTR);
	return r;
}

static bool send_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p = (const char *)p + w;
		n -= (size_t)w;
	}
	return true;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The whole file, malloc'd; NULL (errno set) when it cannot be read. */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 4096, n = 0;
	char *buf = NULL, *bigger;

	if (!f)
		return NULL;
	for (;;) {
		if (n == cap || !buf) {
			if (buf)
				cap *= 2;
			if (cap > FILE_MAX + 1) {
				errno = EFBIG;
				goto fail;
			}
			bigger = realloc(buf, cap);
			if (!bigger)
				goto fail;
			buf = bigger;
		}
		size_t got = fread(buf + n, 1, cap - n, f);

		n += got;
		if (got == 0) {
			if (ferror(f))
				goto fail;
			break;
		}
	}
	fclose(f);
	*len = n;
	return buf;
fail:
	free(buf);
	fclose(f);
	return NULL;
}

/* The mode, first word of the mode file; "ok" without one. */
static void read_mode(char *mode, size_t len)
{
	size_t n = 0;
	char *text = g_mode_file ? read_file(g_mode_file, &n) : NULL;
	size_t i = 0, o = 0;

	while (i < n && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
		i++;
	while (i < n && o + 1 < len && text[i] > ' ')
		mode[o++] = text[i++];
	mode[o] = '\0';
	if (!o)
		snprintf(mode, len, "ok");
	free(text);
}

/* FNV-1a 64 of the contents, quoted: a strong ETag. */
static void make_etag(const char *p, size_t n, char *out, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 0x100000001b3ULL;
	snprintf(out, len, "\"%016llx\"", (unsigned long long)h);
}

/* The value of header `name` in a parsed head, or NULL. */
static const char *find_header(const char *head, size_t len, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name), pos = 0;

	while (pos < len) {
		const char *line = head + pos, *eol = memchr(line, '\n', len - pos);
		size_t llen;

		if (!eol)
			break;
		llen = (size_t)(eol - line);
		pos += llen + 1;
		if (llen && line[llen - 1] == '\r')
			llen--;
		if (llen > nlen && !strncasecmp(line, name, nlen) && line[nlen] == ':') {
			const char *v = line + nlen + 1;
			size_t n = llen - nlen - 1;

			ps_trim_ows(&v, &n);
			*vlen = n;
			return v;
		}
	}
	return NULL;
}

/* If-None-Match: "*" or a list of ETags, weak ones compared weakly (RFC 9110 13.1.2). */
static bool etag_matches(const char *inm, size_t n, const char *etag)
{
	size_t elen = strlen(etag), i = 0;

	while (i < n) {
		size_t j = i;

		while (j < n && inm[j] != ',')
			j++;
		const char *item = inm + i;
		size_t ilen = j - i;

		ps_trim_ows(&item, &ilen);
		if (ilen >= 2 && item[0] == 'W' && item[1] == '/')
			item += 2, ilen -= 2;
		if ((ilen == 1 && item[0] == '*') || (ilen == elen && !memcmp(item, etag, elen)))
			return true;
		i = j + 1;
	}
	return false;
}

static bool respond(int fd, int status, const char *reason, const char *etag, bool close_after,
		    const char *body, size_t blen, bool head_only)
{
	char head[512], length[48] = "";
	int n;

	/* a 304 has no body and says nothing about the length of the one it stands for */
	if (status != 304)
		snprintf(length, sizeof(length), "Content-Length: %zu\r\n", blen);
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\n"
		     "Content-Type: application/json\r\n"
		     "%s%s%s"
		     "%s"
		     "%s"
		     "\r\n",
		     status, reason, etag ? "ETag: " : "", etag ? etag : "", etag ? "\r\n" : "",
		     length, close_after ? "Connection: close\r\n" : "");
	if (!send_all(fd, head, (size_t)n))
		return false;
	if (status == 304 || head_only || !blen)
		return true;
	return send_all(fd, body, blen);
}

static bool serve_stats(int fd, bool close_after)
{
	char body[256];
	int n = snprintf(body, sizeof(body),
			 "{\"requests\":%llu,\"not_modified\":%llu,\"ok\":%llu,\"failed\":%llu}\n",
			 (unsigned long long)atomic_load(&g_stats.requests),
			 (unsigned long long)atomic_load(&g_stats.not_modified),
			 (unsigned long long)atomic_load(&g_stats.ok),
			 (unsigned long long)atomic_load(&g_stats.failed));

	return respond(fd, 200, "OK", NULL, close_after, body, (size_t)n, false);
}

/* One registry request. Returns false when the connection is to be closed. */
static bool serve_registry(int fd, const char *head, size_t hlen, const struct ps_head *h,
			   bool close_after)
{
	static const char garbage[] = "<html>this is not a registry</html>\n";
	static const char unavailable[] = "{\"error\":\"registry unavailable\"}\n";
	bool head_only = ps_str_ieq(h->method.p, h->method.n, "HEAD");
	char mode[32], etag[32], msg[256];
	const char *inm;
	size_t len, inm_len;
	char *data;
	bool ret;

	atomic_fetch_add(&g_stats.requests, 1);
	read_mode(mode, sizeof(mode));
	fprintf(stderr, "ps-regserver: %.*s %.*s mode %s\n", (int)h->method.n, h->method.p,
		(int)h->target.n, h->target.p, mode);
	if (!strcmp(mode, "close")) {
		atomic_fetch_add(&g_stats.failed, 1);
		return false;
	}
	if (!strcmp(mode, "500")) {
		atomic_fetch_add(&g_stats.failed, 1);
		return respond(fd, 500, "Internal Server Error", NULL, close_after,
			       unavailable, sizeof(unavailable) - 1, head_only) && !close_after;
	}
	if (!strcmp(mode, "garbage")) {
		atomic_fetch_add(&g_stats.failed, 1);
		make_etag(garbage, sizeof(garbage) - 1, etag, sizeof(etag));
		return respond(fd, 200, "OK", etag, close_after, garbage, sizeof(garbage) - 1,
			       head_only) && !close_after;
	}
	if (!strcmp(mode, "slow"))
		sleep_ms(SLOW_MS);
	else if (strcmp(mode, "ok")) {
		atomic_fetch_add(&g_stats.failed, 1);
		len = (size_t)snprintf(msg, sizeof(msg), "{\"error\":\"unknown mode %s\"}\n", mode);
		return respond(fd, 500, "Internal Server Error", NULL, close_after, msg, len,
			       head_only) && !close_after;
	}

	data = read_file(g_file, &len);
	if (!data) {
		atomic_fetch_add(&g_stats.failed, 1);
		len = (size_t)snprintf(msg, sizeof(msg), "{\"error\":\"cannot read %s: %s\"}\n",
				       g_file, strerror(errno));
		return respond(fd, 500, "Internal Server Error", NULL, close_after, msg, len,
			       head_only) && !close_after;
	}
	make_etag(data, len, etag, sizeof(etag));
	inm = find_header(head, hlen, "If-None-Match", &inm_len);
	if (inm && etag_matches(inm, inm_len, etag)) {
		atomic_fetch_add(&g_stats.not_modified, 1);
		ret = respond(fd, 304, "Not Modified", etag, close_after, NULL, 0, head_only);
	} else {
		atomic_fetch_add(&g_stats.ok, 1);
		ret = respond(fd, 200, "OK", etag, close_after, data, len, head_only);
	}
	free(data);
	return ret && !close_after;
}

static void serve_connection(struct conn *c)
{
	for (;;) {
		const char *head, *perr;
		struct ps_head h;
		size_t hlen;
		bool close_after;

		if (ps_in_head(&c->in, INBUF_SIZE, true, &head, &hlen) <= 0)
			return;
		perr = ps_head_parse(head, hlen, true, &h);
		if (perr) {
			fprintf(stderr, "ps-regserver: bad request: %s\n", perr);
			respond(c->fd, 400, "Bad Request", NULL, true, NULL, 0, false);
			return;
		}
		close_after = h.conn_close || (h.minor == 0 && !h.conn_keep_alive);
		if ((h.has_length && h.length) || h.chunked) {
			respond(c->fd, 400, "Bad Request", NULL, true, NULL, 0, false);
			return;
		}
		if (!ps_str_ieq(h.method.p, h.method.n, "GET") &&
		    !ps_str_ieq(h.method.p, h.method.n, "HEAD")) {
			respond(c->fd, 405, "Method Not Allowed", NULL, true, NULL, 0, false);
			return;
		}
		if (h.target.n == 8 && !memcmp(h.target.p, "/__stats", 8)) {
			if (!serve_stats(c->fd, close_after) || close_after)
				return;
			continue;
		}
		if (!serve_registry(c->fd, head, hlen, &h, close_after))
			return;
	}
}

static void *conn_thread(void *arg)
{
	struct conn *c = arg;

	serve_connection(c);
	close(c->fd);
	free(c);
	return NULL;
}

static void start_connection(int fd)
{
	struct timeval idle = { IDLE_SECONDS, 0 };
	struct conn *c = malloc(sizeof(*c));
	pthread_attr_t attr;
	pthread_t tid;
	int one = 1, err;

	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	ps_in_init(&c->in, c->inbuf, sizeof(c->inbuf), 0, sock_read, c);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle));
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	err = pthread_create(&tid, &attr, conn_thread, c);
	pthread_attr_destroy(&attr);
	if (err) {
		fprintf(stderr, "ps-regserver: pthread_create: %s\n", strerror(err));
		close(fd);
		free(c);
	}
}

/* SIGTERM/SIGINT: print the counters and exit 0 at once, slow answers or not. */
static void *signal_thread(void *arg)
{
	sigset_t *set = arg;
	int sig;

	while (sigwait(set, &sig) != 0)
		;
	printf("{\"requests\":%llu,\"not_modified\":%llu,\"ok\":%llu,\"failed\":%llu}\n",
	       (unsigned long long)atomic_load(&g_stats.requests),
	       (unsigned long long)atomic_load(&g_stats.not_modified),
	       (unsigned long long)atomic_load(&g_stats.ok),
	       (unsigned long long)atomic_load(&g_stats.failed));
	fflush(stdout);
	_exit(0);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ps-regserver --listen HOST:PORT --file PATH [--mode-file PATH]\n"
		"\n"
		"Serves PATH's current contents for a GET of any path, with an ETag, and\n"
		"304 Not Modified when If-None-Match names it.\n"
		"\n"
		"The mode file, re-read for every request, holds one word:\n"
		"  ok        serve the file (the default, also without a mode file)\n"
		"  500       answer 500 Internal Server Error\n"
		"  garbage   answer 200 with a body that is not JSON\n"
		"  slow      serve the file after %d s\n"
		"  close     close the connection without answering\n"
		"\n"
		"GET /__stats answers {\"requests\":N,\"not_modified\":N,\"ok\":N,\"failed\":N}\n"
		"(itself not counted); SIGTERM or SIGINT prints the same line and exits 0.\n",
		SLOW_MS / 1000);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "file", required_argument, NULL, 'f' },
		{ "mode-file", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *listen_addr = NULL;
	int opt, lfd;

	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen_addr = optarg; break;
		case 'f': g_file = optarg; break;
		case 'm': g_mode_file = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !listen_addr || !g_file) {
		usage(stderr);
		return 2;
	}
	lfd = ps_listen("ps-regserver", listen_addr, 128);
	ps_setup_signals("ps-regserver", signal_thread);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd >= 0) {
			start_connection(fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		fprintf(stderr, "ps-regserver: accept: %s\n", strerror(errno));
		sleep_ms(50);
	}
}
