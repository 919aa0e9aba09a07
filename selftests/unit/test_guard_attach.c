/* selftests/unit/test_guard_attach.c — the guard on a veth in a throw-away network namespace: pinning, control commands, auto-ban, restart without a gap, re-attach, detach. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "config.h"
#include "control.h"
#include "guard.h"
#include "test.h"

#define IFNAME "ocg0"
#define PEER "ocg1"

static char ns_name[64], pin_dir[128], state_dir[64], sock_path[96], link_pin[192];
static int orig_ns = -1;
static struct config *cfg;
static struct guard *g;
static struct control *ctl;
static bool ready;

/* Runs `verb 'arg'`, quiet. */
static int sh(const char *verb, const char *arg)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "%s '%s' 2>/dev/null", verb, arg);
	return system(cmd);
}

static void cleanup(void)
{
	if (ctl)
		control_close(ctl);
	ctl = NULL;
	guard_stop(g);
	g = NULL;
	if (pin_dir[0]) {
		char err[256];

		guard_detach_all(pin_dir, err, sizeof(err));
		sh("rm -rf", pin_dir);
	}
	if (orig_ns >= 0) {
		setns(orig_ns, CLONE_NEWNET);
		close(orig_ns);
		orig_ns = -1;
	}
	if (ns_name[0])
		sh("ip netns del", ns_name);
	if (state_dir[0])
		sh("rm -rf", state_dir);
	config_free(cfg);
	cfg = NULL;
}

static int load_cfg(bool with_deny)
{
	char yaml[2048], err[512];

	config_free(cfg);
	snprintf(yaml, sizeof(yaml),
		 "listeners:\n  - name: web\n    address: 127.0.0.1:8080\n"
		 "routes:\n  - respond: {status: 200}\n"
		 "state_dir: %s\n"
		 "guard:\n"
		 "  interfaces: [" IFNAME "]\n"
		 "  mode: native\n"
		 "  ports: [8080, \"9000-9001\"]\n"
		 "  syn_rate: 100/s\n"
		 "  pin_dir: %s\n"
		 "%s"
		 "  autoban:\n    statuses: [400]\n    threshold: 3\n    window: 10s\n    ttl: 1h\n",
		 state_dir, pin_dir, with_deny ? "  deny: [192.0.2.0/24]\n" : "");
	if (config_load_string(yaml, strlen(yaml), "t.yaml", &cfg, err, sizeof(err))) {
		printf("# config: %s\n", err);
		return -1;
	}
	return 0;
}

static int setup(void)
{
	char path[128];
	int fd;

	snprintf(ns_name, sizeof(ns_name), "oc-guard-%d", (int)getpid());
	snprintf(pin_dir, sizeof(pin_dir), "/sys/fs/bpf/oc-guard-test-%d", (int)getpid());
	snprintf(link_pin, sizeof(link_pin), "%s/guard_link_" IFNAME, pin_dir);
	snprintf(state_dir, sizeof(state_dir), "/tmp/oc-guard-state.XXXXXX");
	if (!mkdtemp(state_dir)) {
		state_dir[0] = '\0';
		return -1;
	}
	snprintf(sock_path, sizeof(sock_path), "%.64s/clawd.sock", state_dir);
	if (sh("ip netns add", ns_name)) {
		ns_name[0] = '\0';
		return -1;
	}
	orig_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "/run/netns/%s", ns_name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (orig_ns < 0 || fd < 0 || setns(fd, CLONE_NEWNET)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	if (system("ip link add " IFNAME " type veth peer name " PEER " && ip link set " IFNAME
		   " up && ip link set " PEER " up"))
		return -1;
	return load_cfg(true);
}

/* One request over the control socket; the reply line into buf. */
static const char *ask(const char *req, char *buf, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	buf[0] = '\0';
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req) || write(fd, "\n", 1) != 1) {
		if (fd >= 0)
			close(fd);
		return buf;
	}
	while (got + 1 < len) {
		ssize_t n = read(fd, buf + got, len - got - 1);

		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(buf, '\n', got))
			break;
	}
	buf[got] = '\0';
	close(fd);
	return buf;
}

static int start_guard(void)
{
	char err[512];
	int rc = guard_start(&g, cfg, 2, err, sizeof(err));

	if (rc) {
		printf("# guard_start: %s\n", err);
		return rc;
	}
	if (control_open(&ctl, sock_path, (gid_t)-1, err, sizeof(err)) ||
	    guard_register_commands(g, ctl) || control_start(ctl))
		return -1;
	return 0;
}

static void stop_guard(void)
{
	control_close(ctl);
	ctl = NULL;
	guard_stop(g);
	g = NULL;
}

