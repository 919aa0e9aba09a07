/* cli/clawctl.c — clawctl: a thin client of clawd's control socket (human tables, or --json). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "guard_store.h"
#include "keys.h"
#include "jsonr.h"
#include "jsonw.h"
#include "netaddr.h"
#include "obs.h"
#include "parse.h"
#include "ratelimit.h"
#include "upgrade.h"

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

/* 90061 -> "1d1h": the two largest units, as operators read an uptime or a TTL. */
static void format_duration(uint64_t s, char *buf, size_t len)
{
	if (s >= 86400)
		snprintf(buf, len, "%llud%lluh", (unsigned long long)(s / 86400),
			 (unsigned long long)(s % 86400 / 3600));
	else if (s >= 3600)
		snprintf(buf, len, "%lluh%llum", (unsigned long long)(s / 3600),
			 (unsigned long long)(s % 3600 / 60));
	else if (s >= 60)
		snprintf(buf, len, "%llum%llus", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
	else
		snprintf(buf, len, "%llus", (unsigned long long)s);
}

static void print_duration(uint64_t s)
{
	char buf[48];

	format_duration(s, buf, sizeof(buf));
	fputs(buf, stdout);
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
	printf("\n%-12s %s (loaded %s, %lld reloads, %lld refused)\n", "config",
	       jsonr_get_str(&j, r, "config"), jsonr_get_str(&j, r, "config_loaded"),
	       (long long)jsonr_get_int(&j, r, "reloads", 0),
	       (long long)jsonr_get_int(&j, r, "reload_failures", 0));
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
	const char *adm = jsonr_get_str(&j, r, "admin");
	const struct jsonr_node *tok = jsonr_get(&j, r, "admin_token");

	printf("%-12s %s%s\n", "admin", adm ? adm : "off",
	       adm && tok && tok->type == JSONR_BOOL && tok->b ? " (bearer token)" : "");
	const struct jsonr_node *gi = jsonr_child(&j, jsonr_get(&j, r, "guard_interfaces"));

	printf("%-12s", "guard");
	if (!gi)
		printf(" off");
	for (; gi; gi = jsonr_next(&j, gi))
		printf(" %s", gi->type == JSONR_STRING ? gi->str : "?");
	printf("\n");
	const struct jsonr_node *l = jsonr_child(&j, jsonr_get(&j, r, "listeners"));
	for (bool first = true; l; l = jsonr_next(&j, l), first = false) {
		const char *tls = jsonr_get_str(&j, l, "tls");

		printf("%-12s %-16s %s", first ? "listeners" : "", jsonr_get_str(&j, l, "name"),
		       jsonr_get_str(&j, l, "address"));
		/* TLS path (docs/tls.md): where the record layer runs, and how many went each way. */
		if (tls && strcmp(tls, "off"))
			printf("  tls %s (%lld kTLS, %lld userspace connections)", tls,
			       (long long)jsonr_get_int(&j, l, "ktls_connections", 0),
			       (long long)jsonr_get_int(&j, l, "userspace_tls_connections", 0));
		printf("\n");
	}
	const struct jsonr_node *u = jsonr_child(&j, jsonr_get(&j, r, "upstreams"));
	for (bool first = true; u; u = jsonr_next(&j, u), first = false) {
		long long n = jsonr_get_int(&j, u, "servers", 0);

		printf("%-12s %-16s %s, %lld server%s\n", first ? "upstreams" : "",
		       jsonr_get_str(&j, u, "name"), jsonr_get_str(&j, u, "algorithm"), n,
		       n == 1 ? "" : "s");
	}
	printf("%-12s %lld\n", "routes", (long long)jsonr_get_int(&j, r, "routes", 0));
	obs_status_print(&j, r); /* splice and key store (cli/obs.c) */
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

/* Live configuration reload (docs/operations.md): the agent validates, refuses or applies. */
static int cmd_reload(struct ctl *ctl, int argc, char **argv)
{
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (argc > 1)
		return usage_error("reload: unexpected argument '%s'", argv[1]);
	rc = ctl_request(ctl, "{\"cmd\":\"reload\"}\n", &j, &raw);
	if (rc)
		return rc;
	if (ctl->json)
		printf("%s\n", raw);
	else
		printf("%s\n", jsonr_get_str(&j, &j.nodes[0], "message"));
	return 0;
}

/* ---- packet guard: block / allow lists, guard stats|status|detach ---- */

/* Which list a "block" or "allow" command works on. */
struct guard_list {
	const char *name;   /* command word and protocol prefix: "block" or "allow" */
	const char *noun;   /* "blocklist" or "allowlist", for messages */
};

static const struct guard_list guard_block = { "block", "blocklist" };
static const struct guard_list guard_allow = { "allow", "allowlist" };

/* Sends a request built in w (an object still open) and parses the reply. */
static int ctl_send_obj(struct ctl *ctl, struct jsonw *w, struct jsonr *j, char **raw)
{
	jsonw_obj_end(w);
	if (jsonw_finish(w) < 0 || w->len + 2 > w->cap)
		return usage_error("request too long");
	w->buf[w->len++] = '\n';
	w->buf[w->len] = '\0';
	return ctl_request(ctl, w->buf, j, raw);
}

/* Binary upgrade (docs/operations.md "Upgrading the binary"): clawd starts the new binary and hands over. */
static int cmd_upgrade(struct ctl *ctl, int argc, char **argv)
{
	const char *bin = NULL, *timeout = NULL;
	char path[PATH_MAX], buf[PATH_MAX + 256], *raw = NULL;
	uint64_t ms = UPGRADE_DEFAULT_TIMEOUT_MS;
	struct jsonw w;
	struct jsonr j;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char **dst = !strcmp(argv[i], "--binary") ? &bin
				   : !strcmp(argv[i], "--timeout") ? &timeout : NULL;

		if (!dst)
			return argv[i][0] == '-' ? usage_error("upgrade: unknown option '%s'", argv[i])
						 : usage_error("upgrade: unexpected argument '%s'", argv[i]);
		if (i + 1 >= argc)
			return usage_error("upgrade: %s needs a value", argv[i]);
		if (*dst)
			return usage_error("upgrade: %s given twice", argv[i]);
		*dst = argv[++i];
	}
	if (timeout && (parse_duration_ms(timeout, &ms) || !ms || ms > UPGRADE_MAX_TIMEOUT_MS))
		return usage_error("upgrade: --timeout: expected a duration from 1ms to 10m such as 10s, got '%s'",
				   timeout);
	/* clawd runs elsewhere (another directory): it gets an absolute path to an executable. */
	if (bin && !realpath(bin, path))
		return usage_error("upgrade: --binary '%s': %s", bin, strerror(errno));
	if (bin && access(path, X_OK))
		return usage_error("upgrade: --binary '%s': not executable: %s", bin, strerror(errno));
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "upgrade");
	if (bin)
		jsonw_str(&w, "binary", path);
	jsonw_u64(&w, "timeout_ms", ms);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	if (ctl->json)
		printf("%s\n", raw);
	else
		printf("%s\n", jsonr_get_str(&j, &j.nodes[0], "message"));
	return 0;
}

/* Checks a CIDR the way clawd will, so a typo never reaches the agent. */
static int check_cidr(const char *what, const char *s)
{
	struct net_cidr c;
	const char *why = "invalid";

	if (net_cidr_parse(s, &c, &why))
		return usage_error("%s: bad CIDR '%s': %s", what, s, why);
	return 0;
}

