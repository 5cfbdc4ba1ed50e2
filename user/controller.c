// SPDX-License-Identifier: GPL-2.0
/*
 * The controller thread: source -> validated registry -> this host's route
 * table -> handed to the proxy thread through an eventfd.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "controller.h"
#include "log.h"

#define WAIT_STEP_MS	500

struct controller {
	struct source *src;
	char host[PS_NAME_MAX];
	pthread_t thread;
	bool started;
	volatile sig_atomic_t stop;
	volatile sig_atomic_t reload;	/* SIGHUP: read the registry again now */
	char spec[512];
	struct source_opts sopts;
	int efd;

	pthread_mutex_t lock;		/* guards pending and stats */
	struct routes pending;
	bool has_pending;
	struct controller_stats st;

	/* error reporting, thread-local to whoever reads the source */
	char last_err[1024];
	uint64_t failures;		/* consecutive */
};

struct controller *controller_new(const char *spec, const char *host,
				  const struct source_opts *opts, char *err, size_t errlen)
{
	struct controller *ctl = calloc(1, sizeof(*ctl));
	struct source_opts o = *opts;

	if (!ctl) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctl->efd = -1;
	o.stop = &ctl->stop;
	ctl->sopts = o;
	snprintf(ctl->spec, sizeof(ctl->spec), "%s", spec);
	ctl->src = source_open(spec, &o, err, errlen);
	if (!ctl->src) {
		free(ctl);
		return NULL;
	}
	snprintf(ctl->host, sizeof(ctl->host), "%s", host);
	ctl->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctl->efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		controller_free(ctl);
		return NULL;
	}
	pthread_mutex_init(&ctl->lock, NULL);
	return ctl;
}

static void count_errors(struct controller *ctl, uint64_t n)
{
	if (!n)
		return;
	pthread_mutex_lock(&ctl->lock);
	ctl->st.errors += n;
	pthread_mutex_unlock(&ctl->lock);
}

/* A failed read or build: say so once per distinct reason (`quiet`: the
 * caller says it). Counting is the caller's. */
static void report_failure(struct controller *ctl, const char *err, bool quiet)
{
	ctl->failures++;
	if (quiet) {
		snprintf(ctl->last_err, sizeof(ctl->last_err), "%s", err);
	} else if (strcmp(err, ctl->last_err)) {
		pr_warn("registry: %s (keeping the last good state; retrying)", err);
		snprintf(ctl->last_err, sizeof(ctl->last_err), "%s", err);
	} else {
		pr_debug("registry: %s (failure %llu in a row)", err,
			 (unsigned long long)ctl->failures);
	}
}

static void report_success(struct controller *ctl)
{
	if (ctl->failures)
		pr_info("registry: %s readable again after %llu failed read%s",
			source_name(ctl->src), (unsigned long long)ctl->failures,
			ctl->failures == 1 ? "" : "s");
	ctl->failures = 0;
	ctl->last_err[0] = '\0';
}

/* One step of following the source: 1 with a new table, 0 nothing, -1 error. */
static int follow(struct controller *ctl, uint32_t wait_ms, struct routes *rt,
		  char *err, size_t errlen, bool quiet)
{
	uint64_t errors = source_errors(ctl->src);
	struct registry reg = { 0 };
	enum source_result r;
	int ret;

	r = source_wait(ctl->src, wait_ms, &reg, err, errlen);
	/* failed reads, and the records a source skipped on its own (etcd keys) */
	count_errors(ctl, source_errors(ctl->src) - errors);
	if (r == SRC_SAME)
		return 0;
	if (r == SRC_ERROR) {
		report_failure(ctl, err, quiet);
		return -1;
	}
	ret = routes_build(&reg, ctl->host, rt, err, errlen);
	registry_free(&reg);
	if (ret) {
		count_errors(ctl, 1);
		report_failure(ctl, err, quiet);
		return -1;
	}
	report_success(ctl);
	return 1;
}

int controller_read(struct controller *ctl, struct routes *rt, char *err, size_t errlen)
{
	int r = follow(ctl, 0, rt, err, errlen, true);

	if (r == 0) {	/* cannot happen on a first read, but never hand back nothing */
		snprintf(err, errlen, "%s: no answer", source_name(ctl->src));
		return -1;
	}
	return r > 0 ? 0 : -1;
}

static void *controller_main(void *arg)
{
	struct controller *ctl = arg;
	char err[1024];
	uint64_t one = 1;

	while (!ctl->stop) {
		struct routes rt = { 0 };

		if (ctl->reload) {
			struct source *s;

			ctl->reload = 0;
			/* a fresh source reads everything at once, whatever it cached */
			s = source_open(ctl->spec, &ctl->sopts, err, sizeof(err));
			if (s) {
				pr_info("registry: reading %s again (SIGHUP)", ctl->spec);
				source_close(ctl->src);
				ctl->src = s;
			}
		}
		if (follow(ctl, WAIT_STEP_MS, &rt, err, sizeof(err), false) <= 0)
			continue;
		pthread_mutex_lock(&ctl->lock);
		routes_free(&ctl->pending);
		ctl->pending = rt;
		ctl->has_pending = true;
		ctl->st.tables++;
		pthread_mutex_unlock(&ctl->lock);
		if (write(ctl->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			pr_err("controller: eventfd: %s", strerror(errno));
	}
	return NULL;
}

int controller_start(struct controller *ctl)
{
	sigset_t all, old;
	int err;

	/* signals are the main thread's business */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = pthread_create(&ctl->thread, NULL, controller_main, ctl);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		pr_err("controller: cannot start its thread: %s", strerror(err));
		return -1;
	}
	ctl->started = true;
	return 0;
}

void controller_reload(struct controller *ctl)
{
	ctl->reload = 1;
}

int controller_fd(const struct controller *ctl)
{
	return ctl->efd;
}

bool controller_take(struct controller *ctl, struct routes *rt)
{
	uint64_t v;
	bool got;

	if (read(ctl->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		pr_err("controller: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&ctl->lock);
	got = ctl->has_pending;
	if (got) {
		*rt = ctl->pending;
		memset(&ctl->pending, 0, sizeof(ctl->pending));
		ctl->has_pending = false;
	}
	pthread_mutex_unlock(&ctl->lock);
	return got;
}

struct controller_stats controller_stats(const struct controller *ctl)
{
	struct controller *c = (struct controller *)ctl;
	struct controller_stats st;

	pthread_mutex_lock(&c->lock);
	st = c->st;
	pthread_mutex_unlock(&c->lock);
	return st;
}

const char *controller_source(const struct controller *ctl)
{
	return ctl->spec;
}

void controller_free(struct controller *ctl)
{
	if (!ctl)
		return;
	ctl->stop = 1;
	if (ctl->started)
		pthread_join(ctl->thread, NULL);
	source_close(ctl->src);
	routes_free(&ctl->pending);
	if (ctl->efd >= 0) {
		close(ctl->efd);
		pthread_mutex_destroy(&ctl->lock);
	}
	free(ctl);
}
