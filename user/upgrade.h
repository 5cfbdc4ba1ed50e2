/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Upgrades that drop nothing: a new pathsplice started with the same pin dir
 * and listen address as a running one takes its listening socket over.
 *
 * The running daemon listens on a unix control socket
 * (/run/pathsplice<pin dir>.sock). A new daemon, once its BPF object is
 * loaded, connects and asks for the listener of its --listen address. The
 * running one moves its pins aside and unlocks the pin dir, removes its
 * control socket, and sends the listening socket itself (SCM_RIGHTS). From
 * then on the new daemon accepts every new connection — from the very same
 * socket, so not one queued connection is lost or refused — while the old one
 * stops accepting, lets its connections finish (up to --drain-timeout) and
 * exits. This is HAProxy's "-x" socket transfer, done automatically.
 */
#ifndef PS_UPGRADE_H
#define PS_UPGRADE_H

#include <netinet/in.h>

/*
 * New daemon: ask a running one for its listener. Returns 1 with *lfd set
 * (and *old_pid), 0 when no daemon runs with this pin dir, -1 when one runs
 * but refused (the reason is logged).
 */
int upgrade_request(const char *pin_dir, const struct sockaddr_in *listen, int *lfd, int *old_pid);

/* Running daemon: the control socket, or -1 (logged; upgrades then fail). */
int upgrade_listen(const char *pin_dir);

/* Running daemon: remove the control socket (at exit). */
void upgrade_close(int cfd, const char *pin_dir);

/*
 * Running daemon: answer one request on the control socket. When the
 * request is for `listen`, release() (which hands the pin dir over) is
 * called, the control socket removed and `lfd` sent: returns 1, and the
 * caller stops accepting. Otherwise returns 0.
 */
int upgrade_serve(int cfd, const char *pin_dir, const struct sockaddr_in *listen, int lfd,
		  int (*release)(void *arg), void *arg);

#endif
