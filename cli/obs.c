/* cli/obs.c — clawctl stats (a table or the JSON) and clawctl top (a live terminal view, q quits). */
#include "obs.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "jsonr.h"
#include "metrics.h"
#include "parse.h"

#define MAX_ROWS 64     /* routes or servers shown at most */
#define MAX_BUCKETS 32
#define MAX_NODES 65536

/* One parsed "stats" reply, reduced to what the views show. */
struct row {
	char name[160];
	uint64_t n;           /* requests or responses */
	uint64_t e5;          /* 5xx among them */
	uint64_t b[MAX_BUCKETS + 1];
};

struct sample {
	uint64_t t_ms;        /* monotonic, when it was taken */
	uint64_t uptime_s;
	uint64_t classes[6];  /* 1xx..5xx, none */
	uint64_t requests;
	uint64_t bytes_in, bytes_out, conns;
	uint64_t xdp_drop;    /* packets dropped by XDP, all reasons */
	bool have_xdp;
	uint64_t bounds[MAX_BUCKETS], ubounds[MAX_BUCKETS];
	unsigned nb, nub;
	struct row routes[MAX_ROWS], servers[MAX_ROWS];
	unsigned nroutes, nservers;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t u(const struct jsonr *j, const struct jsonr_node *o, const char *k)
{
	int64_t v = jsonr_get_int(j, o, k, 0);

	return v > 0 ? (uint64_t)v : 0;
}

static unsigned read_arr(const struct jsonr *j, const struct jsonr_node *arr, uint64_t *out,
			 unsigned max)
{
	unsigned n = 0;

	for (const struct jsonr_node *x = jsonr_child(j, arr); x && n < max; x = jsonr_next(j, x))
		out[n++] = x->type == JSONR_NUMBER && x->is_int && x->i > 0 ? (uint64_t)x->i : 0;
	return n;
}

static unsigned read_rows(const struct jsonr *j, const struct jsonr_node *arr, struct row *rows,
			  bool servers)
{
	unsigned n = 0;

	for (const struct jsonr_node *x = jsonr_child(j, arr); x && n < MAX_ROWS; x = jsonr_next(j, x)) {
		struct row *r = &rows[n++];
		const char *a = jsonr_get_str(j, x, servers ? "upstream" : "name");

		memset(r, 0, sizeof(*r));
		if (servers)
			snprintf(r->name, sizeof(r->name), "%s/%s", a ? a : "?",
				 jsonr_get_str(j, x, "server") ? jsonr_get_str(j, x, "server") : "?");
		else
			snprintf(r->name, sizeof(r->name), "%s", a && *a ? a : "(no route)");
		r->n = u(j, x, servers ? "responses" : "requests");
		r->e5 = u(j, x, "errors_5xx");
		read_arr(j, jsonr_get(j, x, "buckets"), r->b, MAX_BUCKETS + 1);
	}
	return n;
}

/* Asks for "stats" and parses it into s; raw (malloc'd) is kept for --json. */
static int take_sample(obs_call_fn call, void *ctx, struct sample *s, char **raw)
{
	static struct jsonr_node nodes[MAX_NODES];
	struct jsonr j;
	size_t len = 0;
	char *reply = NULL, *strbuf;
	int rc = call(ctx, "{\"cmd\":\"stats\"}\n", &reply, &len);

	if (rc)
		return 1;
	strbuf = malloc(len + 1);
	if (!strbuf || jsonr_parse(&j, reply, len, nodes, MAX_NODES, strbuf, len + 1)) {
		fprintf(stderr, "clawctl: unreadable reply from clawd\n");
		free(strbuf);
		free(reply);
		return 1;
	}
	const struct jsonr_node *r = &j.nodes[0], *ok = jsonr_get(&j, r, "ok");

	if (!ok || ok->type != JSONR_BOOL || !ok->b) {
		const char *why = jsonr_get_str(&j, r, "error");

		fprintf(stderr, "clawctl: %s\n", why ? why : "clawd refused the request");
		free(strbuf);
		free(reply);
		return 1;
	}
	memset(s, 0, sizeof(*s));
	s->t_ms = mono_ms();
	s->uptime_s = u(&j, r, "uptime_s");
	static const char *const cls[6] = { "1xx", "2xx", "3xx", "4xx", "5xx", "none" };
	const struct jsonr_node *c = jsonr_get(&j, r, "classes");

	for (int i = 0; i < 6; i++) {
		s->classes[i] = u(&j, c, cls[i]);
		s->requests += s->classes[i];
	}
	s->bytes_in = u(&j, r, "bytes_in");
	s->bytes_out = u(&j, r, "bytes_out");
	s->conns = u(&j, r, "connections");
	s->nb = read_arr(&j, jsonr_get(&j, r, "bounds_us"), s->bounds, MAX_BUCKETS);
	s->nub = read_arr(&j, jsonr_get(&j, r, "upstream_bounds_us"), s->ubounds, MAX_BUCKETS);
	s->nroutes = read_rows(&j, jsonr_get(&j, r, "routes"), s->routes, false);
	s->nservers = read_rows(&j, jsonr_get(&j, r, "servers"), s->servers, true);
	const struct jsonr_node *x = jsonr_get(&j, r, "xdp");

	if (x && x->type == JSONR_OBJECT) {
		s->have_xdp = true;
		s->xdp_drop = u(&j, x, "blocklisted") + u(&j, x, "syn_rate") + u(&j, x, "pkt_rate") +
			      u(&j, x, "unparsed_drop");
	}
	free(strbuf);
	if (raw)
		*raw = reply;
	else
		free(reply);
	return 0;
}

/* "1.2ms", "850us", "2.5s", or "-" */
static const char *fmt_us(double us, char *buf, size_t len)
{
	if (us < 0)
		snprintf(buf, len, "-");
	else if (us < 1000)
		snprintf(buf, len, "%.0fus", us);
	else if (us < 1000000)
		snprintf(buf, len, "%.1fms", us / 1000);
	else
		snprintf(buf, len, "%.2fs", us / 1e6);
	return buf;
}

static const char *fmt_bytes(double v, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int i = 0;

	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", v, unit[i]);
	return buf;
}

/* The row of prev with the same name (rows keep their order, but a restart may change it). */
static const struct row *row_prev(const struct row *rows, unsigned n, const char *name)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(rows[i].name, name))
			return &rows[i];
	return NULL;
}

