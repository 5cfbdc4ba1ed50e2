/* SPDX-License-Identifier: GPL-2.0 */
/*
 * `pathsplice status`: the services, instances, health and counters of a
 * running daemon, read from its pinned maps or asked from its admin endpoint.
 */
#ifndef PS_STATUS_H
#define PS_STATUS_H

/* argv[0] is "status". Exit status: 0 shown, 1 no daemon / unreachable /
 * unreadable, 2 usage error. */
int cmd_status(int argc, char **argv);

#endif