struct link_state {
	uint32_t link_id;
	uint32_t link_ifindex;
	uint32_t link_prog;
	uint32_t drv_prog; /* what the interface runs in native mode */
};

static struct link_state link_state(void)
{
	struct link_state s = { 0 };
	struct bpf_link_info info = { 0 };
	uint32_t len = sizeof(info);
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	int fd = bpf_obj_get(link_pin);

	if (fd >= 0) {
		if (!bpf_obj_get_info_by_fd(fd, &info, &len)) {
			s.link_id = info.id;
			s.link_ifindex = info.xdp.ifindex;
			s.link_prog = info.prog_id;
		}
		close(fd);
	}
	if (if_nametoindex(IFNAME) && !bpf_xdp_query((int)if_nametoindex(IFNAME), 0, &q))
		s.drv_prog = q.drv_prog_id;
	return s;
}

/* The blocklist value of an IPv4 prefix, origin 0 when absent. */
static struct guard_list_val block4(const char *addr, uint32_t plen)
{
	struct guard_lpm4_key k = { .prefixlen = plen };
	struct guard_list_val v = { 0 };
	char path[256];
	int fd;

	inet_pton(AF_INET, addr, k.addr);
	snprintf(path, sizeof(path), "%s/%s", pin_dir, GUARD_MAP_BLOCK4);
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		if (bpf_map_lookup_elem(fd, &k, &v))
			memset(&v, 0, sizeof(v));
		close(fd);
	}
	return v;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void test_start_attaches_and_pins(void)
{
	struct link_state s;
	struct guard_list_val v;
	struct stat st;
	char path[256];

	if (!ready)
		SKIP("no network namespace (needs root and iproute2)");
	ASSERT_EQ(start_guard(), 0);
	s = link_state();
	ASSERT_NE(s.link_id, 0);
	ASSERT_EQ(s.link_ifindex, if_nametoindex(IFNAME));
	/* mode: native -> the driver slot runs our program. */
	ASSERT_EQ(s.drv_prog, s.link_prog);
	snprintf(path, sizeof(path), "%s/%s", pin_dir, GUARD_MAP_CFG);
	ASSERT_EQ(stat(path, &st), 0);
	v = block4("192.0.2.0", 24);
	ASSERT_EQ(v.origin, GUARD_ORIGIN_CONFIG);
	ASSERT_EQ(v.prefixlen, 24);
	ASSERT_EQ(v.expires_ns, 0);
}

static void test_control_commands(void)
{
	char r[8192];
	struct guard_list_val v;

	if (!g)
		SKIP("guard not running");
	ASSERT_STRSTR(ask("{\"cmd\":\"block.add\",\"cidr\":\"198.51.100.9/24\",\"ttl\":\"10m\",\"reason\":\"scan\"}", r, sizeof(r)),
		      "{\"ok\":true,\"cidr\":\"198.51.100.0/24\",\"expires\":\"");
	v = block4("198.51.100.0", 24);
	ASSERT_EQ(v.origin, GUARD_ORIGIN_MANUAL);
	ASSERT_NE(v.expires_ns, 0);
	ASSERT_STRSTR(ask("{\"cmd\":\"block.list\"}", r, sizeof(r)),
		      "{\"cidr\":\"198.51.100.0/24\",\"source\":\"manual\",\"reason\":\"scan\",\"expires\":\"");
	ASSERT_STRSTR(r, "\"expires_in_s\":600}");
	ASSERT_STRSTR(r, "{\"cidr\":\"192.0.2.0/24\",\"source\":\"config\"");
	ASSERT_STRSTR(ask("{\"cmd\":\"block.del\",\"cidr\":\"198.51.100.0/24\"}", r, sizeof(r)), "{\"ok\":true");
	ASSERT_EQ(block4("198.51.100.0", 24).origin, 0);
	ASSERT_STRSTR(ask("{\"cmd\":\"block.del\",\"cidr\":\"198.51.100.0/24\"}", r, sizeof(r)),
		      "{\"ok\":false,\"error\":\"198.51.100.0/24 is not on the blocklist\"}");
	ASSERT_STRSTR(ask("{\"cmd\":\"block.del\",\"cidr\":\"192.0.2.0/24\"}", r, sizeof(r)),
		      "from the configuration");
	ASSERT_STRSTR(ask("{\"cmd\":\"block.add\",\"cidr\":\"300.1.1.1\"}", r, sizeof(r)),
		      "{\"ok\":false,\"error\":\"bad CIDR \\\"300.1.1.1\\\"");
	ASSERT_STRSTR(ask("{\"cmd\":\"block.add\",\"cidr\":\"1.2.3.4\",\"ttl\":\"10\"}", r, sizeof(r)),
		      "{\"ok\":false,\"error\":\"bad ttl \\\"10\\\"");
	/* A manual allow entry without expiry, kept for the restart test. */
	ASSERT_STRSTR(ask("{\"cmd\":\"allow.add\",\"cidr\":\"10.9.0.0/16\"}", r, sizeof(r)),
		      "{\"ok\":true,\"cidr\":\"10.9.0.0/16\",\"expires\":null}");
	ASSERT_STRSTR(ask("{\"cmd\":\"allow.list\"}", r, sizeof(r)),
		      "{\"cidr\":\"10.9.0.0/16\",\"source\":\"manual\",\"reason\":\"\",\"expires\":null,\"expires_in_s\":null}");
	ASSERT_STRSTR(ask("{\"cmd\":\"guard.status\"}", r, sizeof(r)),
		      "{\"name\":\"" IFNAME "\",\"ifindex\":");
	ASSERT_STRSTR(r, "\"attached\":true,\"mode\":\"native\"");
	ASSERT_STRSTR(r, "\"ports\":[\"8080\",\"9000-9001\"]");
	ASSERT_STRSTR(r, "\"limits\":{\"syn_rate\":100,\"syn_burst\":100,\"packet_rate\":null");
	ASSERT_STRSTR(ask("{\"cmd\":\"guard.stats\"}", r, sizeof(r)), "\"interval_ms\":null");
	ASSERT_STRSTR(r, "\"blocklisted\":{\"packets\":");
	ASSERT_STRSTR(ask("{\"cmd\":\"guard.stats\"}", r, sizeof(r)), "\"packets_per_s\":0");
}

