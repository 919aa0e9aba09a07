/* cli/clawctl.c — clawctl: a thin client of clawd's control socket (human tables, or --json). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "jsonr.h"
#include "jsonw.h"
#include "netaddr.h"
#include "parse.h"

#define EXIT_REFUSED 1 /* the agent said no, or could not be reached */
#define EXIT_USAGE 2   /* the command line is wrong */

struct ctl {
	const char *socket;
	bool json;
	char *raw;     /* the last reply line */
	char *strbuf;  /* backs the strings of the last parsed reply */
};

struct ctl_cmd {
	const char *name;
	const char *usage;
	int (*run)(struct ctl *ctl, int argc, char **argv);
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("clawctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

/* Sends one request line and reads one reply line into *reply (malloc'd). */
static int ctl_call(struct ctl *ctl, const char *request, char **reply, size_t *reply_len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t cap = 65536, len = 0;
	char *buf;
	int fd;

	if (strlen(ctl->socket) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "clawctl: socket path too long: %s\n", ctl->socket);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, ctl->socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		fprintf(stderr, "clawctl: cannot reach clawd at %s: %s%s\n", ctl->socket, strerror(e),
			e == ENOENT || e == ECONNREFUSED ? " (is clawd running?)" : "");
		if (fd >= 0)
			close(fd);
		return -e;
	}
	size_t rl = strlen(request);
	for (size_t off = 0; off < rl;) {
		ssize_t n = send(fd, request + off, rl - off, MSG_NOSIGNAL);

		if (n <= 0) {
			fprintf(stderr, "clawctl: send to %s: %s\n", ctl->socket, strerror(errno));
			close(fd);
			return -EIO;
		}
		off += n;
	}
	buf = malloc(cap);
	for (;;) {
		if (!buf)
			break;
		if (len == cap) {
			char *nb = realloc(buf, cap * 2);

			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = recv(fd, buf + len, cap - len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
		if (memchr(buf + len - n, '\n', n))
			break;
	}
	close(fd);
	if (!buf || !len || buf[len - 1] != '\n') {
		fprintf(stderr, "clawctl: clawd at %s closed without a reply\n", ctl->socket);
		free(buf);
		return -EIO;
	}
	buf[--len] = '\0';
	*reply = buf;
	*reply_len = len;
	return 0;
}

/*
 * Runs a request and parses the reply. Returns 0 with *j ready when the agent
 * said ok; otherwise prints the reason and returns EXIT_REFUSED.
 */
static int ctl_request(struct ctl *ctl, const char *request, struct jsonr *j, char **raw)
{
	static struct jsonr_node nodes[65536];
	size_t len = 0;
	int rc = ctl_call(ctl, request, raw, &len);

	if (rc)
		return EXIT_REFUSED;
	char *strbuf = malloc(len + 1);

	ctl->raw = *raw;
	ctl->strbuf = strbuf;
	if (!strbuf || jsonr_parse(j, *raw, len, nodes, 65536, strbuf, len + 1)) {
		fprintf(stderr, "clawctl: unreadable reply from clawd\n");
		return EXIT_REFUSED;
	}
	const struct jsonr_node *ok = jsonr_get(j, &j->nodes[0], "ok");
	if (!ok || ok->type != JSONR_BOOL || !ok->b) {
		const char *why = jsonr_get_str(j, &j->nodes[0], "error");

		if (ctl->json)
			printf("%s\n", *raw);
		fprintf(stderr, "clawctl: %s\n", why ? why : "clawd refused the request");
		return EXIT_REFUSED;
	}
	/* strbuf backs the parsed strings for the rest of the run. */
	return 0;
}

static void print_duration(uint64_t s)
{
	if (s >= 86400)
		printf("%llud%lluh", (unsigned long long)(s / 86400),
		       (unsigned long long)(s % 86400 / 3600));
	else if (s >= 3600)
		printf("%lluh%llum", (unsigned long long)(s / 3600),
		       (unsigned long long)(s % 3600 / 60));
	else if (s >= 60)
		printf("%llum%llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
	else
		printf("%llus", (unsigned long long)s);
}

static int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (argc > 1)
		return usage_error("status: unexpected argument '%s'", argv[1]);
	rc = ctl_request(ctl, "{\"cmd\":\"status\"}\n", &j, &raw);
	if (rc)
		return rc;
	if (ctl->json) {
		printf("%s\n", raw);
		return 0;
	}
	const struct jsonr_node *r = &j.nodes[0];
	printf("clawd %s (pid %lld), up ", jsonr_get_str(&j, r, "version"),
	       (long long)jsonr_get_int(&j, r, "pid", 0));
	print_duration(jsonr_get_int(&j, r, "uptime_s", 0));
	printf("\n%-12s %s (loaded %s)\n", "config", jsonr_get_str(&j, r, "config"),
	       jsonr_get_str(&j, r, "config_loaded"));
	printf("%-12s %lld\n", "workers", (long long)jsonr_get_int(&j, r, "workers", 0));
	printf("%-12s %lld open, %lld accepted, %lld requests\n", "connections",
	       (long long)jsonr_get_int(&j, r, "connections", 0),
	       (long long)jsonr_get_int(&j, r, "accepted", 0),
	       (long long)jsonr_get_int(&j, r, "requests", 0));
	printf("%-12s %lld new, %lld reused\n", "backend conn",
	       (long long)jsonr_get_int(&j, r, "upstream_connects", 0),
	       (long long)jsonr_get_int(&j, r, "upstream_reuses", 0));
	const char *al = jsonr_get_str(&j, r, "access_log");
	printf("%-12s %s\n", "access log", al ? al : "off");
	const struct jsonr_node *l = jsonr_child(&j, jsonr_get(&j, r, "listeners"));
	for (bool first = true; l; l = jsonr_next(&j, l), first = false)
		printf("%-12s %-16s %s\n", first ? "listeners" : "", jsonr_get_str(&j, l, "name"),
		       jsonr_get_str(&j, l, "address"));
	const struct jsonr_node *u = jsonr_child(&j, jsonr_get(&j, r, "upstreams"));
	for (bool first = true; u; u = jsonr_next(&j, u), first = false) {
		long long n = jsonr_get_int(&j, u, "servers", 0);

		printf("%-12s %-16s %s, %lld server%s\n", first ? "upstreams" : "",
		       jsonr_get_str(&j, u, "name"), jsonr_get_str(&j, u, "algorithm"), n,
		       n == 1 ? "" : "s");
	}
	printf("%-12s %lld\n", "routes", (long long)jsonr_get_int(&j, r, "routes", 0));
	return 0;
}

static int cmd_ping(struct ctl *ctl, int argc, char **argv)
{
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (argc > 1)
		return usage_error("ping: unexpected argument '%s'", argv[1]);
	rc = ctl_request(ctl, "{\"cmd\":\"ping\"}\n", &j, &raw);
	if (rc)
		return rc;
	if (ctl->json)
		printf("%s\n", raw);
	else
		printf("clawd %s is answering on %s\n", jsonr_get_str(&j, &j.nodes[0], "pong"),
		       ctl->socket);
	return 0;
}

static const struct ctl_cmd commands[] = {
	{ "status", "status                 what runs, since when, how busy", cmd_status },
	{ "ping", "ping                   is clawd answering?", cmd_ping },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: clawctl [--socket PATH] [--json] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %s\n", commands[i].usage);
	fprintf(f, "\noptions:\n"
		   "  -s, --socket PATH  control socket (default " CONTROL_DEFAULT_SOCKET
		   ", or $CLAWD_SOCKET)\n"
		   "  -j, --json         print the agent's JSON reply (for scripts)\n"
		   "exit status: 0 ok, 1 clawd refused or is unreachable, 2 bad arguments\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct ctl ctl = { .socket = getenv("CLAWD_SOCKET") };
	int c;

	if (!ctl.socket || !*ctl.socket)
		ctl.socket = CONTROL_DEFAULT_SOCKET;
	/* "+": stop at the command so its own options are left for it. */
	while ((c = getopt_long(argc, argv, "+s:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			ctl.socket = optarg;
			break;
		case 'j':
			ctl.json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return usage_error("see 'clawctl --help'");
		}
	}
	if (optind >= argc)
		return usage_error("no command given; see 'clawctl --help'");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[optind], commands[i].name)) {
			int rc = commands[i].run(&ctl, argc - optind, argv + optind);

			free(ctl.raw);
			free(ctl.strbuf);
			return rc;
		}
	return usage_error("unknown command '%s'; see 'clawctl --help'", argv[optind]);
}
