// SPDX-License-Identifier: GPL-2.0
/*
 * Host load and the busiest process, from /proc (see procstat.h).
 *
 * The culprit is found like top(1) does it, without spawning anything: two
 * snapshots of /proc/PID/stat `window_ms` apart, the process whose utime +
 * stime grew the most wins. /proc/PID/stat of a process sums all of its
 * threads, and /proc lists processes (thread group leaders) only, so a
 * multi-threaded process is one candidate.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "procstat.h"

/* Read a small /proc file whole (at most len - 1 bytes), NUL-terminated.
 * Returns the length, or -errno. */
static ssize_t read_small(int dirfd, const char *path, char *buf, size_t len)
{
	size_t n = 0;
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (n < len - 1) {
		ssize_t r = read(fd, buf + n, len - 1 - n);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			close(fd);
			return r;
		}
		if (r == 0)
			break;
		n += r;
	}
	close(fd);
	buf[n] = '\0';
	return (ssize_t)n;
}

int procstat_parse_loadavg(const char *text, double loadavg[3])
{
	const char *p = text;
	char *end;
	int i;

	for (i = 0; i < 3; i++) {
		double v = strtod(p, &end);

		if (end == p || !isfinite(v) || v < 0)
			return -EINVAL;
		loadavg[i] = v;
		p = end;
	}
	return 0;
}

int procstat_load(struct host_load *out)
{
	char buf[256];
	ssize_t n = read_small(AT_FDCWD, "/proc/loadavg", buf, sizeof(buf));
	long cpus;
	int err;

	if (n < 0)
		return (int)n;
	if ((err = procstat_parse_loadavg(buf, out->loadavg)))
		return err;
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	out->cpus = cpus > 0 ? cpus : 1;
	out->load = out->loadavg[1] / (double)out->cpus;
	return 0;
}

int procstat_parse_stat(const char *line, char *comm, size_t comm_len,
			unsigned long long *ticks, unsigned long long *start)
{
	const char *lp = strchr(line, '('), *rp = strrchr(line, ')');
	unsigned long long utime, stime;
	size_t n;
	char state;

	if (!lp || !rp || rp < lp)
		return -EINVAL;
	/* fields 3 (state) .. 22 (starttime), see proc(5) */
	if (sscanf(rp + 1, " %c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu"
		   " %*s %*s %*s %*s %*s %*s %llu", &state, &utime, &stime, start) != 4)
		return -EINVAL;
	if (comm_len) {
		n = (size_t)(rp - lp - 1);
		if (n > comm_len - 1)
			n = comm_len - 1;
		memcpy(comm, lp + 1, n);
		comm[n] = '\0';
	}
	*ticks = utime + stime;
	return 0;
}

struct pstat {
	pid_t pid;
	unsigned long long ticks;	/* utime + stime */
	unsigned long long start;	/* ticks after boot */
	char comm[64];
};

struct snap {
	struct pstat *p;
	size_t n, cap;
};

