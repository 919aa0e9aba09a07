/* agent/upgrade.h — zero-downtime binary upgrade: the running clawd starts the new binary and hands it its listening sockets (SCM_RIGHTS). */
#ifndef OPENCLAW_UPGRADE_H
#define OPENCLAW_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "netaddr.h"

struct admin;
struct agent;
struct cfg_listener;
struct config;
struct control;
struct reloader;

/*
 * Wire protocol between the old clawd (O) and the new one (N), over a
 * SOCK_SEQPACKET socketpair whose N end is fd UPGRADE_CHILD_FD in N
 * (named by the environment variable UPGRADE_ENV_FD):
 *
 *   O -> N  OFFER  parts of at most UPGRADE_MAX_PER_MSG entries, each with its
 *                  socket in SCM_RIGHTS (entry i <-> fd i); the last part has
 *                  UPGRADE_F_LAST and every part carries the offer's total
 *   N -> O  READY  config loaded, workers accepting, control socket bound at
 *                  its temporary path, admin listener up
 *   O -> N  GO     O commits: it will stop accepting and exit
 *           ABORT  O called the upgrade off (timeout): N stops and exits 1
 *   N -> O  DONE   N renamed its control socket over the real path and wrote
 *                  the PID file
 *
 * Every message starts with a fixed header; numbers are little-endian.
 */
#define UPGRADE_MAGIC "CLUP"
#define UPGRADE_PROTO_VERSION 1
#define UPGRADE_HDR_SIZE 24      /* magic 4, version 2, type 2, count 4, flags 4, pid 4, total 4 */
#define UPGRADE_ADDR_MAX 28      /* sizeof(struct sockaddr_in6) */
#define UPGRADE_ENTRY_SIZE (8 + UPGRADE_ADDR_MAX) /* kind 2, worker 2, family 2, addr_len 2, addr */
#define UPGRADE_MAX_PER_MSG 32   /* well under SCM_MAX_FD (253) */
#define UPGRADE_MSG_MAX (UPGRADE_HDR_SIZE + UPGRADE_MAX_PER_MSG * UPGRADE_ENTRY_SIZE)
#define UPGRADE_F_LAST 1u        /* OFFER: the last part */

#define UPGRADE_ENV_FD "CLAWD_UPGRADE_FD"            /* set in N only: the protocol socket */
#define UPGRADE_ENV_STDERR "CLAWD_UPGRADE_STDERR_FD" /* set in N only: O's stderr, restored on GO */
#define UPGRADE_CHILD_FD 3
#define UPGRADE_CHILD_STDERR_FD 4
#define UPGRADE_DEFAULT_TIMEOUT_MS 10000 /* spawn to READY */
#define UPGRADE_MAX_TIMEOUT_MS 600000
#define UPGRADE_CTL_SUFFIX ".upgrade"    /* N binds <control socket>.upgrade, then renames it */

enum upgrade_type {
	UPGRADE_MSG_OFFER = 1,
	UPGRADE_MSG_READY,
	UPGRADE_MSG_GO,
	UPGRADE_MSG_ABORT,
	UPGRADE_MSG_DONE,
};

enum upgrade_kind {
	UPGRADE_KIND_LISTENER = 1, /* a proxy listener's SO_REUSEPORT socket of one worker */
	UPGRADE_KIND_ADMIN,        /* the admin (metrics) listener */
};

struct upgrade_hdr {
	uint16_t version; /* UPGRADE_PROTO_VERSION */
	uint16_t type;    /* enum upgrade_type */
	uint32_t count;   /* entries in this message (OFFER), else 0 */
	uint32_t flags;   /* UPGRADE_F_* */
	uint32_t pid;     /* the sender */
	uint32_t total;   /* OFFER: entries in the whole offer */
};

struct upgrade_entry {
	uint16_t kind;        /* enum upgrade_kind */
	uint16_t worker;      /* LISTENER: the worker that polled it in O */
	struct net_addr addr; /* the address as configured (matched against the new config) */
};

/* Encodes h and its h->count entries into buf; returns the length or -ENOSPC / -EINVAL. */
ssize_t upgrade_encode(const struct upgrade_hdr *h, const struct upgrade_entry *e, void *buf,
		       size_t len);
/*
 * Decodes one message: checks the magic, the version, the type, that the
 * length is exactly the header plus count entries, count <= max, and each
 * entry's kind, family and address length. Returns 0 or -EPROTO / -EPROTONOSUPPORT
 * (another version) / -EMSGSIZE (more entries than max).
 */
int upgrade_decode(const void *buf, size_t len, struct upgrade_hdr *h, struct upgrade_entry *e,
		   unsigned max);

/* ---- in every clawd ---- */

/* At the top of main, before getopt reorders argv: remembers argv and /proc/self/exe. */
void upgrade_init(int argc, char **argv);

/* Removes the PID file only when it still names this process (the new one may own it now). */
void upgrade_pid_file_release(const char *path);

/* ---- in the new clawd (N) ---- */

/*
 * When started by an upgrade (UPGRADE_ENV_FD set): receives the offer and
 * refuses a configuration the handed-over sockets cannot serve (fewer workers
 * than sockets per kept listener: connections queued on the extra sockets
 * would be reset). 0 when not an upgrade. Call once cfg and nworkers are known.
 */
int upgrade_child_init(const struct config *cfg, unsigned nworkers, char *err, size_t errlen);
bool upgrade_is_child(void);
/* The inherited socket of listener l for worker (its backlog re-applied), or -ENOENT. */
int upgrade_take_listener(const struct cfg_listener *l, unsigned worker);
/* The inherited admin socket for addr, or -ENOENT. */
int upgrade_take_admin(const struct net_addr *addr);
/* The path to bind the control socket at: path itself, or path + UPGRADE_CTL_SUFFIX in N. */
const char *upgrade_control_path(const char *path, char *buf, size_t len);
/*
 * N is up: closes inherited sockets the new config has no use for, sends
 * READY, waits for GO, renames the control socket over ctl_path, writes the
 * PID file, gives stderr back and sends DONE. 0, or a negative errno with the
 * reason in err (the old clawd called it off): then N stops and exits 1.
 */
int upgrade_child_ready(struct control *ctl, const char *ctl_path, const char *pid_file, char *err,
			size_t errlen);

/* ---- in the running clawd (O) ---- */

struct upgrader;

/* reloader may be NULL (reloads off), admin NULL (no admin listener). */
int upgrade_create(struct upgrader **out, struct agent *a, struct reloader *r, struct admin *admin);
void upgrade_free(struct upgrader *u);
/* Registers "upgrade" (before control_start). */
int upgrade_register_commands(struct upgrader *u, struct control *c);
/*
 * Runs an upgrade to binary (NULL: the path clawd was started from) and waits
 * up to timeout_ms for the new process to be ready. 0 when the new process
 * has taken over (the caller then stops accepting, drains and exits), else a
 * negative errno and the reason in msg; this process keeps serving.
 */
int upgrade_run(struct upgrader *u, const char *binary, uint64_t timeout_ms, char *msg,
		size_t msglen);
/* True once an upgrade succeeded: main leaves its loop and drains. */
bool upgrade_handed_over(const struct upgrader *u);
/* The new process's pid after a successful upgrade, else 0. */
pid_t upgrade_new_pid(const struct upgrader *u);

#endif
