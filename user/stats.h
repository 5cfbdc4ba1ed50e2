/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Routing state and counters, collected from the BPF maps alone.
 *
 * One collector serves the admin endpoint (/stats, /metrics) of the running
 * daemon and `pathsplice status`, which opens the pinned maps of a daemon it
 * is not part of. Nothing here reads daemon memory, so both see the same
 * numbers.
 *
 * The JSON document (stats_collect()):
 *
 *   {
 *     "uptime_seconds": 3600,          since the verdict program was loaded;
 *                                      null when unknown (no prog_fd)
 *     "totals": { "services": 2, "instances": 4, "instances_up": 3,
 *                 "instances_draining": 1, COUNTERS },
 *     "services": [                    sorted by path
 *       { "id": 0,                     ps_service.id
 *         "name": "service1",
 *         "path": "/service1",
 *         "state": "up",               "up" if any instance is up, else "down"
 *         "instances_up": 2,           listed instances that are up
 *         "instances_listed": 2,       instances in the service's list
 *         COUNTERS,                    summed over "instances" below
 *         "instances": [ INSTANCE... ] the list, in registry order, then the
 *                                      service's draining instances (removed
 *                                      from the list, connections finishing)
 *       } ],
 *     "draining": [ INSTANCE... ]      draining instances whose service was
 *                                      removed; each has "service_id" too
 *   }
 *
 *   INSTANCE = { "slot": 3,            index of the `instances` map
 *                "id": "s1-a",
 *                "address": "127.0.0.1:8001",
 *                "state": "up",        "up", "down", "draining" ("free" for a
 *                                      listed slot in transition)
 *                "reason": "check passed",   health_reason_str() of the last
 *                                      state change or check
 *                COUNTERS }
 *
 *   COUNTERS = "connections_active"    backend connections open now
 *              "connections_total"     backend connections opened
 *              "requests"              requests routed (kernel + userspace)
 *              "bytes_to_backend"      client -> backend bytes (kernel + userspace)
 *              "bytes_to_client"       backend -> client bytes (kernel + userspace)
 *              "retries"               connects that failed; the request moved on
 *              "health_transitions"    up <-> down changes
 *              "passive_downs"         times the data path took it down
 *              "checks_failed"         active health checks that failed
 *              "handbacks"             segments the kernel handed to userspace
 *
 * Every number is a JSON integer except uptime_seconds (integer or null).
 * Strings read from the maps are cut at their field size, and bytes that are
 * not UTF-8 become '?'.
 */
#ifndef PS_STATS_H
#define PS_STATS_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* The maps (and the verdict program) to read; not owned. */
struct stats_maps {
	int services_fd;		/* `services` hash */
	int instances_fd;		/* `instances` array */
	int inst_stats_fd;		/* `inst_stats` per-CPU array */
	int prog_fd;			/* `ps_verdict`, for the uptime; -1 if unknown */
};

/*
 * Read the maps into a new JSON document (shape above). Bounded work: one
 * walk of at most PS_MAX_SERVICES services, one batch read of the instance
 * array, one per-CPU read per instance in use. Returns NULL with errno set
 * when a map cannot be read: EBADF for a missing fd, EPROTO for a map whose
 * layout is not this build's (the pins of another pathsplice version),
 * ENOMEM, or the error of the failed bpf() call. Safe to call from several
 * threads at once.
 */
json_t *stats_collect(const struct stats_maps *m);

/*
 * Render a stats document as Prometheus text exposition format 0.0.4 into a
 * new malloc'd, NUL-terminated buffer (*out, length *len). Metric families:
 *
 *   pathsplice_uptime_seconds                      gauge (omitted if unknown)
 *   pathsplice_service_up{service,path}            gauge 1/0
 *   pathsplice_service_instances_up{service,path}  gauge
 *   pathsplice_instance_up{INST}                   gauge 1/0
 *   pathsplice_instance_state{INST,state}          gauge 1/0, state up|down|draining
 *   pathsplice_instance_connections_active{INST}   gauge
 *   pathsplice_instance_connections_total{INST}    counter
 *   pathsplice_instance_requests_total{INST}       counter
 *   pathsplice_instance_request_bytes_total{INST}  counter (client -> backend)
 *   pathsplice_instance_response_bytes_total{INST} counter (backend -> client)
 *   pathsplice_instance_retries_total{INST}        counter
 *   pathsplice_instance_health_transitions_total{INST}  counter
 *   pathsplice_instance_passive_downs_total{INST}  counter
 *   pathsplice_instance_checks_failed_total{INST}  counter
 *   pathsplice_instance_handbacks_total{INST}      counter
 *
 * INST = service, path, instance_id, address (service and path empty for a
 * draining instance of a removed service; a "slot" label is added only where
 * two instances would otherwise have the same labels). The instance label is
 * "instance_id", not "instance": Prometheus sets "instance" on every scraped
 * series to the target and would rename ours to exported_instance.
 *
 * Returns 0, or -1 (errno set) when memory runs out or the document is not a
 * stats document.
 */
int stats_to_prometheus(const json_t *stats, char **out, size_t *len);

/* Escape a Prometheus label value (\ " and newline) into f. */
void stats_prom_escape(FILE *f, const char *s);

/*
 * A readable table of a stats document for `pathsplice status`: a summary
 * line, then each service with its instances below it, columns aligned,
 * byte counts in human units (KiB, MiB, ...).
 */
void stats_print_table(const json_t *stats, FILE *f);

/* A JSON string of at most `max` bytes of s (up to a NUL). When they are
 * not valid UTF-8 (a map field cut in the middle of a character, a process's
 * command line), every byte >= 0x80 becomes '?'. NULL when out of memory. */
json_t *stats_json_string(const char *s, size_t max);

/* "0 B", "999 B", "1.5 KiB", "12.0 MiB" ... into buf. */
const char *stats_human_bytes(unsigned long long n, char *buf, size_t len);

#endif