static void test_ttl_entry_expires(void)
{
	char r[4096];

	if (!g)
		SKIP("guard not running");
	ASSERT_STRSTR(ask("{\"cmd\":\"block.add\",\"cidr\":\"203.0.113.5\",\"ttl\":\"1s\"}", r, sizeof(r)),
		      "{\"ok\":true,\"cidr\":\"203.0.113.5/32\"");
	ASSERT_EQ(block4("203.0.113.5", 32).origin, GUARD_ORIGIN_MANUAL);
	for (int i = 0; i < 30 && block4("203.0.113.5", 32).origin; i++)
		sleep_ms(100);
	ASSERT_EQ(block4("203.0.113.5", 32).origin, 0);
	ASSERT_FALSE(strstr(ask("{\"cmd\":\"block.list\"}", r, sizeof(r)), "203.0.113.5"));
}

static void test_autoban_from_reports(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct sockaddr_in6 mapped = { .sin6_family = AF_INET6 };
	char r[4096];

	if (!g)
		SKIP("guard not running");
	inet_pton(AF_INET, "198.51.100.77", &sa.sin_addr);
	inet_pton(AF_INET6, "::ffff:198.51.100.77", &mapped.sin6_addr);
	/* Statuses not listed never count. */
	for (int i = 0; i < 10; i++)
		guard_report(g, 0, (struct sockaddr *)&sa, 404);
	guard_report(g, 0, (struct sockaddr *)&sa, 400);
	guard_report(g, 1, (struct sockaddr *)&mapped, 400);
	sleep_ms(400);
	ASSERT_EQ(block4("198.51.100.77", 32).origin, 0);
	guard_report(g, 0, (struct sockaddr *)&sa, 400);
	for (int i = 0; i < 20 && !block4("198.51.100.77", 32).origin; i++)
		sleep_ms(100);
	ASSERT_EQ(block4("198.51.100.77", 32).origin, GUARD_ORIGIN_AUTO);
	ASSERT_STRSTR(ask("{\"cmd\":\"block.list\"}", r, sizeof(r)),
		      "{\"cidr\":\"198.51.100.77/32\",\"source\":\"auto\",\"reason\":\"auto-ban: 3 responses 400 in 10s\"");
	ASSERT_STRSTR(ask("{\"cmd\":\"guard.stats\"}", r, sizeof(r)), "\"bans\":1");
}

static void test_restart_adopts_pinned_link(void)
{
	struct link_state before, down, after;

	if (!g)
		SKIP("guard not running");
	before = link_state();
	stop_guard();
	/* clawd is down: the interface still runs the guard. */
	down = link_state();
	ASSERT_EQ(down.link_id, before.link_id);
	ASSERT_EQ(down.drv_prog, before.link_prog);
	ASSERT_EQ(start_guard(), 0);
	after = link_state();
	/* Same link (never detached), new program swapped into it. */
	ASSERT_EQ(after.link_id, before.link_id);
	ASSERT_NE(after.link_prog, before.link_prog);
	ASSERT_EQ(after.drv_prog, after.link_prog);
	/* Manual and auto entries came back; the config entry too. */
	ASSERT_EQ(block4("198.51.100.77", 32).origin, GUARD_ORIGIN_AUTO);
	ASSERT_EQ(block4("192.0.2.0", 24).origin, GUARD_ORIGIN_CONFIG);
}

