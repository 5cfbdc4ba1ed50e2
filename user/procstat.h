/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The host's load, for the tier in front of this host: how loaded it is
 * (/load) and which process is using the CPU (/culprit).
 *
 * Everything is read from /proc; no command is ever spawned.
 */
#ifndef PS_PROCSTAT_H
#define PS_PROCSTAT_H

#include <stdbool.h>
#include <sys/types.h>

struct host_load {
	double loadavg[3];		/* 1, 5 and 15 minutes, from /proc/loadavg */
	long cpus;			/* CPUs online */
	double load;			/* loadavg[1] / cpus: 1.0 = at capacity */
};

/* Returns 0, or -errno when /proc/loadavg cannot be read or parsed. */
int procstat_load(struct host_load *out);

/* Parse the text of /proc/loadavg. Returns 0, or -EINVAL. */
int procstat_parse_loadavg(const char *text, double loadavg[3]);

struct culprit {
	bool found;			/* false: no process used any CPU in the window */
	pid_t pid;
	char user[64];			/* user name of the effective uid, or the uid */
	char command[1024];		/* cmdline joined with spaces, or [comm] for a
					 * kernel thread; cut at the buffer size */
	double cpu;			/* percent of one CPU over the window */
};

/*
 * The process that used the most CPU time (user + system, all its threads)
 * over the next `window_ms` milliseconds, not counting `exclude` (the caller,
 * usually getpid()). Blocks for window_ms. Processes that start or exit
 * during the window are handled (one that started counts all of its time; a
 * reused pid is a new process). Work is bounded: at most PROCSTAT_MAX_PROCS
 * processes are looked at. Returns 0, or -errno when /proc cannot be read.
 */
#define PROCSTAT_MAX_PROCS	65536
int procstat_culprit(unsigned int window_ms, pid_t exclude, struct culprit *out);

/*
 * One line of /proc/PID/stat: the command name (between the first '(' and
 * the last ')', so a name with spaces or parentheses reads right), the CPU
 * time in clock ticks (utime + stime) and the start time in ticks after boot.
 * Returns 0, or -EINVAL.
 */
int procstat_parse_stat(const char *line, char *comm, size_t comm_len,
			unsigned long long *ticks, unsigned long long *start);

#endif