static double quant_delta(const struct row *now, const struct row *prev, const uint64_t *bounds,
			  unsigned nb, double q)
{
	uint64_t d[MAX_BUCKETS + 1];

	for (unsigned b = 0; b <= nb; b++)
		d[b] = now->b[b] - (prev && prev->b[b] <= now->b[b] ? prev->b[b] : 0);
	return metrics_quantile(bounds, nb, d, q);
}

static void print_rows(const char *title, const struct row *now, unsigned n, const struct row *prev,
		       unsigned nprev, const uint64_t *bounds, unsigned nb, double secs, bool rates)
{
	char p50[16], p99[16];
	unsigned order[MAX_ROWS];

	printf("%-40s %10s %8s %9s %9s\n", title, rates ? "REQ/S" : "REQUESTS", rates ? "5XX/S" : "5XX",
	       "P50", "P99");
	/* Busiest first. */
	for (unsigned i = 0; i < n; i++)
		order[i] = i;
	for (unsigned i = 1; i < n; i++)
		for (unsigned k = i; k > 0; k--) {
			const struct row *a = &now[order[k]], *b = &now[order[k - 1]];
			const struct row *pa = rates ? row_prev(prev, nprev, a->name) : NULL;
			const struct row *pb = rates ? row_prev(prev, nprev, b->name) : NULL;
			uint64_t va = a->n - (pa ? pa->n : 0), vb = b->n - (pb ? pb->n : 0);

			if (va <= vb)
				break;
			unsigned t = order[k];

			order[k] = order[k - 1];
			order[k - 1] = t;
		}
	for (unsigned i = 0; i < n; i++) {
		const struct row *r = &now[order[i]];
		const struct row *p = rates ? row_prev(prev, nprev, r->name) : NULL;

		if (!rates && !r->n)
			continue;
		if (rates) {
			uint64_t dn = r->n - (p && p->n <= r->n ? p->n : 0);
			uint64_t de = r->e5 - (p && p->e5 <= r->e5 ? p->e5 : 0);

			printf("%-40.40s %10.1f %8.1f %9s %9s\n", r->name, (double)dn / secs,
			       (double)de / secs, fmt_us(quant_delta(r, p, bounds, nb, 0.5), p50, 16),
			       fmt_us(quant_delta(r, p, bounds, nb, 0.99), p99, 16));
		} else {
			printf("%-40.40s %10llu %8llu %9s %9s\n", r->name, (unsigned long long)r->n,
			       (unsigned long long)r->e5,
			       fmt_us(metrics_quantile(bounds, nb, r->b, 0.5), p50, 16),
			       fmt_us(metrics_quantile(bounds, nb, r->b, 0.99), p99, 16));
		}
	}
}