/*
 * Reads "--name VALUE" or "--name=VALUE" at argv[*i]. Returns 1 when argv[*i]
 * is that option (advancing *i past its value), 0 when it is not, or
 * -EXIT_USAGE after printing why.
 */
static int take_opt(const char *what, const char *name, int argc, char **argv, int *i,
		    const char **val)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n))
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n] != '\0')
		return 0;
	if (*i + 1 >= argc) {
		usage_error("%s: %s needs a value", what, name);
		return -EXIT_USAGE;
	}
	*val = argv[++*i];
	return 1;
}

/* Prints a JSON scalar as a human would write it; arrays and objects as "…". */
static void print_scalar(FILE *f, const struct jsonr_node *n)
{
	if (!n) {
		fputs("-", f);
		return;
	}
	switch (n->type) {
	case JSONR_NULL:
		fputs("-", f);
		break;
	case JSONR_BOOL:
		fputs(n->b ? "yes" : "no", f);
		break;
	case JSONR_NUMBER:
		if (n->is_int)
			fprintf(f, "%lld", (long long)n->i);
		else
			fprintf(f, "%.1f", n->num);
		break;
	case JSONR_STRING:
		fputs(n->str, f);
		break;
	default:
		fputs("...", f);
		break;
	}
}

/* 1234567 -> "1.2M": rates and byte counts read at a glance. */
static const char *human_count(double v, char *buf, size_t len)
{
	static const char units[] = " kMGTPE";
	unsigned u = 0;

	while (v >= 1000.0 && u + 1 < sizeof(units) - 1) {
		v /= 1000.0;
		u++;
	}
	if (!u)
		snprintf(buf, len, "%.0f", v);
	else
		snprintf(buf, len, "%.1f%c", v, units[u]);
	return buf;
}

static int list_add(struct ctl *ctl, const struct guard_list *l, int argc, char **argv)
{
	char what[32], buf[4096];
	const char *cidr = NULL, *ttl = NULL, *reason = NULL;
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	snprintf(what, sizeof(what), "%s add", l->name);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if ((rc = take_opt(what, "--ttl", argc, argv, &i, &ttl)) < 0 ||
		    (!rc && (rc = take_opt(what, "--reason", argc, argv, &i, &reason)) < 0))
			return -rc;
		if (rc)
			continue;
		if (a[0] == '-' && a[1] != '\0')
			return usage_error("%s: unknown option '%s'", what, a);
		if (cidr)
			return usage_error("%s: unexpected argument '%s'", what, a);
		cidr = a;
	}
	if (!cidr)
		return usage_error("%s: missing CIDR (e.g. %s add 192.0.2.0/24 --ttl 10m)", what,
				   l->name);
	if ((rc = check_cidr(what, cidr)))
		return rc;
	if (ttl) {
		uint64_t ms;
		int e = parse_duration_ms(ttl, &ms);

		if (e == -ERANGE)
			return usage_error("%s: --ttl '%s' is too long", what, ttl);
		if (e)
			return usage_error("%s: bad --ttl '%s' (want an integer and a unit: 30s, 10m, 2h, 7d)",
					   what, ttl);
		if (ms < 1000)
			return usage_error("%s: --ttl '%s' is shorter than 1s", what, ttl);
	}
	if (reason && strlen(reason) > GUARD_REASON_MAX)
		return usage_error("%s: --reason is longer than %d bytes", what, GUARD_REASON_MAX);

	char cmd[16];
	snprintf(cmd, sizeof(cmd), "%s.add", l->name);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", cmd);
	jsonw_str(&w, "cidr", cidr);
	if (ttl)
		jsonw_str(&w, "ttl", ttl);
	if (reason)
		jsonw_str(&w, "reason", reason);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	if (ctl->json) {
		printf("%s\n", raw);
		return 0;
	}
	const struct jsonr_node *r = &j.nodes[0];
	const char *got = jsonr_get_str(&j, r, "cidr");
	const char *exp = jsonr_get_str(&j, r, "expires");

	printf("added %s to the %s", got ? got : cidr, l->noun);
	if (exp && ttl)
		printf(", expires %s (in %s)\n", exp, ttl);
	else if (exp)
		printf(", expires %s\n", exp);
	else
		printf(", no expiry\n");
	return 0;
}

static int list_del(struct ctl *ctl, const struct guard_list *l, int argc, char **argv)
{
	char what[32], buf[1024], cmd[16];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	snprintf(what, sizeof(what), "%s del", l->name);
	if (argc < 2)
		return usage_error("%s: missing CIDR", what);
	if (argv[1][0] == '-' && argv[1][1] != '\0')
		return usage_error("%s: unknown option '%s'", what, argv[1]);
	if (argc > 2)
		return usage_error("%s: unexpected argument '%s'", what, argv[2]);
	if ((rc = check_cidr(what, argv[1])))
		return rc;
	snprintf(cmd, sizeof(cmd), "%s.del", l->name);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", cmd);
	jsonw_str(&w, "cidr", argv[1]);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	if (ctl->json) {
		printf("%s\n", raw);
		return 0;
	}
	const char *got = jsonr_get_str(&j, &j.nodes[0], "cidr");

	printf("removed %s from the %s\n", got ? got : argv[1], l->noun);
	return 0;
}

static int list_show(struct ctl *ctl, const struct guard_list *l, int argc, char **argv)
{
	char buf[128], cmd[16];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc, width = 18;

	if (argc > 1)
		return usage_error("%s list: unexpected argument '%s'", l->name, argv[1]);
	snprintf(cmd, sizeof(cmd), "%s.list", l->name);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", cmd);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	if (ctl->json) {
		printf("%s\n", raw);
		return 0;
	}
	const struct jsonr_node *first = jsonr_child(&j, jsonr_get(&j, &j.nodes[0], "entries"));

	if (!first) {
		printf("the %s is empty\n", l->noun);
		return 0;
	}
	for (const struct jsonr_node *e = first; e; e = jsonr_next(&j, e)) {
		const char *c = jsonr_get_str(&j, e, "cidr");
		int n = c ? (int)strlen(c) : 0;

		if (n > width)
			width = n;
	}
	printf("%-*s  %-7s  %-10s  %-20s  %s\n", width, "CIDR", "SOURCE", "EXPIRES IN", "EXPIRES",
	       "REASON");
	for (const struct jsonr_node *e = first; e; e = jsonr_next(&j, e)) {
		const struct jsonr_node *in = jsonr_get(&j, e, "expires_in_s");
		const char *c = jsonr_get_str(&j, e, "cidr"), *src = jsonr_get_str(&j, e, "source");
		const char *exp = jsonr_get_str(&j, e, "expires");
		const char *why = jsonr_get_str(&j, e, "reason");
		char left[24] = "never";

		if (in && in->type == JSONR_NUMBER)
			format_duration(in->num > 0 ? (uint64_t)in->num : 0, left, sizeof(left));
		printf("%-*s  %-7s  %-10s  %-20s  %s\n", width, c ? c : "?", src ? src : "-", left,
		       exp ? exp : "-", why && *why ? why : "-");
	}
	return 0;
}

static int cmd_list(struct ctl *ctl, const struct guard_list *l, int argc, char **argv)
{
	if (argc < 2)
		return usage_error("%s: missing subcommand (add, del or list)", l->name);
	if (!strcmp(argv[1], "add"))
		return list_add(ctl, l, argc - 1, argv + 1);
	if (!strcmp(argv[1], "del"))
		return list_del(ctl, l, argc - 1, argv + 1);
	if (!strcmp(argv[1], "list"))
		return list_show(ctl, l, argc - 1, argv + 1);
	return usage_error("%s: unknown subcommand '%s' (want add, del or list)", l->name, argv[1]);
}