static int cmp_pid(const void *a, const void *b)
{
	const struct pstat *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

/* Every process but `exclude`, sorted by pid. A process that exits while it
 * is read is skipped. */
static int snapshot(struct snap *s, pid_t exclude)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	char path[32], buf[1024];

	s->n = 0;
	if (!d)
		return -errno;
	while ((de = readdir(d)) && s->n < PROCSTAT_MAX_PROCS) {
		struct pstat *p;
		char *end;
		long pid;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid > INT32_MAX || pid == exclude)
			continue;
		if (s->n == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 512;
			struct pstat *bigger = realloc(s->p, cap * sizeof(*bigger));

			if (!bigger) {
				closedir(d);
				return -ENOMEM;
			}
			s->p = bigger;
			s->cap = cap;
		}
		p = &s->p[s->n];
		snprintf(path, sizeof(path), "%ld/stat", pid);
		if (read_small(dirfd(d), path, buf, sizeof(buf)) <= 0 ||
		    procstat_parse_stat(buf, p->comm, sizeof(p->comm), &p->ticks, &p->start))
			continue;
		p->pid = (pid_t)pid;
		s->n++;
	}
	closedir(d);
	qsort(s->p, s->n, sizeof(*s->p), cmp_pid);
	return 0;
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The effective user of a process: its name, or the number. */
static void proc_user(pid_t pid, char *out, size_t len)
{
	char path[48], buf[4096], *line, *pwbuf;
	unsigned long ruid, euid;
	struct passwd pw, *res = NULL;
	size_t pwlen = 16384;

	snprintf(out, len, "?");
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (read_small(AT_FDCWD, path, buf, sizeof(buf)) <= 0)
		return;
	line = strstr(buf, "\nUid:");
	if (!line || sscanf(line + 5, "%lu %lu", &ruid, &euid) != 2)
		return;
	snprintf(out, len, "%lu", euid);
	for (;;) {
		int err;

		pwbuf = malloc(pwlen);
		if (!pwbuf)
			return;
		err = getpwuid_r((uid_t)euid, &pw, pwbuf, pwlen, &res);
		if (err == ERANGE && pwlen < (1 << 20)) {
			free(pwbuf);
			pwlen *= 4;
			continue;
		}
		if (!err && res && res->pw_name)
			snprintf(out, len, "%s", res->pw_name);
		free(pwbuf);
		return;
	}
}

/* cmdline joined with spaces; "[comm]" when it is empty (a kernel thread, or
 * a zombie), the bare comm when the process is gone. */
static void proc_command(pid_t pid, const char *comm, char *out, size_t len)
{
	char path[48];
	ssize_t n, i;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	n = read_small(AT_FDCWD, path, out, len);
	if (n < 0) {
		snprintf(out, len, "%s", comm);
		return;
	}
	for (i = 0; i < n; i++)
		if (out[i] == '\0' || out[i] == '\n')
			out[i] = ' ';
	while (n > 0 && out[n - 1] == ' ')
		out[--n] = '\0';
	if (n == 0)
		snprintf(out, len, "[%s]", comm);
}

int procstat_culprit(unsigned int window_ms, pid_t exclude, struct culprit *out)
{
	struct snap a = { 0 }, b = { 0 };
	long hz = sysconf(_SC_CLK_TCK);
	unsigned long long boot_ticks, best_ticks = 0;
	const struct pstat *best = NULL;
	struct timespec ts;
	uint64_t t0, t1;
	size_t i;
	int err;

	memset(out, 0, sizeof(*out));
	if (hz <= 0)
		hz = 100;
	/* ticks after boot when the first snapshot began: a process that
	 * started later ran all of its CPU time in the window */
	boot_ticks = clock_ns(CLOCK_BOOTTIME) / (1000000000ULL / (unsigned long long)hz);
	t0 = clock_ns(CLOCK_MONOTONIC);
	if ((err = snapshot(&a, exclude)))
		goto out;
	ts.tv_sec = window_ms / 1000;
	ts.tv_nsec = (long)(window_ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	t1 = clock_ns(CLOCK_MONOTONIC);
	if ((err = snapshot(&b, exclude)))
		goto out;
	for (i = 0; i < b.n; i++) {
		const struct pstat *p = &b.p[i];
		const struct pstat *q = bsearch(p, a.p, a.n, sizeof(*a.p), cmp_pid);
		unsigned long long used;

		if (q && q->start == p->start)
			used = p->ticks >= q->ticks ? p->ticks - q->ticks : 0;
		else if (p->start >= boot_ticks)
			used = p->ticks;	/* new in the window (or a reused pid) */
		else
			continue;		/* missed by the first snapshot */
		if (used > best_ticks) {
			best_ticks = used;
			best = p;
		}
	}
	if (best) {
		double secs = (double)(t1 - t0) / 1e9;

		out->found = true;
		out->pid = best->pid;
		out->cpu = secs > 0 ? (double)best_ticks / (double)hz / secs * 100.0 : 0;
		proc_user(best->pid, out->user, sizeof(out->user));
		proc_command(best->pid, best->comm, out->command, sizeof(out->command));
	}
out:
	free(a.p);
	free(b.p);
	return err;
}
