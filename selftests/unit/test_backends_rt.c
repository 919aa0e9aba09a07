/* selftests/unit/test_backends_rt.c — runtime server changes: pool fingerprints, laying add/remove over the file's pool, refusals. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends.h"
#include "config.h"
#include "netaddr.h"
#include "test.h"

static struct config *load(const char *upstream_body)
{
	char doc[1024], err[256];
	struct config *cfg = NULL;
	int n = snprintf(doc, sizeof(doc),
			 "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n"
			 "upstreams:\n  - name: api\n%s"
			 "routes:\n  - upstream: api\n", upstream_body);

	if (config_load_string(doc, (size_t)n, "t.yaml", &cfg, err, sizeof(err))) {
		printf("#   config: %s\n", err);
		return NULL;
	}
	return cfg;
}

static struct net_addr addr(const char *s)
{
	struct net_addr a;
	const char *why = "";

	memset(&a, 0, sizeof(a));
	if (net_addr_parse(s, 0, &a, &why))
		printf("#   bad test address %s: %s\n", s, why);
	return a;
}

static const char *srv(const struct cfg_upstream *u, unsigned i, char *buf)
{
	return net_addr_format((const struct sockaddr *)&u->servers[i].addr.ss, buf, NET_ADDR_STRLEN);
}

static void test_fingerprint(void)
{
	struct config *a = load("    servers: [10.0.0.1:80, 10.0.0.2:80]\n");
	struct config *b = load("    # a comment\n    servers:\n      - 10.0.0.1:80\n      - {address: 10.0.0.2:80}\n");
	struct config *c = load("    servers: [10.0.0.1:80, 10.0.0.2:80]\n    health: {type: tcp}\n");
	struct config *d = load("    servers: [10.0.0.1:80, {address: 10.0.0.2:80, weight: 2}]\n");
	struct config *e = load("    servers: [10.0.0.2:80, 10.0.0.1:80]\n");

	ASSERT_TRUE(a && b && c && d && e);
	if (!a || !b || !c || !d || !e)
		goto out;
	/* Layout and comments are no change; any setting of the pool is one. */
	ASSERT_EQ(backends_pool_fingerprint(&a->upstreams[0]), backends_pool_fingerprint(&b->upstreams[0]));
	ASSERT_NE(backends_pool_fingerprint(&a->upstreams[0]), backends_pool_fingerprint(&c->upstreams[0]));
	ASSERT_NE(backends_pool_fingerprint(&a->upstreams[0]), backends_pool_fingerprint(&d->upstreams[0]));
	ASSERT_NE(backends_pool_fingerprint(&a->upstreams[0]), backends_pool_fingerprint(&e->upstreams[0]));
out:
	config_free(a);
	config_free(b);
	config_free(c);
	config_free(d);
	config_free(e);
}

/* file: the pool as parsed; run: a copy with pr laid over it, as the running pool. */
static void relay(const struct backends_pool_rt *pr, const struct cfg_upstream *file,
		  struct cfg_upstream *run)
{
	char err[256];

	free(run->servers);
	*run = *file;
	run->servers = malloc(file->nservers * sizeof(*file->servers));
	memcpy(run->servers, file->servers, file->nservers * sizeof(*file->servers));
	if (backends_pool_apply(pr, run, err, sizeof(err)))
		printf("#   apply: %s\n", err);
}