static int cmd_block(struct ctl *ctl, int argc, char **argv)
{
	return cmd_list(ctl, &guard_block, argc, argv);
}

static int cmd_allow(struct ctl *ctl, int argc, char **argv)
{
	return cmd_list(ctl, &guard_allow, argc, argv);
}

/* Prints a JSON array of scalars as "a, b, c". */
static void print_scalars(const struct jsonr *j, const struct jsonr_node *arr)
{
	const struct jsonr_node *e = jsonr_child(j, arr);

	if (!e) {
		fputs("-", stdout);
		return;
	}
	for (bool first = true; e; e = jsonr_next(j, e), first = false) {
		if (!first)
			fputs(", ", stdout);
		print_scalar(stdout, e);
	}
}

/* One line per member: "key  value", nested objects as "k=v, k=v". */
static void print_members(const struct jsonr *j, const struct jsonr_node *obj)
{
	for (const struct jsonr_node *m = jsonr_child(j, obj); m; m = jsonr_next(j, m)) {
		printf("%-16s ", jsonr_key(j, m));
		if (m->type == JSONR_ARRAY) {
			print_scalars(j, m);
		} else if (m->type == JSONR_OBJECT) {
			bool first = true;

			for (const struct jsonr_node *c = jsonr_child(j, m); c;
			     c = jsonr_next(j, c), first = false) {
				printf("%s%s=", first ? "" : ", ", jsonr_key(j, c));
				if (c->type == JSONR_ARRAY)
					print_scalars(j, c);
				else
					print_scalar(stdout, c);
			}
		} else {
			print_scalar(stdout, m);
		}
		putchar('\n');
	}
}

static int guard_status(const struct jsonr *j)
{
	const struct jsonr_node *r = &j->nodes[0];
	const struct jsonr_node *ifs = jsonr_child(j, jsonr_get(j, r, "interfaces"));
	const struct jsonr_node *lim = jsonr_get(j, r, "limits");

	if (!ifs)
		printf("no interfaces configured\n");
	else
		printf("%-16s %7s  %-8s  %-7s  %7s  %s\n", "INTERFACE", "IFINDEX", "ATTACHED", "MODE",
		       "PROG", "LINK");
	for (; ifs; ifs = jsonr_next(j, ifs)) {
		const struct jsonr_node *att = jsonr_get(j, ifs, "attached");
		const struct jsonr_node *prog = jsonr_get(j, ifs, "program_id");
		const char *name = jsonr_get_str(j, ifs, "name");
		const char *mode = jsonr_get_str(j, ifs, "mode");
		const char *link = jsonr_get_str(j, ifs, "link_pinned");
		char id[24] = "-";

		if (prog && prog->type == JSONR_NUMBER && prog->num > 0)
			snprintf(id, sizeof(id), "%lld", (long long)prog->num);
		printf("%-16s %7lld  %-8s  %-7s  %7s  %s\n", name ? name : "?",
		       (long long)jsonr_get_int(j, ifs, "ifindex", 0),
		       att && att->type == JSONR_BOOL && att->b ? "yes" : "no", mode ? mode : "-", id,
		       link ? link : "-");
	}
	printf("\n%-16s ", "ports");
	print_scalars(j, jsonr_get(j, r, "ports"));
	putchar('\n');
	if (lim && lim->type == JSONR_OBJECT)
		print_members(j, lim);
	for (const char **k = (const char *[]){ "pin_dir", "state_file", "allow_entries",
						"block_entries", NULL };
	     *k; k++)
		if (jsonr_get(j, r, *k)) {
			printf("%-16s ", *k);
			print_scalar(stdout, jsonr_get(j, r, *k));
			putchar('\n');
		}
	return 0;
}

/* One counter row of "guard stats": {"packets", "bytes", "packets_per_s", "bytes_per_s"}. */
static void stats_row(const struct jsonr *j, const char *reason, const struct jsonr_node *c)
{
	char a[16], b[16];
	const struct jsonr_node *pps = jsonr_get(j, c, "packets_per_s");
	const struct jsonr_node *bps = jsonr_get(j, c, "bytes_per_s");

	printf("%-14s %14lld %16lld %9s %9s\n", reason,
	       (long long)jsonr_get_int(j, c, "packets", 0), (long long)jsonr_get_int(j, c, "bytes", 0),
	       pps && pps->type == JSONR_NUMBER ? human_count(pps->num, a, sizeof(a)) : "-",
	       bps && bps->type == JSONR_NUMBER ? human_count(bps->num * 8, b, sizeof(b)) : "-");
}

static int guard_stats(const struct jsonr *j)
{
	const struct jsonr_node *r = &j->nodes[0];
	const struct jsonr_node *cs = jsonr_get(j, r, "counters");
	const struct jsonr_node *iv = jsonr_get(j, r, "interval_ms");

	printf("%-14s %14s %16s %9s %9s\n", "REASON", "PACKETS", "BYTES", "PKT/S", "BIT/S");
	for (const struct jsonr_node *c = jsonr_child(j, cs); c; c = jsonr_next(j, c)) {
		const char *reason = cs->type == JSONR_OBJECT ? jsonr_key(j, c)
							      : jsonr_get_str(j, c, "reason");

		stats_row(j, reason ? reason : "?", c);
	}
	if (iv && iv->type == JSONR_NUMBER && iv->num > 0)
		printf("\nrates over the last %.1f s (since the previous 'guard stats')\n",
		       iv->num / 1000.0);
	else
		printf("\nrates appear from the second call on (they cover the time between calls)\n");
	for (const char **k = (const char *[]){ "sampler", "autoban", NULL }; *k; k++) {
		const struct jsonr_node *o = jsonr_get(j, r, *k);

		if (o && o->type == JSONR_OBJECT) {
			printf("\n%s:\n", *k);
			print_members(j, o);
		}
	}
	return 0;
}

static int cmd_guard(struct ctl *ctl, int argc, char **argv)
{
	static const char *const subs[] = { "stats", "status", "detach" };
	char buf[128], cmd[24];
	const char *sub = argc > 1 ? argv[1] : NULL;
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	bool known = false;
	int rc;

	if (!sub)
		return usage_error("guard: missing subcommand (stats, status or detach)");
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		known |= !strcmp(sub, subs[i]);
	if (!known)
		return usage_error("guard: unknown subcommand '%s' (want stats, status or detach)", sub);
	if (argc > 2)
		return usage_error("guard %s: unexpected argument '%s'", sub, argv[2]);
	snprintf(cmd, sizeof(cmd), "guard.%s", sub);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", cmd);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	if (ctl->json) {
		printf("%s\n", raw);
		return 0;
	}
	if (!strcmp(sub, "status"))
		return guard_status(&j);
	if (!strcmp(sub, "stats"))
		return guard_stats(&j);
	printf("guard detached\n");
	return 0;
}

/* ---- keys and limits (docs/api-keys.md, docs/rate-limits.md) ---- */

/* Reads "--opt VALUE" pairs of a keys subcommand; vals[i] stays NULL when absent. */
static int keys_opts(const char *what, int argc, char **argv, int first, const char *const *names,
		     const char **vals, size_t n)
{
	for (int i = first; i < argc; i++) {
		size_t k;

		for (k = 0; k < n; k++)
			if (!strcmp(argv[i], names[k]))
				break;
		if (k == n)
			return argv[i][0] == '-' ? usage_error("%s: unknown option '%s'", what, argv[i])
						 : usage_error("%s: unexpected argument '%s'", what, argv[i]);
		if (i + 1 >= argc || !argv[i + 1][0])
			return usage_error("%s: %s needs a value", what, names[k]);
		if (vals[k])
			return usage_error("%s: %s given twice", what, names[k]);
		vals[k] = argv[++i];
	}
	return 0;
}