int obs_stats(obs_call_fn call, void *ctx, bool json, int argc, char **argv)
{
	struct sample *s;
	char *raw = NULL, b1[32], b2[32];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
			continue;
		}
		fprintf(stderr, "clawctl: stats: unexpected argument '%s'\n", argv[i]);
		return 2;
	}
	s = malloc(sizeof(*s));
	if (!s) {
		fprintf(stderr, "clawctl: out of memory\n");
		return 1;
	}
	if (take_sample(call, ctx, s, &raw)) {
		free(s);
		return 1;
	}
	if (json) {
		printf("%s\n", raw);
	} else {
		printf("%-12s %llu (2xx %llu, 3xx %llu, 4xx %llu, 5xx %llu, no status %llu)\n", "requests",
		       (unsigned long long)s->requests, (unsigned long long)s->classes[1],
		       (unsigned long long)s->classes[2], (unsigned long long)s->classes[3],
		       (unsigned long long)s->classes[4], (unsigned long long)s->classes[5]);
		printf("%-12s %llu open\n", "connections", (unsigned long long)s->conns);
		printf("%-12s %s in, %s out\n", "bytes", fmt_bytes((double)s->bytes_in, b1, 32),
		       fmt_bytes((double)s->bytes_out, b2, 32));
		if (s->have_xdp)
			printf("%-12s %llu packets dropped\n", "xdp", (unsigned long long)s->xdp_drop);
		printf("\n");
		print_rows("ROUTE", s->routes, s->nroutes, NULL, 0, s->bounds, s->nb, 1, false);
		printf("\n");
		print_rows("BACKEND", s->servers, s->nservers, NULL, 0, s->ubounds, s->nub, 1, false);
	}
	free(raw);
	free(s);
	return 0;
}

/* ---- top ------------------------------------------------------------------------ */

static struct termios saved_tio;
static bool tio_saved;

static void term_restore(void)
{
	if (tio_saved)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
	tio_saved = false;
	/* Leave the alternate screen and show the cursor again. */
	fputs("\033[?25h\033[?1049l", stdout);
	fflush(stdout);
}

static void render(const struct sample *now, const struct sample *prev, uint64_t interval_ms)
{
	double secs = prev && now->t_ms > prev->t_ms ? (double)(now->t_ms - prev->t_ms) / 1000 : 0;
	char b1[32], b2[32], p50[16], p99[16];
	uint64_t dreq = 0, derr = 0;
	struct row all = { .name = "all" }, allp = { .name = "all" };

	fputs("\033[H\033[2J", stdout);
	printf("clawctl top — up %llus, refresh %llums, q quits\n\n", (unsigned long long)now->uptime_s,
	       (unsigned long long)interval_ms);
	for (unsigned i = 0; i < now->nroutes; i++)
		for (unsigned b = 0; b <= now->nb; b++)
			all.b[b] += now->routes[i].b[b];
	for (unsigned i = 0; prev && i < prev->nroutes; i++)
		for (unsigned b = 0; b <= prev->nb; b++)
			allp.b[b] += prev->routes[i].b[b];
	if (!secs) {
		printf("collecting a first interval...\n");
		fflush(stdout);
		return;
	}
	dreq = now->requests - (prev->requests <= now->requests ? prev->requests : 0);
	derr = now->classes[4] - (prev->classes[4] <= now->classes[4] ? prev->classes[4] : 0);
	printf("req/s %9.1f   errors(5xx) %5.1f%%   p50 %8s   p99 %8s   conns %llu\n",
	       (double)dreq / secs, dreq ? 100.0 * (double)derr / (double)dreq : 0.0,
	       fmt_us(quant_delta(&all, &allp, now->bounds, now->nb, 0.5), p50, 16),
	       fmt_us(quant_delta(&all, &allp, now->bounds, now->nb, 0.99), p99, 16),
	       (unsigned long long)now->conns);
	printf("in %s/s   out %s/s",
	       fmt_bytes((double)(now->bytes_in - prev->bytes_in) / secs, b1, 32),
	       fmt_bytes((double)(now->bytes_out - prev->bytes_out) / secs, b2, 32));
	if (now->have_xdp)
		printf("   XDP drops/s %.1f", (double)(now->xdp_drop - prev->xdp_drop) / secs);
	else
		printf("   XDP guard off");
	printf("\n\n");
	print_rows("ROUTE", now->routes, now->nroutes, prev->routes, prev->nroutes, now->bounds, now->nb,
		   secs, true);
	printf("\n");
	print_rows("BACKEND", now->servers, now->nservers, prev->servers, prev->nservers,
		   now->ubounds, now->nub, secs, true);
	fflush(stdout);
}