static void test_add_remove(void)
{
	struct config *cfg = load("    servers: [10.0.0.1:80, {address: 10.0.0.2:80, weight: 5}]\n");
	struct backends_pool_rt pr = { 0 };
	struct cfg_upstream *file, run = { 0 };
	struct net_addr x = addr("10.0.0.9:80"), one = addr("10.0.0.1:80"), two = addr("10.0.0.2:80");
	char err[256], b[NET_ADDR_STRLEN];

	ASSERT_TRUE(cfg != NULL);
	if (!cfg)
		return;
	file = &cfg->upstreams[0];
	relay(&pr, file, &run);
	ASSERT_EQ(run.nservers, 2);

	/* Add: appended with its weight and role. */
	ASSERT_EQ(backends_pool_add(&pr, file, &run, &x, 3, true, err, sizeof(err)), 0);
	relay(&pr, file, &run);
	ASSERT_EQ(run.nservers, 3);
	ASSERT_STREQ(srv(&run, 2, b), "10.0.0.9:80");
	ASSERT_EQ(run.servers[2].weight, 3);
	ASSERT_TRUE(run.servers[2].backup);
	ASSERT_EQ(run.nbackup, 1);

	/* Duplicates are refused, in any spelling of the address. */
	ASSERT_EQ(backends_pool_add(&pr, file, &run, &one, 1, false, err, sizeof(err)), -EEXIST);
	ASSERT_TRUE(strstr(err, "already has server 10.0.0.1:80") != NULL);
	ASSERT_EQ(backends_pool_add(&pr, file, &run, &x, 1, false, err, sizeof(err)), -EEXIST);

	/* Remove a file server: recorded as a removal. */
	ASSERT_EQ(backends_pool_remove(&pr, file, &run, &one, err, sizeof(err)), 0);
	ASSERT_EQ(pr.ndel, 1);
	relay(&pr, file, &run);
	ASSERT_EQ(run.nservers, 2);
	ASSERT_STREQ(srv(&run, 0, b), "10.0.0.2:80");

	/* The last primary cannot go: the backup does not count. */
	ASSERT_EQ(backends_pool_remove(&pr, file, &run, &two, err, sizeof(err)), -EINVAL);
	ASSERT_TRUE(strstr(err, "last primary") != NULL);
	/* Not in the pool (any more). */
	ASSERT_EQ(backends_pool_remove(&pr, file, &run, &one, err, sizeof(err)), -ENOENT);

	/* Removing an added server forgets it; adding a removed file server as the file has it undoes the removal. */
	ASSERT_EQ(backends_pool_remove(&pr, file, &run, &x, err, sizeof(err)), 0);
	ASSERT_EQ(pr.nadd, 0);
	relay(&pr, file, &run);
	ASSERT_EQ(backends_pool_add(&pr, file, &run, &one, 1, false, err, sizeof(err)), 0);
	ASSERT_EQ(pr.ndel, 0);
	ASSERT_EQ(pr.nadd, 0);
	relay(&pr, file, &run);
	ASSERT_EQ(run.nservers, 2);
	ASSERT_STREQ(srv(&run, 0, b), "10.0.0.1:80");

	/* ...with another weight it is a removal plus an addition. */
	ASSERT_EQ(backends_pool_remove(&pr, file, &run, &two, err, sizeof(err)), 0);
	relay(&pr, file, &run);
	ASSERT_EQ(backends_pool_add(&pr, file, &run, &two, 7, false, err, sizeof(err)), 0);
	ASSERT_EQ(pr.ndel, 1);
	ASSERT_EQ(pr.nadd, 1);
	relay(&pr, file, &run);
	ASSERT_EQ(run.nservers, 2);
	ASSERT_EQ(run.servers[1].weight, 7);

	/* Bad weight. */
	ASSERT_EQ(backends_pool_add(&pr, file, &run, &x, 0, false, err, sizeof(err)), -EINVAL);
	ASSERT_EQ(backends_pool_add(&pr, file, &run, &x, 1001, false, err, sizeof(err)), -EINVAL);

	free(run.servers);
	backends_pool_rt_clear(&pr);
	config_free(cfg);
}

static void test_apply_refuses(void)
{
	struct config *cfg = load("    servers: [10.0.0.1:80]\n");
	struct backends_added only_backup = { .addr = addr("10.0.0.5:80"), .weight = 1, .backup = true };
	struct backends_added dup = { .addr = addr("10.0.0.1:80"), .weight = 1 };
	struct net_addr gone = addr("10.0.0.7:80"), one = addr("10.0.0.1:80");
	char err[256];

	ASSERT_TRUE(cfg != NULL);
	if (!cfg)
		return;
	struct cfg_upstream *u = &cfg->upstreams[0];
	struct backends_pool_rt pr = { .name = "api", .del = &gone, .ndel = 1 };

	/* A removal of a server the file no longer has. */
	ASSERT_EQ(backends_pool_apply(&pr, u, err, sizeof(err)), -ENOENT);
	ASSERT_EQ(u->nservers, 1);
	/* No primary left. */
	pr = (struct backends_pool_rt){ .name = "api", .add = &only_backup, .nadd = 1, .del = &one, .ndel = 1 };
	ASSERT_EQ(backends_pool_apply(&pr, u, err, sizeof(err)), -EINVAL);
	ASSERT_EQ(u->nservers, 1);
	/* A duplicate. */
	pr = (struct backends_pool_rt){ .name = "api", .add = &dup, .nadd = 1 };
	ASSERT_EQ(backends_pool_apply(&pr, u, err, sizeof(err)), -EEXIST);
	ASSERT_EQ(u->nservers, 1);
	config_free(cfg);
}

int main(void)
{
	RUN(test_fingerprint);
	RUN(test_add_remove);
	RUN(test_apply_refuses);
	return test_done();
}
