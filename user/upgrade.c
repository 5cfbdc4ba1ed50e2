// SPDX-License-Identifier: GPL-2.0
/*
 * Listener hand-over between an old and a new daemon (see upgrade.h).
 *
 * The protocol is one line each way on a unix stream socket:
 *   new -> old   "takeover ADDR:PORT\n"
 *   old -> new   "ok PID\n" with the listening socket attached, or
 *                "error REASON\n"
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "datapath.h"
#include "log.h"
#include "upgrade.h"
#include "util.h"

#define IO_TIMEOUT_MS	5000	/* the new daemon waits this long for an answer */
#define SERVE_TIMEOUT_MS 300	/* the running one, on its event loop, this long for a request */

static int ctl_addr(const char *pin_dir, struct sockaddr_un *sun)
{
	char path[PATH_MAX];

	datapath_run_path(pin_dir, "/run", ".sock", path, sizeof(path));
	if (strlen(path) >= sizeof(sun->sun_path)) {
		pr_err("control socket path %s is too long", path);
		return -1;
	}
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	strcpy(sun->sun_path, path);
	return 0;
}

/* One line, waiting at most timeout_ms; the fd passed along, if any. */
static ssize_t recv_line(int fd, char *buf, size_t len, int *passed, int timeout_ms)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = buf, .iov_len = len - 1 };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct cmsghdr *cm;
	ssize_t n;

	if (passed)
		*passed = -1;
	if (poll(&pfd, 1, timeout_ms) != 1)
		return -1;
	n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int got;

			memcpy(&got, CMSG_DATA(cm), sizeof(got));
			if (passed && *passed < 0)
				*passed = got;
			else
				close(got);
		}
	}
	buf[strcspn(buf, "\n")] = '\0';
	return n;
}

static int send_line(int fd, const char *line, int pass_fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = (void *)line, .iov_len = strlen(line) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (pass_fd >= 0) {
		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = sizeof(cbuf);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
	}
	return sendmsg(fd, &msg, MSG_NOSIGNAL) == (ssize_t)iov.iov_len ? 0 : -1;
}

int upgrade_request(const char *pin_dir, const struct sockaddr_in *listen, int *lfd, int *old_pid)
{
	struct sockaddr_un sun;
	char req[96], resp[256], want[48];
	int fd, passed = -1;

	if (ctl_addr(pin_dir, &sun))
		return 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		close(fd);	/* nobody there (or a stale socket of a crashed run) */
		return 0;
	}
	ps_addr_str(listen->sin_addr.s_addr, listen->sin_port, want, sizeof(want));
	snprintf(req, sizeof(req), "takeover %s\n", want);
	if (send_line(fd, req, -1) || recv_line(fd, resp, sizeof(resp), &passed, IO_TIMEOUT_MS) < 0) {
		pr_err("upgrade: the running pathsplice (%s) did not answer", sun.sun_path);
		close(fd);
		return -1;
	}
	close(fd);
	if (strncmp(resp, "ok ", 3) || passed < 0) {
		if (passed >= 0)
			close(passed);
		pr_err("upgrade: the running pathsplice refused: %s", resp);
		return -1;
	}
	*lfd = passed;
	*old_pid = atoi(resp + 3);
	pr_info("upgrade: took over the listener on %s from pid %d", want, *old_pid);
	return 1;
}

int upgrade_listen(const char *pin_dir)
{
	struct sockaddr_un sun;
	int fd;

	if (ctl_addr(pin_dir, &sun))
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	unlink(sun.sun_path);	/* a stale one: the pin dir lock says we own it */
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) || listen(fd, 4)) {
		pr_warn("upgrade: cannot listen on %s: %s (upgrades will not work)", sun.sun_path,
			strerror(errno));
		close(fd);
		return -1;
	}
	chmod(sun.sun_path, 0600);
	return fd;
}

void upgrade_close(int cfd, const char *pin_dir)
{
	struct sockaddr_un sun;

	if (cfd < 0)
		return;
	close(cfd);
	if (!ctl_addr(pin_dir, &sun))
		unlink(sun.sun_path);
}

int upgrade_serve(int cfd, const char *pin_dir, const struct sockaddr_in *listen, int lfd,
		  int (*release)(void *arg), void *arg)
{
	char req[128], mine[48], resp[96];
	struct sockaddr_un sun;
	int fd, ret = 0;

	fd = accept4(cfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return 0;
	ps_addr_str(listen->sin_addr.s_addr, listen->sin_port, mine, sizeof(mine));
	if (recv_line(fd, req, sizeof(req), NULL, SERVE_TIMEOUT_MS) < 0 || strncmp(req, "takeover ", 9)) {
		send_line(fd, "error bad request\n", -1);
	} else if (strcmp(req + 9, mine)) {
		snprintf(resp, sizeof(resp), "error this pathsplice listens on %s\n", mine);
		send_line(fd, resp, -1);
		pr_warn("upgrade: refused a takeover for %s (this daemon listens on %s)", req + 9, mine);
	} else if (lfd < 0 || release(arg)) {
		send_line(fd, "error cannot hand over\n", -1);
	} else {
		/* the new daemon will create its own control socket */
		if (!ctl_addr(pin_dir, &sun))
			unlink(sun.sun_path);
		snprintf(resp, sizeof(resp), "ok %d\n", (int)getpid());
		if (send_line(fd, resp, lfd))
			pr_err("upgrade: could not send the listener: %s", strerror(errno));
		else
			ret = 1;
	}
	close(fd);
	return ret;
}