int obs_top(obs_call_fn call, void *ctx, int argc, char **argv)
{
	uint64_t interval_ms = 1000;
	struct sample *s[2];
	int cur = 0, rc = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--interval") && i + 1 < argc) {
			if (parse_duration_ms(argv[++i], &interval_ms) || interval_ms < 100 ||
			    interval_ms > 3600000) {
				fprintf(stderr, "clawctl: top: --interval: expected a duration from 100ms to 1h, got '%s'\n",
					argv[i]);
				return 2;
			}
			continue;
		}
		fprintf(stderr, "clawctl: top: unexpected argument '%s'\n", argv[i]);
		return 2;
	}
	s[0] = calloc(1, sizeof(**s));
	s[1] = calloc(1, sizeof(**s));
	if (!s[0] || !s[1]) {
		free(s[0]);
		free(s[1]);
		fprintf(stderr, "clawctl: out of memory\n");
		return 1;
	}
	/* Reach clawd before taking the terminal over, so an error reads normally. */
	if (take_sample(call, ctx, s[cur], NULL)) {
		free(s[0]);
		free(s[1]);
		return 1;
	}
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
		struct termios raw = saved_tio;

		raw.c_lflag &= ~(ICANON | ECHO);
		raw.c_cc[VMIN] = 0;
		raw.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
		tio_saved = true;
	}
	fputs("\033[?1049h\033[?25l", stdout);
	render(s[cur], NULL, interval_ms);
	for (;;) {
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
		uint64_t until = mono_ms() + interval_ms;
		bool quit = false;

		while (!quit) {
			uint64_t now = mono_ms();
			char ch;

			if (now >= until)
				break;
			int n = poll(&p, 1, (int)(until - now));

			if (n < 0 && errno != EINTR)
				quit = true;
			if (n <= 0)
				continue;
			ssize_t r = read(STDIN_FILENO, &ch, 1);

			if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
				quit = true; /* stdin closed: nobody can press q */
			else if (r == 1 && (ch == 'q' || ch == 'Q' || ch == 3))
				quit = true;
		}
		if (quit)
			break;
		if (take_sample(call, ctx, s[cur ^ 1], NULL)) {
			rc = 1;
			break;
		}
		cur ^= 1;
		render(s[cur], s[cur ^ 1], interval_ms);
	}
	term_restore();
	free(s[0]);
	free(s[1]);
	return rc;
}

/* ---- clawctl status: splice and key store lines ---------------------------------------- */

static bool flag(const struct jsonr *j, const struct jsonr_node *o, const char *k)
{
	const struct jsonr_node *n = o ? jsonr_get(j, o, k) : NULL;

	return n && n->type == JSONR_BOOL && n->b;
}

void obs_status_print(const struct jsonr *j, const struct jsonr_node *r)
{
	const struct jsonr_node *sp = jsonr_get(j, r, "splice"), *k = jsonr_get(j, r, "keys");
	const char *s;

	if (sp && sp->type == JSONR_OBJECT) {
		bool loaded = flag(j, sp, "loaded"), attached = flag(j, sp, "attached");

		s = jsonr_get_str(j, sp, "enabled");
		printf("%-12s %s, program %s", "splice", s ? s : "?",
		       !loaded ? "not loaded" : attached ? "loaded and attached" : "loaded, not attached");
		if ((s = jsonr_get_str(j, sp, "reason")))
			printf(" (%s)", s);
		printf(", %lld active, %lld spliced, %lld fallbacks\n",
		       (long long)jsonr_get_int(j, sp, "active", 0), (long long)jsonr_get_int(j, sp, "spliced", 0),
		       (long long)jsonr_get_int(j, sp, "fallbacks", 0));
	}
	if (k && k->type == JSONR_OBJECT) {
		s = jsonr_get_str(j, k, "store");
		if (!s) {
			printf("%-12s off\n", "keys");
		} else {
			printf("%-12s %s: %lld active, %lld revoked, %lld expired", "keys", s,
			       (long long)jsonr_get_int(j, k, "active", 0),
			       (long long)jsonr_get_int(j, k, "revoked", 0),
			       (long long)jsonr_get_int(j, k, "expired", 0));
			if ((s = jsonr_get_str(j, k, "error")))
				printf(" (unreadable: %s)", s);
			printf("\n");
		}
	}
}
