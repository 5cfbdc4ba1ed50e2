/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the test servers share: the listening socket, and SIGTERM/SIGINT
 * handled by one thread that waits for them, so the tool's other threads
 * never see them and the handler may do anything (print counters, unlink
 * files) instead of only async-signal-safe things.
 */
#ifndef PS_SERVER_H
#define PS_SERVER_H

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* HOST:PORT or [V6]:PORT; returns a listening socket, or exits (2 on a bad
 * address, 1 when it cannot listen) with a message naming `prog`. */
static inline int ps_listen(const char *prog, const char *addr, int backlog)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai;
	int one = 1, fd, err;

	if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host) || !colon[1]) {
		fprintf(stderr, "%s: --listen wants HOST:PORT, got \"%s\"\n", prog, addr);
		exit(2);
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	if ((err = getaddrinfo(host, colon + 1, &hints, &ai))) {
		fprintf(stderr, "%s: --listen %s: %s\n", prog, addr, gai_strerror(err));
		exit(2);
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
		fprintf(stderr, "%s: cannot listen on %s: %s\n", prog, addr, strerror(errno));
		exit(1);
	}
	freeaddrinfo(ai);
	return fd;
}

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