static int keys_check_duration(const char *what, const char *opt, const char *s)
{
	uint64_t ms;

	if (s && (parse_duration_ms(s, &ms) || (!ms && strcmp(opt, "--grace"))))
		return usage_error("%s: %s: expected a duration such as 90d, 24h or 30m, got '%s'", what,
				   opt, s);
	return 0;
}

static int keys_check_id(const char *what, int argc, char **argv)
{
	if (argc < 2 || argv[1][0] == '-')
		return usage_error("%s: missing key ID", what);
	if (!keys_id_valid(argv[1]))
		return usage_error("%s: '%s' is not a key id (12 characters a-z, 2-7)", what, argv[1]);
	return 0;
}

/* --scopes r1,r2 as a JSON list; "*" or "" (keys set) means every route. */
static void keys_put_scopes(struct jsonw *w, const char *s)
{
	char buf[1100], *save = NULL;

	jsonw_arr_begin(w, "scopes");
	snprintf(buf, sizeof(buf), "%s", strcmp(s, "*") ? s : "");
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		jsonw_str(w, NULL, t);
	jsonw_arr_end(w);
}

static const char *keys_str(const struct jsonr *j, const struct jsonr_node *o, const char *k)
{
	const char *s = jsonr_get_str(j, o, k);

	return s ? s : "-";
}

static void keys_print_one(const struct jsonr *j, const struct jsonr_node *r)
{
	printf("%-10s %s\n%-10s %s\n%-10s %s\n%-10s ", "id", keys_str(j, r, "id"), "name",
	       keys_str(j, r, "name"), "tier", keys_str(j, r, "tier"), "scopes");
	print_scalars(j, jsonr_get(j, r, "scopes"));
	printf("\n%-10s %s\n", "expires", jsonr_get_str(j, r, "expires") ?
		jsonr_get_str(j, r, "expires") : "never");
}

static int keys_send(struct ctl *ctl, struct jsonw *w, struct jsonr *j, char **raw)
{
	int rc = ctl_send_obj(ctl, w, j, raw);

	if (!rc && ctl->json)
		printf("%s\n", *raw);
	return rc;
}

static int keys_create(struct ctl *ctl, int argc, char **argv)
{
	static const char *const names[] = { "--name", "--tier", "--scopes", "--expires" };
	const char *v[4] = { 0 };
	char buf[4096];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if ((rc = keys_opts("keys create", argc, argv, 1, names, v, 4)))
		return rc;
	if (!v[0])
		return usage_error("keys create: --name is required");
	if (!v[1])
		return usage_error("keys create: --tier is required");
	if ((rc = keys_check_duration("keys create", "--expires", v[3])))
		return rc;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "keys.create");
	jsonw_str(&w, "name", v[0]);
	jsonw_str(&w, "tier", v[1]);
	if (v[2])
		keys_put_scopes(&w, v[2]);
	if (v[3])
		jsonw_str(&w, "expires", v[3]);
	if ((rc = keys_send(ctl, &w, &j, &raw)) || ctl->json)
		return rc;
	keys_print_one(&j, &j.nodes[0]);
	printf("%-10s %s\n\nThe key is shown this once: store it now.\n", "key",
	       keys_str(&j, &j.nodes[0], "key"));
	return 0;
}

static int keys_list(struct ctl *ctl, int argc, char **argv)
{
	char buf[128];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (argc > 1)
		return usage_error("keys list: unexpected argument '%s'", argv[1]);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "keys.list");
	if ((rc = keys_send(ctl, &w, &j, &raw)) || ctl->json)
		return rc;
	const struct jsonr_node *k = jsonr_child(&j, jsonr_get(&j, &j.nodes[0], "keys"));

	if (!k) {
		printf("no keys\n");
		return 0;
	}
	printf("%-12s  %-20s  %-10s  %-7s  %-20s  %-20s  %s\n", "ID", "NAME", "TIER", "STATE",
	       "LAST USED", "EXPIRES", "SCOPES");
	for (; k; k = jsonr_next(&j, k)) {
		printf("%-12s  %-20s  %-10s  %-7s  %-20s  %-20s  ", keys_str(&j, k, "id"),
		       keys_str(&j, k, "name"), keys_str(&j, k, "tier"), keys_str(&j, k, "state"),
		       keys_str(&j, k, "last_used"), keys_str(&j, k, "expires"));
		if (jsonr_child(&j, jsonr_get(&j, k, "scopes")))
			print_scalars(&j, jsonr_get(&j, k, "scopes"));
		else
			fputs("*", stdout);
		putchar('\n');
	}
	return 0;
}

/* show, revoke: one id, the reply's members printed one per line. */
static int keys_by_id(struct ctl *ctl, const char *sub, const char *cmd, int argc, char **argv)
{
	char buf[256], what[32];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	snprintf(what, sizeof(what), "keys %s", sub);
	if ((rc = keys_check_id(what, argc, argv)))
		return rc;
	if (argc > 2)
		return usage_error("%s: unexpected argument '%s'", what, argv[2]);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", cmd);
	jsonw_str(&w, "id", argv[1]);
	if ((rc = keys_send(ctl, &w, &j, &raw)) || ctl->json)
		return rc;
	if (!strcmp(sub, "revoke")) {
		printf("revoked key %s (%s)\n", keys_str(&j, &j.nodes[0], "id"),
		       keys_str(&j, &j.nodes[0], "name"));
		return 0;
	}
	print_members(&j, &j.nodes[0]);
	return 0;
}

static int keys_rotate(struct ctl *ctl, int argc, char **argv)
{
	static const char *const names[] = { "--grace" };
	const char *v[1] = { 0 };
	char buf[256];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if ((rc = keys_check_id("keys rotate", argc, argv)) ||
	    (rc = keys_opts("keys rotate", argc, argv, 2, names, v, 1)) ||
	    (rc = keys_check_duration("keys rotate", "--grace", v[0])))
		return rc;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "keys.rotate");
	jsonw_str(&w, "id", argv[1]);
	if (v[0])
		jsonw_str(&w, "grace", v[0]);
	if ((rc = keys_send(ctl, &w, &j, &raw)) || ctl->json)
		return rc;
	const char *until = jsonr_get_str(&j, &j.nodes[0], "old_secret_until");

	printf("rotated key %s; the old secret %s\n%-10s %s\n\nThe key is shown this once: store it now.\n",
	       keys_str(&j, &j.nodes[0], "id"), until ? "works until" : "no longer works",
	       until ? until : "", "");
	printf("%-10s %s\n", "key", keys_str(&j, &j.nodes[0], "key"));
	return 0;
}