static void test_config_entry_dropped_when_removed(void)
{
	char r[4096];

	if (!g)
		SKIP("guard not running");
	stop_guard();
	ASSERT_EQ(load_cfg(false), 0);
	ASSERT_EQ(start_guard(), 0);
	ASSERT_EQ(block4("192.0.2.0", 24).origin, 0);
	ASSERT_EQ(block4("198.51.100.77", 32).origin, GUARD_ORIGIN_AUTO);
	ASSERT_STRSTR(ask("{\"cmd\":\"allow.list\"}", r, sizeof(r)), "\"10.9.0.0/16\"");
}

static void test_reattach_when_interface_returns(void)
{
	struct link_state s = { 0 };
	unsigned idx;

	if (!g)
		SKIP("guard not running");
	ASSERT_EQ(system("ip link del " IFNAME), 0);
	ASSERT_EQ(system("ip link add " IFNAME " type veth peer name " PEER " && ip link set " IFNAME " up"), 0);
	idx = if_nametoindex(IFNAME);
	ASSERT_NE(idx, 0);
	for (int i = 0; i < 30; i++) {
		s = link_state();
		if (s.link_ifindex == idx && s.drv_prog)
			break;
		sleep_ms(100);
	}
	ASSERT_EQ(s.link_ifindex, idx);
	ASSERT_EQ(s.drv_prog, s.link_prog);
}

static void test_guard_detach_command(void)
{
	char r[4096];
	struct stat st;

	if (!g)
		SKIP("guard not running");
	ASSERT_STRSTR(ask("{\"cmd\":\"guard.detach\"}", r, sizeof(r)), "{\"ok\":true,\"detached\":[\"" IFNAME "\"]}");
	ASSERT_EQ(link_state().drv_prog, 0);
	ASSERT_NE(stat(link_pin, &st), 0);
	ASSERT_STRSTR(ask("{\"cmd\":\"guard.status\"}", r, sizeof(r)), "\"attached\":false");
	/* Maps stay. */
	ASSERT_EQ(block4("198.51.100.77", 32).origin, GUARD_ORIGIN_AUTO);
}

static void test_detach_all(void)
{
	char err[256] = "";
	struct stat st;

	if (!g)
		SKIP("guard not running");
	stop_guard();
	/* A fresh start attaches again; --detach-guard then removes everything. */
	ASSERT_EQ(start_guard(), 0);
	ASSERT_NE(link_state().drv_prog, 0);
	stop_guard();
	ASSERT_NE(link_state().drv_prog, 0);
	ASSERT_EQ(guard_detach_all(pin_dir, err, sizeof(err)), 0);
	ASSERT_EQ(link_state().drv_prog, 0);
	ASSERT_NE(stat(pin_dir, &st), 0);
}

static void test_not_configured(void)
{
	struct control *c = NULL;
	char err[256], r[1024], saved[96];

	snprintf(saved, sizeof(saved), "%s", sock_path);
	snprintf(sock_path, sizeof(sock_path), "%.64s/off.sock", state_dir[0] ? state_dir : "/tmp");
	ASSERT_EQ(control_open(&c, sock_path, (gid_t)-1, err, sizeof(err)), 0);
	ASSERT_EQ(guard_register_commands(NULL, c), 0);
	ASSERT_EQ(control_start(c), 0);
	ask("{\"cmd\":\"block.list\"}", r, sizeof(r));
	control_close(c);
	snprintf(sock_path, sizeof(sock_path), "%s", saved);
	ASSERT_STRSTR(r, "{\"ok\":false,\"error\":\"guard is not configured");
}

int main(void)
{
	atexit(cleanup);
	ready = getuid() == 0 && setup() == 0;
	if (!ready)
		printf("# setup failed: %s\n", strerror(errno));
	RUN(test_start_attaches_and_pins);
	RUN(test_control_commands);
	RUN(test_ttl_entry_expires);
	RUN(test_autoban_from_reports);
	RUN(test_restart_adopts_pinned_link);
	RUN(test_config_entry_dropped_when_removed);
	RUN(test_reattach_when_interface_returns);
	RUN(test_guard_detach_command);
	RUN(test_detach_all);
	RUN(test_not_configured);
	cleanup();
	return test_done();
}
