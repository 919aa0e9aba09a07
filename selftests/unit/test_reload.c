/* selftests/unit/test_reload.c — reload: which top-level sections changed, and snapshots that share or carry balancer state. */
#include <errno.h>

#include "../../agent/reload.c"
#include "test.h"

static const char base[] =
	"# a comment at the top\n"
	"workers: 2\n"
	"listeners:\n"
	"  - name: web\n"
	"    address: 127.0.0.1:8080\n"
	"upstreams:\n"
	"  - name: api\n"
	"    servers: [10.0.0.1:80, 10.0.0.2:80]\n"
	"routes:\n"
	"  - upstream: api\n";

static char *sect(const char *text, const char *key)
{
	size_t n;

	return section(text, strlen(text), key, &n);
}

static void test_section_text(void)
{
	char *s = sect(base, "upstreams");

	ASSERT_STREQ(s, "upstreams:\n  - name: api\n    servers: [10.0.0.1:80, 10.0.0.2:80]\n");
	free(s);
	s = sect(base, "workers");
	ASSERT_STREQ(s, "workers: 2\n");
	free(s);
	/* Absent, and a key that is only a prefix of another, are not found. */
	ASSERT_TRUE(sect(base, "guard") == NULL);
	ASSERT_TRUE(sect("routes_typo: 1\n", "routes") == NULL);
}

static void test_section_changed(void)
{
	struct reloader r = { .text = (char *)base, .text_len = strlen(base) };
	const char cosmetic[] =
		"workers: 2\n"
		"\n"
		"listeners:\n"
		"  - name: web   \n"
		"    # moved here\n"
		"    address: 127.0.0.1:8080\n"
		"upstreams:\n"
		"  - name: api\n"
		"    servers: [10.0.0.1:80, 10.0.0.2:80]\n"
		"routes:\n"
		"  - upstream: api\n"
		"guard:\n"
		"  interfaces: [lo]\n";

	/* Comments, blank lines and trailing blanks are no change; a new section is one. */
	ASSERT_FALSE(section_changed(&r, cosmetic, strlen(cosmetic), "listeners"));
	ASSERT_FALSE(section_changed(&r, cosmetic, strlen(cosmetic), "upstreams"));
	ASSERT_TRUE(section_changed(&r, cosmetic, strlen(cosmetic), "guard"));
	ASSERT_FALSE(section_changed(&r, cosmetic, strlen(cosmetic), "admin"));
	const char other[] = "workers: 3\nupstreams:\n  - name: api\n    servers: [10.0.0.1:80]\n";
	ASSERT_TRUE(section_changed(&r, other, strlen(other), "workers"));
	ASSERT_TRUE(section_changed(&r, other, strlen(other), "upstreams"));
	ASSERT_TRUE(section_changed(&r, other, strlen(other), "routes"));
}

static struct config *load_cfg(const char *servers)
{
	char doc[512], err[256];
	struct config *cfg = NULL;
	int n = snprintf(doc, sizeof(doc),
			 "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n"
			 "upstreams:\n  - name: api\n    servers: %s\n"
			 "routes:\n  - upstream: api\n", servers);

	if (config_load_string(doc, (size_t)n, "t.yaml", &cfg, err, sizeof(err))) {
		printf("#   config: %s\n", err);
		return NULL; /* the caller's ASSERT fails */
	}
	return cfg;
}

static struct snapshot *load(const char *servers)
{
	struct config *cfg = load_cfg(servers);
	struct snapshot *s = NULL;

	if (cfg && snapshot_create(cfg, &s)) {
		config_free(cfg);
		return NULL;
	}
	return s;
}

static void test_shared_pools(void)
{
	struct snapshot *old = load("[10.0.0.1:80, 10.0.0.2:80]"), *ns = NULL, *n2 = NULL;
	struct config *cfg = load_cfg("[10.0.0.1:80, 10.0.0.2:80]");
	struct config *cfg2 = load_cfg("[10.0.0.1:80, 10.0.0.2:80]");

	ASSERT_TRUE(old && cfg && cfg2);
	ASSERT_EQ(snapshot_create_from(cfg, old, true, &ns), 0);
	ASSERT_TRUE(ns->pools == old->pools);
	ASSERT_TRUE(ns->pools_owner == old);
	/* A second reload shares with the first owner, not with a chain of snapshots. */
	ASSERT_EQ(snapshot_create_from(cfg2, ns, true, &n2), 0);
	ASSERT_TRUE(n2->pools_owner == old);
	ASSERT_EQ(atomic_load(&old->refs), 3);
	snapshot_put(old);
	snapshot_put(ns);
	/* The owner lives as long as one sharer: its pools are still readable. */
	ASSERT_EQ(n2->pools[0].nservers, 2);
	snapshot_put(n2);
}

static void test_rebuilt_pools_carry_state(void)
{
	struct snapshot *old = load("[10.0.0.1:80, 10.0.0.2:80]"), *ns = NULL;
	struct config *cfg = load_cfg("[10.0.0.3:80, 10.0.0.2:80]");

	ASSERT_TRUE(old && cfg);
	atomic_store(&old->pools[0].servers[1].down, true);
	atomic_store(&old->pools[0].servers[1].draining, true);
	atomic_store(&old->pools[0].servers[1].weight_rt, 7);
	atomic_store(&old->pools[0].servers[0].ejected, true);
	atomic_store(&old->pools[0].nejected, 1);
	atomic_store(&old->pools[0].servers[1].active, 5); /* in flight on the old pools: not carried */
	ASSERT_EQ(snapshot_create_from(cfg, old, false, &ns), 0);
	ASSERT_TRUE(ns->pools != old->pools);
	/* 10.0.0.2:80 is server 1 in both: its state came along. */
	ASSERT_EQ(snapshot_server_match(&old->pools[0], &ns->pools[0], 1), 1);
	ASSERT_TRUE(atomic_load(&ns->pools[0].servers[1].down));
	ASSERT_TRUE(atomic_load(&ns->pools[0].servers[1].draining));
	ASSERT_EQ(atomic_load(&ns->pools[0].servers[1].weight_rt), 7);
	ASSERT_EQ(atomic_load(&ns->pools[0].servers[1].active), 0);
	/* 10.0.0.3:80 is new: it starts clean, and the old ejected server is gone. */
	ASSERT_EQ(snapshot_server_match(&old->pools[0], &ns->pools[0], 0), -1);
	ASSERT_FALSE(atomic_load(&ns->pools[0].servers[0].ejected));
	ASSERT_FALSE(atomic_load(&ns->pools[0].servers[0].down));
	ASSERT_EQ(atomic_load(&ns->pools[0].nejected), 0);
	ASSERT_STREQ(ns->server_names[0][0], "10.0.0.3:80");
	snapshot_put(old);
	snapshot_put(ns);
}

int main(void)
{
	RUN(test_section_text);
	RUN(test_section_changed);
	RUN(test_shared_pools);
	RUN(test_rebuilt_pools_carry_state);
	return test_done();
}