static int keys_set(struct ctl *ctl, int argc, char **argv)
{
	static const char *const names[] = { "--tier", "--rate", "--burst", "--scopes" };
	const char *v[4] = { 0 };
	struct cfg_rate rate;
	char buf[4096];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if ((rc = keys_check_id("keys set", argc, argv)) ||
	    (rc = keys_opts("keys set", argc, argv, 2, names, v, 4)))
		return rc;
	if (!v[0] && !v[1] && !v[2] && !v[3])
		return usage_error("keys set: nothing to change (--tier, --rate, --burst or --scopes)");
	if (v[1] && strcmp(v[1], "tier") && rl_parse_rate(v[1], &rate))
		return usage_error("keys set: --rate: expected a rate such as 100/s or 6000/m, or 'tier', got '%s'",
				   v[1]);
	if (v[2] && (strspn(v[2], "0123456789") != strlen(v[2]) || strlen(v[2]) > 7 ||
		     atol(v[2]) > 1000000))
		return usage_error("keys set: --burst: expected an integer 0..1000000, got '%s'", v[2]);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "keys.set");
	jsonw_str(&w, "id", argv[1]);
	if (v[0])
		jsonw_str(&w, "tier", v[0]);
	if (v[1])
		jsonw_str(&w, "rate", v[1]);
	if (v[2])
		jsonw_u64(&w, "burst", (uint64_t)atol(v[2]));
	if (v[3])
		keys_put_scopes(&w, v[3]);
	if ((rc = keys_send(ctl, &w, &j, &raw)) || ctl->json)
		return rc;
	print_members(&j, &j.nodes[0]);
	return 0;
}

static int cmd_keys(struct ctl *ctl, int argc, char **argv)
{
	if (argc < 2)
		return usage_error("keys: missing subcommand (create, list, show, revoke, rotate or set)");
	if (!strcmp(argv[1], "create"))
		return keys_create(ctl, argc - 1, argv + 1);
	if (!strcmp(argv[1], "list"))
		return keys_list(ctl, argc - 1, argv + 1);
	if (!strcmp(argv[1], "show"))
		return keys_by_id(ctl, "show", "keys.show", argc - 1, argv + 1);
	if (!strcmp(argv[1], "revoke"))
		return keys_by_id(ctl, "revoke", "keys.revoke", argc - 1, argv + 1);
	if (!strcmp(argv[1], "rotate"))
		return keys_rotate(ctl, argc - 1, argv + 1);
	if (!strcmp(argv[1], "set"))
		return keys_set(ctl, argc - 1, argv + 1);
	return usage_error("keys: unknown subcommand '%s' (want create, list, show, revoke, rotate or set)",
			   argv[1]);
}

static int cmd_limits(struct ctl *ctl, int argc, char **argv)
{
	static const char *const names[] = { "--key", "--ip" };
	const char *v[2] = { 0 };
	char buf[512];
	struct net_addr a;
	const char *why = "invalid";
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (argc < 2 || strcmp(argv[1], "show"))
		return usage_error("limits: expected 'limits show [--key ID | --ip ADDR]'");
	if ((rc = keys_opts("limits show", argc, argv, 2, names, v, 2)))
		return rc;
	if (v[0] && v[1])
		return usage_error("limits show: give --key or --ip, not both");
	if (v[0] && !keys_id_valid(v[0]))
		return usage_error("limits show: --key: '%s' is not a key id", v[0]);
	if (v[1] && net_addr_parse(v[1], 1, &a, &why))
		return usage_error("limits show: --ip: '%s': %s", v[1], why);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "limits.show");
	if (v[0])
		jsonw_str(&w, "key", v[0]);
	if (v[1])
		jsonw_str(&w, "ip", v[1]);
	if ((rc = keys_send(ctl, &w, &j, &raw)) || ctl->json)
		return rc;
	print_members(&j, &j.nodes[0]);
	return 0;
}

/* ---- backends: list, drain, enable, weight (docs/health.md) ---- */

/* The NOTE column: why a server is out, or what a drain is waiting for. */
static void backend_note(const struct jsonr *j, const struct jsonr_node *s, char *buf, size_t len)
{
	const char *st = jsonr_get_str(j, s, "state"), *why = jsonr_get_str(j, s, "eject_reason");
	long long active = jsonr_get_int(j, s, "active", 0);
	char left[24];

	buf[0] = '\0';
	if (st && !strcmp(st, "ejected")) {
		format_duration((uint64_t)jsonr_get_int(j, s, "ejected_left_ms", 0) / 1000, left,
				sizeof(left));
		snprintf(buf, len, "ejected (%s), %s left", why ? why : "?", left);
	} else if (st && !strcmp(st, "draining")) {
		if (active)
			snprintf(buf, len, "draining, %lld in flight", active);
		else
			snprintf(buf, len, "drained (nothing in flight)");
	} else if (jsonr_get(j, s, "slow_start") && jsonr_get(j, s, "slow_start")->b) {
		snprintf(buf, len, "slow start");
	}
}

static void backend_check(const struct jsonr *j, const struct jsonr_node *s, char *buf, size_t len)
{
	const struct jsonr_node *ok = jsonr_get(j, s, "check_ok");
	const char *last = jsonr_get_str(j, s, "check_last");
	char age[24];

	if (!ok || ok->type != JSONR_BOOL) {
		snprintf(buf, len, "-");
		return;
	}
	format_duration((uint64_t)jsonr_get_int(j, s, "check_age_ms", 0) / 1000, age, sizeof(age));
	snprintf(buf, len, "%s %s, %s ago (%lld%s in a row)", ok->b ? "pass" : "FAIL",
		 last ? last : "", age,
		 (long long)jsonr_get_int(j, s, ok->b ? "check_successes" : "check_failures", 0),
		 ok->b ? " ok" : " failed");
}

/* Pool line for limits and breaker trips, only when there is something to say. */
static void backend_pool_limits(const struct jsonr *j, const struct jsonr_node *p)
{
	static const char *const kinds[] = { "max_connections", "max_pending", "max_requests" };
	bool any = false;
	char key[48];

	for (size_t k = 0; k < 3; k++) {
		long long lim, trips;

		snprintf(key, sizeof(key), "limit_%s", kinds[k]);
		lim = jsonr_get_int(j, p, key, 0);
		snprintf(key, sizeof(key), "trips_%s", kinds[k]);
		trips = jsonr_get_int(j, p, key, 0);
		if (!lim && !trips)
			continue;
		printf("%s%s %lld (refused %lld)", any ? ", " : "  limits: ", kinds[k], lim, trips);
		any = true;
	}
	if (any)
		putchar('\n');
}

/* Pool lines for servers removed at run time and runtime changes the config file overrode. */
static void backend_pool_runtime(const struct jsonr *j, const struct jsonr_node *p)
{
	const char *dropped = jsonr_get_str(j, p, "runtime_dropped");
	bool any = false;

	for (const struct jsonr_node *a = jsonr_child(j, jsonr_get(j, p, "runtime_removed")); a;
	     a = jsonr_next(j, a)) {
		printf("%s%s", any ? ", " : "  removed at run time: ", a->str ? a->str : "?");
		any = true;
	}
	if (any)
		putchar('\n');
	if (dropped)
		printf("  runtime changes dropped: %s\n", dropped);
}

