/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Test tools: SIGTERM/SIGINT handled by one thread that waits for them, so
 * the tool's other threads never see them and the handler may do anything
 * (print counters, unlink files) instead of only async-signal-safe things.
 */
#ifndef PS_SIGNALS_H
#define PS_SIGNALS_H

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* Block SIGTERM/SIGINT in every thread (they inherit the mask) and run
 * on_signal(&set) on a thread of its own: it calls sigwait() on the set. */
static inline void ps_setup_signals(const char *prog, void *(*on_signal)(void *))
{
	static sigset_t set;
	pthread_t tid;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pthread_create(&tid, NULL, on_signal, &set) != 0) {
		fprintf(stderr, "%s: cannot start the signal thread\n", prog);
		exit(1);
	}
	pthread_detach(tid);
}

#endif
