/* agent/sdnotify.h — systemd readiness protocol (sd_notify) without libsystemd: one datagram to $NOTIFY_SOCKET. */
#ifndef OPENCLAW_SDNOTIFY_H
#define OPENCLAW_SDNOTIFY_H

#include <sys/types.h>

/*
 * Sends state (newline-separated "KEY=VALUE" assignments, e.g. "READY=1") to
 * the socket named by $NOTIFY_SOCKET: a path ("/run/systemd/notify") or an
 * abstract name ("@name"). Returns 1 when sent, 0 when $NOTIFY_SOCKET is not
 * set (not under a Type=notify service: nothing to do), or a negative errno:
 * -EAFNOSUPPORT for an address form we do not speak (vsock), -ENAMETOOLONG,
 * or what socket/sendto said. $NOTIFY_SOCKET is left in the environment so an
 * upgraded clawd (started by this one) can notify too.
 */
int sdnotify_send(const char *state);

/* "READY=1" with a STATUS line, once clawd serves. */
int sdnotify_ready(void);
/* "RELOADING=1" with MONOTONIC_USEC (systemd 253 wants it for Type=notify-reload). */
int sdnotify_reloading(void);
/* "STOPPING=1": a graceful stop began (never sent by an old clawd after an upgrade). */
int sdnotify_stopping(void);
/* "MAINPID=pid" then "READY=1": the upgraded clawd (pid) is the service's main process now. */
int sdnotify_mainpid(pid_t pid);

#endif