static int backends_list(struct ctl *ctl, int argc, char **argv)
{
	char buf[512];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (argc > 2)
		return usage_error("backends list: unexpected argument '%s'", argv[2]);
	if (argc == 2 && argv[1][0] == '-')
		return usage_error("backends list: unknown option '%s'", argv[1]);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "backends.list");
	if (argc == 2)
		jsonw_str(&w, "pool", argv[1]);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	if (ctl->json) {
		printf("%s\n", raw);
		return 0;
	}
	for (const struct jsonr_node *p = jsonr_child(&j, jsonr_get(&j, &j.nodes[0], "pools")); p;
	     p = jsonr_next(&j, p)) {
		const char *hc = jsonr_get_str(&j, p, "health");

		printf("upstream %s (%s, health %s", jsonr_get_str(&j, p, "name"),
		       jsonr_get_str(&j, p, "algorithm"), hc ? hc : "?");
		if (hc && strcmp(hc, "off"))
			printf(" every %lldms", (long long)jsonr_get_int(&j, p, "health_interval_ms", 0));
		printf(", %lld ejected)\n", (long long)jsonr_get_int(&j, p, "ejected", 0));
		backend_pool_limits(&j, p);
		backend_pool_runtime(&j, p);
		printf("  %-22s %-8s %-7s %6s %7s %6s %5s  %-40s %s\n", "SERVER", "STATE", "ROLE",
		       "WEIGHT", "EFFECT", "ACTIVE", "CONNS", "LAST CHECK", "NOTE");
		for (const struct jsonr_node *s = jsonr_child(&j, jsonr_get(&j, p, "servers")); s;
		     s = jsonr_next(&j, s)) {
			const struct jsonr_node *bk = jsonr_get(&j, s, "backup");
			const struct jsonr_node *eff = jsonr_get(&j, s, "effective_weight");
			char chk[160], note[96];

			backend_check(&j, s, chk, sizeof(chk));
			backend_note(&j, s, note, sizeof(note));
			const char *origin = jsonr_get_str(&j, s, "origin");

			printf("  %-22s %-8s %-7s %6lld %7.2f %6lld %5lld  %-40s %s%s\n",
			       jsonr_get_str(&j, s, "address"), jsonr_get_str(&j, s, "state"),
			       bk && bk->b ? "backup" : "primary",
			       (long long)jsonr_get_int(&j, s, "weight", 0),
			       eff && eff->type == JSONR_NUMBER ? eff->num : 0.0,
			       (long long)jsonr_get_int(&j, s, "active", 0),
			       (long long)jsonr_get_int(&j, s, "connections", 0), chk, note,
			       origin && !strcmp(origin, "runtime") ? (note[0] ? ", added at run time"
										  : "added at run time")
								    : "");
		}
	}
	return 0;
}

/* In-flight requests on POOL ADDR per backends.list, or -1 when it cannot tell. */
static long long backends_in_flight(struct ctl *ctl, const char *pool, const char *addr)
{
	char buf[512];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	long long n = -1;

	free(ctl->raw);
	free(ctl->strbuf);
	ctl->raw = ctl->strbuf = NULL;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", "backends.list");
	jsonw_str(&w, "pool", pool);
	if (ctl_send_obj(ctl, &w, &j, &raw))
		return -1;
	for (const struct jsonr_node *p = jsonr_child(&j, jsonr_get(&j, &j.nodes[0], "pools")); p;
	     p = jsonr_next(&j, p))
		for (const struct jsonr_node *s = jsonr_child(&j, jsonr_get(&j, p, "servers")); s;
		     s = jsonr_next(&j, s)) {
			const char *a = jsonr_get_str(&j, s, "address");

			if (a && !strcmp(a, addr))
				n = (n < 0 ? 0 : n) + jsonr_get_int(&j, s, "active", 0);
		}
	return n;
}

static int backends_change(struct ctl *ctl, const char *sub, int argc, char **argv)
{
	const char *wait = NULL, *pos[3] = { NULL, NULL, NULL };
	unsigned npos = 0, want = !strcmp(sub, "weight") ? 3 : 2;
	char what[32], cmd[32], buf[1024];
	struct net_addr na;
	const char *why = "invalid";
	uint64_t wait_ms = 0, weight = 0;
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	snprintf(what, sizeof(what), "backends %s", sub);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(sub, "drain") &&
		    (rc = take_opt(what, "--wait", argc, argv, &i, &wait)) != 0) {
			if (rc < 0)
				return -rc;
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1] != '\0')
			return usage_error("%s: unknown option '%s'", what, argv[i]);
		if (npos == want)
			return usage_error("%s: unexpected argument '%s'", what, argv[i]);
		pos[npos++] = argv[i];
	}
	if (npos < want)
		return usage_error("%s: usage: backends %s POOL ADDR%s", what, sub,
				   want == 3 ? " WEIGHT" : !strcmp(sub, "drain") ? " [--wait 30s]" : "");
	if (net_addr_parse(pos[1], 0, &na, &why))
		return usage_error("%s: bad address '%s': %s (want IP:PORT)", what, pos[1], why);
	if (want == 3) {
		char *end = NULL;

		errno = 0;
		weight = strtoull(pos[2], &end, 10);
		if (errno || !end || *end || pos[2][0] < '0' || pos[2][0] > '9' || weight < 1 ||
		    weight > 1000)
			return usage_error("%s: weight must be an integer from 1 to 1000, got '%s'", what,
					   pos[2]);
	}
	if (wait) {
		int e = parse_duration_ms(wait, &wait_ms);

		if (e || !wait_ms)
			return usage_error("%s: bad --wait '%s' (want a duration such as 30s or 5m)",
					   what, wait);
	}
	snprintf(cmd, sizeof(cmd), "backends.%s", sub);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", cmd);
	jsonw_str(&w, "pool", pos[0]);
	jsonw_str(&w, "address", pos[1]);
	if (want == 3)
		jsonw_u64(&w, "weight", weight);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	const struct jsonr_node *r = &j.nodes[0];
	const char *addr = jsonr_get_str(&j, r, "address");
	const char *save_err = jsonr_get_str(&j, r, "save_error");
	long long active = jsonr_get_int(&j, r, "active", 0);
	char pool[128], a[NET_ADDR_STRLEN];

	snprintf(pool, sizeof(pool), "%s", jsonr_get_str(&j, r, "pool"));
	snprintf(a, sizeof(a), "%s", addr ? addr : pos[1]);
	if (ctl->json && !wait)
		printf("%s\n", raw);
	else if (!ctl->json && !strcmp(sub, "drain"))
		printf("upstream %s %s: draining, no new requests; %lld in flight%s\n", pool, a, active,
		       active ? "" : " (already empty)");
	else if (!ctl->json && !strcmp(sub, "enable"))
		printf("upstream %s %s: enabled, state %s\n", pool, a, jsonr_get_str(&j, r, "state"));
	else if (!ctl->json)
		printf("upstream %s %s: weight %lld\n", pool, a,
		       (long long)jsonr_get_int(&j, r, "weight", 0));
	if (save_err)
		fprintf(stderr, "clawctl: warning: applied but not saved for restarts: %s\n", save_err);
	if (!wait)
		return 0;
	/* Polls the list until nothing is in flight on it: the drain is then complete. */
	for (uint64_t waited = 0;; waited += 100) {
		long long n = backends_in_flight(ctl, pool, a);
		struct timespec ts = { 0, 100 * 1000000L };

		if (n == 0) {
			if (ctl->json)
				printf("{\"ok\":true,\"pool\":\"%s\",\"address\":\"%s\",\"drained\":true}\n",
				       pool, a);
			else
				printf("upstream %s %s: drained, nothing in flight\n", pool, a);
			return 0;
		}
		if (n < 0)
			return EXIT_REFUSED;
		if (waited >= wait_ms) {
			fprintf(stderr, "clawctl: upstream %s %s: still %lld in flight after %s\n", pool, a,
				n, wait);
			return EXIT_REFUSED;
		}
		nanosleep(&ts, NULL);
	}
}

