// SPDX-License-Identifier: GPL-2.0
/*
 * Registry sources: dispatch by spec, and the file source.
 *
 * The file source watches the file's directory with inotify rather than the
 * file itself, so that an editor's write-to-temp-and-rename (a new inode
 * under the same name) is seen like an in-place write. Events are debounced
 * briefly so a write in several chunks is read once, when complete; a read
 * that fails to parse (a writer caught half-way) is simply an error that the
 * next event or retry replaces. A slow stat() poll backs inotify up on file
 * systems that do not deliver events.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "source.h"
#include "util.h"

#define FILE_DEBOUNCE_MS	20	/* after a close, rename or delete */
#define FILE_SETTLE_MS		500	/* after a write still in progress */
#define FILE_STAT_POLL_MS	5000
#define RETRY_MIN_MS		250
#define RETRY_MAX_MS		5000
#define STOP_CHECK_MS		100

struct source *source_open(const char *spec, const struct source_opts *opts,
			   char *err, size_t errlen)
{
	struct source_opts o = *opts;
	struct source *s;

	if (!o.poll_ms)
		o.poll_ms = 2000;
	if (!o.timeout_ms)
		o.timeout_ms = 5000;
	if (!strncmp(spec, "http://", 7) || !strncmp(spec, "https://", 8))
		s = source_http_open(spec, &o, err, errlen);
	else if (!strncmp(spec, "etcd://", 7))
		s = source_etcd_open(spec, &o, err, errlen);
	else if (strstr(spec, "://")) {
		snprintf(err, errlen, "%s: unknown registry scheme (expected a file path, "
			 "http://, https:// or etcd://)", spec);
		return NULL;
	} else
		s = source_file_open(spec, &o, err, errlen);
	if (s) {
		s->opts = o;
		snprintf(s->name, sizeof(s->name), "%s", spec);
	}
	return s;
}

enum source_result source_wait(struct source *s, uint32_t max_wait_ms, struct registry *out,
			       char *err, size_t errlen)
{
	enum source_result r;

	err[0] = '\0';
	r = s->ops->wait(s, max_wait_ms, out, err, errlen);
	if (r == SRC_ERROR)
		s->errors++;
	return r;
}

const char *source_name(const struct source *s)
{
	return s->name;
}

uint64_t source_errors(const struct source *s)
{
	return s->errors;
}

void source_close(struct source *s)
{
	if (s)
		s->ops->close(s);
}

/* ---- the file source ---------------------------------------------------- */

struct file_source {
	struct source s;
	char path[PATH_MAX];
	char dir[PATH_MAX];
	char base[NAME_MAX + 1];
	int ifd;			/* inotify */
	int wd;				/* watch on dir, -1 while it cannot be watched */
	bool fresh;			/* nothing read yet, or the last read failed */
	uint64_t read_at;		/* when to read next (0: on an event only) */
	uint32_t backoff_ms;
	uint64_t stat_at;		/* next stat() poll */
	struct stat st;			/* of the last read */
	uint64_t hash;			/* of the last good content */
};

static uint64_t text_hash(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n--)
		h = (h ^ (uint8_t)*p++) * 0x100000001b3ULL;
	return h;
}

static void file_watch(struct file_source *f)
{
	if (f->wd >= 0)
		return;
	f->wd = inotify_add_watch(f->ifd, f->dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE |
				  IN_DELETE | IN_MOVED_FROM | IN_ATTRIB | IN_MODIFY |
				  IN_DELETE_SELF | IN_MOVE_SELF);
}

/* Did the file change since it was last read, as stat() sees it? */
static bool file_stat_changed(struct file_source *f)
{
	struct stat st;

	if (stat(f->path, &st))
		return f->st.st_ino != 0;
	return st.st_ino != f->st.st_ino || st.st_dev != f->st.st_dev ||
	       st.st_size != f->st.st_size || st.st_mtim.tv_sec != f->st.st_mtim.tv_sec ||
	       st.st_mtim.tv_nsec != f->st.st_mtim.tv_nsec;
}

static enum source_result file_read(struct file_source *f, struct registry *out,
				    char *err, size_t errlen)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	uint64_t h;
	int fd, ret;

	f->read_at = 0;
	fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		snprintf(err, errlen, "%s: %s", f->path, strerror(errno));
		memset(&f->st, 0, sizeof(f->st));
		goto fail;
	}
	f->st = st;
	if (!S_ISREG(st.st_mode) || st.st_size > REG_MAX_BYTES) {
		snprintf(err, errlen, "%s: %s", f->path,
			 S_ISREG(st.st_mode) ? "larger than 16 MiB" : "not a regular file");
		goto fail;
	}
	text = malloc(st.st_size + 1);
	if (!text) {
		snprintf(err, errlen, "%s: out of memory", f->path);
		goto fail;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, text + len, st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s: read: %s", f->path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;	/* truncated under us: parse what is there; a later event rereads */
		len += n;
	}
	close(fd);
	fd = -1;
	h = text_hash(text, len);
	if (!f->fresh && h == f->hash) {
		free(text);
		return SRC_SAME;
	}
	ret = registry_parse(text, len, f->path, out, err, errlen);
	free(text);
	text = NULL;
	if (ret)
		goto fail;
	f->hash = h;
	f->fresh = false;
	f->backoff_ms = 0;
	return SRC_UPDATE;
