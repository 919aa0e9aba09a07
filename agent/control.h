/* agent/control.h — the control socket: line-delimited JSON commands over a Unix socket, peers checked. */
#ifndef OPENCLAW_CONTROL_H
#define OPENCLAW_CONTROL_H

#include <stddef.h>
#include <sys/types.h>

#include "jsonr.h"
#include "jsonw.h"

#define CONTROL_DEFAULT_SOCKET "/run/openclaw/clawd.sock"
#define CONTROL_MAX_LINE (64 * 1024)     /* a request line longer than this is refused */
#define CONTROL_MAX_REPLY (4 * 1024 * 1024)

struct control;

/* One request: {"cmd":"name", ...arguments}. */
struct control_req {
	const struct jsonr *j;
	const struct jsonr_node *args; /* the request object */
	uid_t uid;                     /* peer credentials (SO_PEERCRED) */
	pid_t pid;
};

/*
 * A command handler. On success it returns 0 after adding members to the
 * reply object w (already opened, with "ok":true written). On failure it
 * returns a negative errno and writes a one-line reason into err.
 */
typedef int (*control_fn)(void *ctx, const struct control_req *req, struct jsonw *w, char *err,
			  size_t errlen);

/*
 * Creates the socket at path (mode 0660, group `group` when not (gid_t)-1)
 * and refuses to take over a path where a live agent answers.
 */
int control_open(struct control **out, const char *path, gid_t group, char *err, size_t errlen);

/* Registers cmd before control_start. */
int control_register(struct control *c, const char *cmd, control_fn fn, void *ctx);

/* Serves requests on a thread of its own until control_close. */
int control_start(struct control *c);
void control_close(struct control *c);

/*
 * Moves the bound socket file to path, replacing whatever is there at once
 * (binary upgrade: the new clawd binds a temporary path, then takes the real one).
 */
int control_rename(struct control *c, const char *path);

/* Exposed for tests: may this peer use the socket? root, our own uid, or a member of group. */
int control_peer_allowed(uid_t uid, gid_t gid, gid_t group);

#endif