/* backends add POOL ADDR [--weight W] [--backup] | backends remove POOL ADDR (docs/health.md). */
static int backends_add_remove(struct ctl *ctl, const char *sub, int argc, char **argv)
{
	bool add = !strcmp(sub, "add"), backup = false;
	const char *pos[2] = { NULL, NULL }, *wt = NULL;
	const char *why = "invalid";
	unsigned npos = 0;
	char what[32], buf[1024];
	uint64_t weight = 1;
	struct net_addr na;
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	snprintf(what, sizeof(what), "backends %s", sub);
	for (int i = 1; i < argc; i++) {
		if (add && (rc = take_opt(what, "--weight", argc, argv, &i, &wt)) != 0) {
			if (rc < 0)
				return -rc;
			continue;
		}
		if (add && !strcmp(argv[i], "--backup")) {
			backup = true;
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1] != '\0')
			return usage_error("%s: unknown option '%s'", what, argv[i]);
		if (npos == 2)
			return usage_error("%s: unexpected argument '%s'", what, argv[i]);
		pos[npos++] = argv[i];
	}
	if (npos < 2)
		return usage_error("%s: usage: backends %s POOL ADDR%s", what, sub,
				   add ? " [--weight W] [--backup]" : "");
	if (net_addr_parse(pos[1], 0, &na, &why))
		return usage_error("%s: bad address '%s': %s (want IP:PORT)", what, pos[1], why);
	if (wt) {
		char *end = NULL;

		errno = 0;
		weight = strtoull(wt, &end, 10);
		if (errno || !end || *end || wt[0] < '0' || wt[0] > '9' || weight < 1 || weight > 1000)
			return usage_error("%s: --weight must be an integer from 1 to 1000, got '%s'", what,
					   wt);
	}
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", add ? "backends.add" : "backends.remove");
	jsonw_str(&w, "pool", pos[0]);
	jsonw_str(&w, "address", pos[1]);
	if (add) {
		jsonw_u64(&w, "weight", weight);
		jsonw_bool(&w, "backup", backup);
	}
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	const struct jsonr_node *r = &j.nodes[0];
	const char *save_err = jsonr_get_str(&j, r, "save_error");

	if (ctl->json)
		printf("%s\n", raw);
	else if (add)
		printf("upstream %s %s: added (weight %lld%s); %lld servers, every worker uses it now\n",
		       jsonr_get_str(&j, r, "pool"), jsonr_get_str(&j, r, "address"),
		       (long long)jsonr_get_int(&j, r, "weight", 0), backup ? ", backup" : "",
		       (long long)jsonr_get_int(&j, r, "servers", 0));
	else
		printf("upstream %s %s: removed, no new requests; %lld in flight finish on it; "
		       "%lld servers left\n", jsonr_get_str(&j, r, "pool"),
		       jsonr_get_str(&j, r, "address"), (long long)jsonr_get_int(&j, r, "active", 0),
		       (long long)jsonr_get_int(&j, r, "servers", 0));
	if (save_err)
		fprintf(stderr, "clawctl: warning: applied but not saved for restarts: %s\n", save_err);
	return 0;
}

static int cmd_backends(struct ctl *ctl, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;

	if (!sub)
		return usage_error("backends: missing subcommand (list, drain, enable, weight, add or remove)");
	if (!strcmp(sub, "list"))
		return backends_list(ctl, argc - 1, argv + 1);
	if (!strcmp(sub, "drain") || !strcmp(sub, "enable") || !strcmp(sub, "weight"))
		return backends_change(ctl, sub, argc - 1, argv + 1);
	if (!strcmp(sub, "add") || !strcmp(sub, "remove"))
		return backends_add_remove(ctl, sub, argc - 1, argv + 1);
	return usage_error("backends: unknown subcommand '%s' (want list, drain, enable, weight, add "
			   "or remove)", sub);
}

/* obs.c's view of ctl_call. */
static int obs_call(void *ctx, const char *request, char **reply, size_t *reply_len)
{
	return ctl_call(ctx, request, reply, reply_len);
}

static int cmd_stats(struct ctl *ctl, int argc, char **argv)
{
	return obs_stats(obs_call, ctl, ctl->json, argc, argv);
}

static int cmd_top(struct ctl *ctl, int argc, char **argv)
{
	if (ctl->json)
		return usage_error("top: --json makes no sense for a live view; use 'clawctl stats --json'");
	return obs_top(obs_call, ctl, argc, argv);
}

/* ---- splice (docs/splice.md) ---- */

static void splice_list_print(const struct jsonr *j)
{
	const struct jsonr_node *c = jsonr_child(j, jsonr_get(j, &j->nodes[0], "connections"));
	char age[32];

	if (!c) {
		printf("no spliced connections\n");
		return;
	}
	printf("%-22s %-22s %-10s %-24s %-9s %14s %14s %8s %s\n", "CLIENT", "BACKEND", "ROUTE",
	       "SNI", "PATH", "TO_BACKEND", "TO_CLIENT", "PAUSES", "AGE");
	for (; c; c = jsonr_next(j, c)) {
		const char *cl = jsonr_get_str(j, c, "client"), *be = jsonr_get_str(j, c, "backend");
		const char *rt = jsonr_get_str(j, c, "route"), *pa = jsonr_get_str(j, c, "path");
		const char *sni = jsonr_get_str(j, c, "sni");

		format_duration((uint64_t)jsonr_get_int(j, c, "age_ms", 0) / 1000, age, sizeof(age));
		printf("%-22s %-22s %-10s %-24s %-9s %14lld %14lld %8lld %s\n", cl ? cl : "?",
		       be ? be : "?", rt ? rt : "?", sni && *sni ? sni : "-", pa ? pa : "?",
		       (long long)jsonr_get_int(j, c, "bytes_to_backend", 0),
		       (long long)jsonr_get_int(j, c, "bytes_to_client", 0),
		       (long long)jsonr_get_int(j, c, "pauses", 0), age);
	}
}

static int cmd_splice(struct ctl *ctl, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;
	char buf[128], cmd[24];
	struct jsonw w;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (!sub)
		return usage_error("splice: missing subcommand (list or stats)");
	if (strcmp(sub, "list") && strcmp(sub, "stats"))
		return usage_error("splice: unknown subcommand '%s' (want list or stats)", sub);
	if (argc > 2)
		return usage_error("splice %s: unexpected argument '%s'", sub, argv[2]);
	snprintf(cmd, sizeof(cmd), "splice.%s", sub);
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_str(&w, "cmd", cmd);
	if ((rc = ctl_send_obj(ctl, &w, &j, &raw)))
		return rc;
	if (ctl->json)
		printf("%s\n", raw);
	else if (!strcmp(sub, "list"))
		splice_list_print(&j);
	else
		for (const struct jsonr_node *m = jsonr_child(&j, &j.nodes[0]); m; m = jsonr_next(&j, m)) {
			if (!strcmp(jsonr_key(&j, m), "ok"))
				continue;
			printf("%-16s ", jsonr_key(&j, m));
			if (m->type == JSONR_OBJECT)
				for (const struct jsonr_node *k = jsonr_child(&j, m); k; k = jsonr_next(&j, k)) {
					printf("%s%s=", k == jsonr_child(&j, m) ? "" : ", ", jsonr_key(&j, k));
					print_scalar(stdout, k);
				}
			else
				print_scalar(stdout, m);
			putchar('\n');
		}
	return 0;
}

/* ---- tls status | tls reload (docs/tls.md) ---- */