fail:
	if (fd >= 0)
		close(fd);
	free(text);
	f->fresh = true;
	f->backoff_ms = f->backoff_ms ? f->backoff_ms * 2 : RETRY_MIN_MS;
	if (f->backoff_ms > RETRY_MAX_MS)
		f->backoff_ms = RETRY_MAX_MS;
	f->read_at = ps_now_ms() + f->backoff_ms;
	return SRC_ERROR;
}

/*
 * Read pending inotify events and schedule a read: soon after one that ends
 * a write (close, rename, delete), later after one in the middle of a write
 * (in case the writer never closes, e.g. a long-lived descriptor).
 */
static void file_events(struct file_source *f)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	uint64_t now = ps_now_ms(), at = 0;
	ssize_t n;

	while ((n = read(f->ifd, buf, sizeof(buf))) > 0) {
		const struct inotify_event *ev;
		char *p;

		for (p = buf; p < buf + n; p += sizeof(*ev) + ev->len) {
			uint64_t t = 0;

			ev = (const struct inotify_event *)p;
			if (ev->mask & IN_IGNORED)
				f->wd = -1;	/* the directory went away: watch it again later */
			if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW))
				t = now + FILE_DEBOUNCE_MS;
			else if (ev->len && !strcmp(ev->name, f->base))
				t = now + (ev->mask & (IN_MODIFY | IN_CREATE) ? FILE_SETTLE_MS :
					   FILE_DEBOUNCE_MS);
			if (t && (!at || t < at))
				at = t;
		}
	}
	if (at && (!f->read_at || at < f->read_at))
		f->read_at = at;
}

static enum source_result file_wait(struct source *s, uint32_t max_wait_ms, struct registry *out,
				    char *err, size_t errlen)
{
	struct file_source *f = (struct file_source *)s;
	uint64_t now = ps_now_ms(), end = now + max_wait_ms;

	if (f->fresh && !f->read_at)
		return file_read(f, out, err, errlen);
	for (;;) {
		struct pollfd pfd = { .fd = f->ifd, .events = POLLIN };
		uint64_t until = end;
		int ms;

		file_watch(f);
		now = ps_now_ms();
		if (f->read_at && f->read_at <= now)
			return file_read(f, out, err, errlen);
		if (f->stat_at <= now) {
			f->stat_at = now + FILE_STAT_POLL_MS;
			if (file_stat_changed(f))
				return file_read(f, out, err, errlen);
		}
		if (now >= end || source_stopping(s))
			return SRC_SAME;
		if (f->read_at && f->read_at < until)
			until = f->read_at;
		if (f->stat_at < until)
			until = f->stat_at;
		ms = until - now;
		if (ms > STOP_CHECK_MS)
			ms = STOP_CHECK_MS;
		if (poll(&pfd, 1, ms) > 0)
			file_events(f);
	}
}

static void file_close(struct source *s)
{
	struct file_source *f = (struct file_source *)s;

	if (f->ifd >= 0)
		close(f->ifd);
	free(f);
}

static const struct source_ops file_ops = {
	.wait = file_wait,
	.close = file_close,
};

struct source *source_file_open(const char *path, const struct source_opts *opts,
				char *err, size_t errlen)
{
	struct file_source *f;
	const char *slash;

	if (!*path || strlen(path) >= sizeof(f->path)) {
		snprintf(err, errlen, "registry path: expected 1..%zu bytes", sizeof(f->path) - 1);
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	f->s.ops = &file_ops;
	f->wd = -1;
	f->fresh = true;
	snprintf(f->path, sizeof(f->path), "%s", path);
	slash = strrchr(path, '/');
	if (!slash) {
		snprintf(f->dir, sizeof(f->dir), ".");
		snprintf(f->base, sizeof(f->base), "%s", path);
	} else {
		snprintf(f->dir, sizeof(f->dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
		snprintf(f->base, sizeof(f->base), "%s", slash + 1);
	}
	if (!f->base[0]) {
		snprintf(err, errlen, "%s: a registry file path cannot end with '/'", path);
		free(f);
		return NULL;
	}
	f->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (f->ifd < 0) {
		snprintf(err, errlen, "inotify: %s", strerror(errno));
		free(f);
		return NULL;
	}
	f->stat_at = ps_now_ms() + FILE_STAT_POLL_MS;
	file_watch(f);
	return &f->s;
}