static int tls_status_print(const struct jsonr *j)
{
	const struct jsonr_node *r = &j->nodes[0];
	const struct jsonr_node *ok = jsonr_get(j, r, "ktls_kernel");
	long long warn = jsonr_get_int(j, r, "warn_days", 14);

	printf("%-12s %s (%s)\n", "kernel kTLS", ok && ok->type == JSONR_BOOL && ok->b ? "yes" : "no",
	       jsonr_get_str(j, r, "ktls_probe"));
	for (const struct jsonr_node *l = jsonr_child(j, jsonr_get(j, r, "listeners")); l;
	     l = jsonr_next(j, l)) {
		printf("\nlistener %s: %s record layer, loaded %s\n", jsonr_get_str(j, l, "name"),
		       jsonr_get_str(j, l, "path"), jsonr_get_str(j, l, "loaded"));
		printf("  handshakes %lld ok, %lld failed, %lld resumed; connections %lld kTLS "
		       "(%lld TX only), %lld userspace; kTLS failures %lld keyupdate, %lld install\n",
		       (long long)jsonr_get_int(j, l, "handshakes", 0),
		       (long long)jsonr_get_int(j, l, "handshake_failures", 0),
		       (long long)jsonr_get_int(j, l, "resumed", 0),
		       (long long)jsonr_get_int(j, l, "ktls_connections", 0),
		       (long long)jsonr_get_int(j, l, "ktls_tx_only", 0),
		       (long long)jsonr_get_int(j, l, "userspace_connections", 0),
		       (long long)jsonr_get_int(j, l, "ktls_keyupdate_failures", 0),
		       (long long)jsonr_get_int(j, l, "ktls_install_failures", 0));
		printf("  %-8s %-10s %-22s %6s  %s\n", "", "KEY", "EXPIRES", "DAYS", "NAMES / FILE");
		for (const struct jsonr_node *c = jsonr_child(j, jsonr_get(j, l, "certificates")); c;
		     c = jsonr_next(j, c)) {
			const struct jsonr_node *d = jsonr_get(j, c, "default");
			long long days = jsonr_get_int(j, c, "days_left", 0);

			printf("  %-8s %-10s %-22s %6lld  ",
			       d && d->type == JSONR_BOOL && d->b ? "default" : "", jsonr_get_str(j, c, "key"),
			       jsonr_get_str(j, c, "not_after"), days);
			for (const struct jsonr_node *n = jsonr_child(j, jsonr_get(j, c, "names")); n;
			     n = jsonr_next(j, n))
				printf("%s ", n->type == JSONR_STRING ? n->str : "?");
			printf("(%s)%s\n", jsonr_get_str(j, c, "file"),
			       days < 0 ? "  EXPIRED" : days < warn ? "  WARNING: expires soon" : "");
		}
	}
	for (const struct jsonr_node *u = jsonr_child(j, jsonr_get(j, r, "upstreams")); u;
	     u = jsonr_next(j, u)) {
		printf("\nupstream %s: handshakes %lld ok, %lld resumed, %lld failed verification, "
		       "%lld failed; connections %lld kTLS, %lld userspace; kTLS failures %lld "
		       "keyupdate, %lld install\n",
		       jsonr_get_str(j, u, "name"), (long long)jsonr_get_int(j, u, "handshakes", 0),
		       (long long)jsonr_get_int(j, u, "resumed", 0),
		       (long long)jsonr_get_int(j, u, "verify_failures", 0),
		       (long long)jsonr_get_int(j, u, "handshake_failures", 0),
		       (long long)jsonr_get_int(j, u, "ktls_connections", 0),
		       (long long)jsonr_get_int(j, u, "userspace_connections", 0),
		       (long long)jsonr_get_int(j, u, "ktls_keyupdate_failures", 0),
		       (long long)jsonr_get_int(j, u, "ktls_install_failures", 0));
	}
	return 0;
}

static int cmd_tls(struct ctl *ctl, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;
	struct jsonr j;
	char *raw = NULL;
	int rc;

	if (!sub)
		return usage_error("tls: missing subcommand (status or reload)");
	if (strcmp(sub, "status") && strcmp(sub, "reload"))
		return usage_error("tls: unknown subcommand '%s' (want status or reload)", sub);
	if (argc > 2)
		return usage_error("tls %s: unexpected argument '%s'", sub, argv[2]);
	rc = ctl_request(ctl, !strcmp(sub, "status") ? "{\"cmd\":\"tls.status\"}\n"
						      : "{\"cmd\":\"tls.reload\"}\n",
			 &j, &raw);
	if (rc)
		return rc;
	if (ctl->json) {
		printf("%s\n", raw);
		return 0;
	}
	if (!strcmp(sub, "status"))
		return tls_status_print(&j);
	printf("certificates reloaded (reload %lld); open connections keep theirs\n",
	       (long long)jsonr_get_int(&j, &j.nodes[0], "reloads", 0));
	return 0;
}

static const struct ctl_cmd commands[] = {
	{ "status", "status                 what runs, since when, how busy", cmd_status },
	{ "ping", "ping                   is clawd answering?", cmd_ping },
	{ "reload", "reload                 load the config file again; refused with FILE:LINE if invalid",
	  cmd_reload },
	{ "upgrade", "upgrade [--binary PATH] [--timeout 10s]\n"
		     "                         start the new clawd binary, hand it the listening sockets;\n"
		     "                         this one drains and exits (refused: it keeps serving)",
	  cmd_upgrade },
	{ "stats", "stats [--json]         requests, errors, latency per route and backend, XDP drops",
	  cmd_stats },
	{ "top", "top [--interval 1s]    live view: req/s, errors, p50/p99, top routes, backends (q quits)",
	  cmd_top },
	{ "block", "block add CIDR [--ttl 10m] [--reason TEXT] | block del CIDR | block list\n"
		   "                         drop a source at the NIC (XDP), for a while or for good",
	  cmd_block },
	{ "allow", "allow add CIDR [--ttl 10m] [--reason TEXT] | allow del CIDR | allow list\n"
		   "                         never drop a source (beats the blocklist and rate limits)",
	  cmd_allow },
	{ "guard", "guard stats | guard status | guard detach\n"
		   "                         counters and rates per verdict; where the guard is attached;\n"
		   "                         remove it",
	  cmd_guard },
	{ "keys", "keys create --name N --tier T [--scopes r1,r2] [--expires 90d] | keys list |\n"
		  "                         keys show ID | keys revoke ID | keys rotate ID [--grace 24h] |\n"
		  "                         keys set ID [--tier T] [--rate 100/s] [--burst N] [--scopes r1,r2]\n"
		  "                         API keys: the secret is printed once, at create and rotate",
	  cmd_keys },
	{ "limits", "limits show [--key ID | --ip ADDR]\n"
		    "                         rate limits and quotas: configured, or a key's or address's usage",
	  cmd_limits },
	{ "backends", "backends list [POOL] | backends drain POOL ADDR [--wait 30s]\n"
		      "                         | backends enable POOL ADDR | backends weight POOL ADDR W\n"
		      "                         | backends add POOL ADDR [--weight W] [--backup]\n"
		      "                         | backends remove POOL ADDR\n"
		      "                         server state and health; take a server out gracefully,\n"
		      "                         put it back, change its weight, add or remove a server\n"
		      "                         without a reload (all kept across restarts)",
	  cmd_backends },
	{ "splice", "splice list | splice stats\n"
		    "                         connections relayed in the kernel (client, backend, bytes, age);\n"
		    "                         program state, fallbacks, kernel counters",
	  cmd_splice },
	{ "tls", "tls status | tls reload\n"
		 "                         certificates (names, expiry), kTLS use; reload certificates and keys",
	  cmd_tls },
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
