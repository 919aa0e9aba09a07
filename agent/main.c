/* agent/main.c — clawd: command line, start-up, signals and graceful stop. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "admin.h"
#include "agent.h"
#include "config.h"
#include "control.h"
#include "gate.h"
#include "guard.h"
#include "splice.h"
#include "tls.h"
#include "tls_client.h"
#include "health.h"
#include "backends.h"
#include "log.h"
#include "metrics.h"
#include "reload.h"
#include "sdnotify.h"
#include "retry.h"
#include "upgrade.h"
#include "worker.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: clawd [-c FILE] [--check] [--detach-guard] [--log-level LEVEL]\n"
		"  -c, --config FILE    configuration (default " CFG_DEFAULT_PATH ")\n"
		"  -t, --check          validate the configuration and exit (0 ok, 1 invalid)\n"
		"      --detach-guard   remove the packet guard's pinned links and maps (XDP detaches) and exit\n"
		"  -l, --log-level L    error, warn, notice, info (default) or debug\n"
		"  -V, --version        print the version and exit\n");
}

static int parse_level(const char *s, enum log_level *out)
{
	static const struct { const char *name; enum log_level lvl; } names[] = {
		{ "error", LOG_ERR }, { "warn", LOG_WARN }, { "notice", LOG_NOTICE },
		{ "info", LOG_INFO }, { "debug", LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i].name)) {
			*out = names[i].lvl;
			return 0;
		}
	return -EINVAL;
}

/* Many connections need many descriptors: take what the hard limit allows. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int write_pid_file(const char *path)
{
	char buf[32];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int n;

	if (fd < 0)
		return -errno;
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (write(fd, buf, n) != n) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 't' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ "detach-guard", no_argument, NULL, 'D' },
		{ 0 },
	};
	const char *path = CFG_DEFAULT_PATH;
	bool check = false, detach_guard = false;
	struct guard *guard = NULL;
	struct health *health = NULL;
	struct gate *gate = NULL;
	struct tls_reg *tls = NULL;
	struct config *cfg;
	struct snapshot *snap;
	struct backends_rt *brt = NULL;
	struct alog *alog = NULL;
	struct worker_set ws = { 0 };
	char err[1024];
	sigset_t sigs;
	unsigned nworkers;
	int c, rc;

	/* Before getopt reorders argv: a binary upgrade starts the new clawd with the same. */
	upgrade_init(argc, argv);
	while ((c = getopt_long(argc, argv, "c:tl:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check = true;
			break;
		case 'l':
			if (parse_level(optarg, &log_threshold)) {
				fprintf(stderr, "clawd: --log-level: unknown level '%s'\n", optarg);
				return 2;
			}
			break;
		case 'D':
			detach_guard = true;
			break;
		case 'V':
			printf("clawd %s\n", OPENCLAW_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "clawd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}

	if (detach_guard) {
		/* Works with a broken configuration too: then the default pin directory is used. */
		const char *pin_dir = GUARD_PIN_DIR;

		if (config_load(path, &cfg, err, sizeof(err)) == 0)
			pin_dir = cfg->guard.pin_dir;
		else
			fprintf(stderr, "clawd: %s (using %s)\n", err, GUARD_PIN_DIR);
		rc = guard_detach_all(pin_dir, err, sizeof(err));
		if (rc)
			fprintf(stderr, "clawd: --detach-guard: %s\n", err);
		else
			printf("guard detached: pinned links and maps removed from %s\n", pin_dir);
		if (cfg)
			config_free(cfg);
		return rc ? 1 : 0;
	}
	rc = config_load(path, &cfg, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "clawd: %s\n", err);
		return 1;
	}
	if (check) {
		printf("%s: configuration ok\n", path);
		config_free(cfg);
		return 0;
	}

	/* Signals are taken synchronously by this thread; workers never see them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGQUIT);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	nworkers = cfg->workers ? cfg->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	if (nworkers == 0)
		nworkers = 1;
	/* Started by a binary upgrade (docs/operations.md): take the old clawd's listening sockets. */
	if ((rc = upgrade_child_init(cfg, nworkers, err, sizeof(err)))) {
		log_err("%s", err);
		config_free(cfg);
		return 1;
	}
	if (cfg->access_log) {
		rc = alog_open(&alog, cfg->access_log, nworkers, 1 << 20);
		if (rc) {
			log_err("access_log %s: %s", cfg->access_log, strerror(-rc));
			config_free(cfg);
			return 1;
		}
		struct alog_opts ao = {
			.format = cfg->access_log_opts.format,
			.template = cfg->access_log_opts.template,
			.query = cfg->access_log_opts.query,
		};

		alog_set_opts(alog, &ao);
	}
	/* Servers added or removed at run time (clawctl backends add/remove), from state_dir. */
	if ((rc = backends_rt_create(&brt, cfg)))
		log_warn("backends: %s: runtime server changes are off", strerror(-rc));
	rc = snapshot_create(cfg, &snap);
	if (rc) {
		log_err("start-up: %s", strerror(-rc));
		backends_rt_free(brt);
		config_free(cfg);
		alog_close(alog);
		return 1;
	}
	struct agent agent = {
		.config_path = path,
		.started_at = time(NULL),
		.loaded_at = time(NULL),
		.snap = snap,
		.workers = &ws,
		.alog = alog,
		.scrape_lock = PTHREAD_MUTEX_INITIALIZER,
		.live_lock = PTHREAD_MUTEX_INITIALIZER,
	};
	struct reloader *reloader = NULL;
	struct control *ctl = NULL;
	struct admin *admin = NULL;
	struct upgrader *upgrader = NULL;
	int exit_code = 0;
	struct metrics *metrics = NULL;

	rc = metrics_create(&metrics, cfg, nworkers);
	if (rc) {
		log_err("start-up: metrics: %s", strerror(-rc));
		goto fail_early;
	}
	agent.metrics = ws.metrics = metrics;
	/* TLS listeners (docs/tls.md): certificates and keys read, key permissions checked, kTLS probed. */
	if ((rc = tls_start(&tls, snap->cfg, err, sizeof(err)))) {
		log_err("%s", err);
		goto fail_early;
	}
	snap->tls = agent.tls = tls;
	if ((rc = tls_register_metrics(tls, metrics)))
		log_warn("tls metrics: %s", strerror(-rc));
	/* Upstream TLS (docs/tls.md "Upstream TLS"): handshakes with backends, per pool. */
	if ((rc = tls_client_register_metrics(metrics)))
		log_warn("upstream tls metrics: %s", strerror(-rc));

	/* The control socket first: it also tells us whether another clawd is running. */
	if (cfg->control_socket) {
		gid_t group = (gid_t)-1;

		if (cfg->control_group) {
			struct group gr, *res = NULL;
			char buf[4096];

			if (getgrnam_r(cfg->control_group, &gr, buf, sizeof(buf), &res) || !res) {
				log_err("control.group: no such group '%s'", cfg->control_group);
				goto fail_early;
			}
			group = gr.gr_gid;
		}
		char ctl_tmp[256];

		/* An upgrade's new process binds a temporary path and renames it when it takes over. */
		rc = control_open(&ctl, upgrade_control_path(cfg->control_socket, ctl_tmp, sizeof(ctl_tmp)),
				  group, err, sizeof(err));
		if (rc) {
			log_err("%s", err);
			goto fail_early;
		}
		status_register(ctl, &agent);
		if ((rc = metrics_register_commands(ctl, &agent)))
			log_warn("control: stats command: %s", strerror(-rc));
	}
	rc = guard_start(&guard, snap->cfg, nworkers, err, sizeof(err));
	if (rc) {
		log_err("%s", err);
		control_close(ctl);
		goto fail_early;
	}
	if (ctl && (rc = guard_register_commands(guard, ctl)))
		log_warn("control: guard commands: %s", strerror(-rc));
	/* Sockmap splice (docs/splice.md): only splice.enabled: required makes a load failure fatal. */
	if ((rc = splice_start(snap->cfg, err, sizeof(err)))) {
		log_err("%s", err);
		control_close(ctl);
		guard_stop(guard);
		goto fail_early;
	}
	if (ctl && (rc = splice_register_commands(ctl)))
		log_warn("control: splice commands: %s", strerror(-rc));
	if ((rc = splice_register_metrics(metrics)))
		log_warn("metrics: splice: %s", strerror(-rc));
	/* Health checks, ejection timers and slow start; traffic still flows if it cannot start. */
	if ((rc = health_start(&health, snap, err, sizeof(err))))
		log_err("%s: health checks are off", err);
	else if (ctl && (rc = health_register_commands(health, ctl)))
		log_warn("control: backends commands: %s", strerror(-rc));
	/* API keys and limits: the key store is refused here when its file is too open. */
	rc = gate_start(&gate, snap->cfg, nworkers, err, sizeof(err));
	if (rc) {
		log_err("%s", err);
		control_close(ctl);
		guard_stop(guard);
		goto fail_early;
	}
	if (ctl && (rc = tls_register_commands(tls, ctl, snap->cfg)))
		log_warn("control: tls commands: %s", strerror(-rc));
	if (ctl && (rc = gate_register_commands(gate, ctl)))
		log_warn("control: key commands: %s", strerror(-rc));
	/* Scrape families of health checks, ejections, breakers and admission (docs/metrics.md). */
	if ((rc = health_register_metrics(health, metrics)))
		log_warn("metrics: health: %s", strerror(-rc));
	/* Retries per pool, read from the live configuration at each scrape (docs/retries.md). */
	if ((rc = retry_register_metrics(&agent, metrics)))
		log_warn("metrics: retries: %s", strerror(-rc));
	if ((rc = gate_register_metrics(gate, metrics)))
		log_warn("metrics: gate: %s", strerror(-rc));
	rc = workers_start(&ws, snap, nworkers, alog);
	if (rc) {
		log_err("start-up failed: %s", strerror(-rc));
		control_close(ctl);
		guard_stop(guard);
		gate_stop(gate);
		goto fail_early;
	}
	/* Workers only report to the guard; a release store pairs with their first load. */
	for (unsigned i = 0; i < ws.n; i++)
		__atomic_store_n(&ws.workers[i].guard, guard, __ATOMIC_RELEASE);
	/* Until this store a worker answers 503 on routes with auth or limits (fail closed). */
	for (unsigned i = 0; i < ws.n; i++)
		__atomic_store_n(&ws.workers[i].gate, gate, __ATOMIC_RELEASE);
	agent.guard = guard;
	agent.gate = gate; /* status reads the key store's counts (gate_status) */
	/* Live reload (SIGHUP, `clawctl reload`): the running config starts as the first one. */
	snapshot_get(snap);
	agent.live = snap;
	{
		struct reload_fixed fx = { .health = health, .brt = brt, .gate_on = gate != NULL,
					   .gate = gate };

		if ((rc = reload_create(&reloader, &agent, &fx)))
			log_warn("reload: %s: reloading is off", strerror(-rc));
	}
	if (reloader && ctl && (rc = reload_register_commands(reloader, ctl)))
		log_warn("control: reload command: %s", strerror(-rc));
	/* backends add/remove publish through the reloader and are saved with drains and weights. */
	backends_rt_attach(brt, &agent, reloader, health);
	if (health && ctl && (rc = backends_rt_register_commands(brt, ctl)))
		log_warn("control: backends add/remove: %s", strerror(-rc));
	if (reloader && (rc = reload_register_metrics(reloader, metrics)))
		log_warn("metrics: reload counters: %s", strerror(-rc));
	atomic_store(&agent.state, AGENT_RUNNING);
	if ((rc = admin_start(&admin, &cfg->admin, &agent, err, sizeof(err)))) {
		log_err("%s", err);
		atomic_store(&agent.state, AGENT_DRAINING);
		control_close(ctl);
		workers_stop(&ws);
		guard_stop(guard);
		gate_stop(gate);
		tls_stop(tls);
		metrics_free(metrics);
		reload_free(reloader);
		backends_rt_free(brt);
		snapshot_put(agent.live);
		snapshot_put(snap);
		alog_close(alog);
		return 1;
	}
	/* Binary upgrade (SIGUSR2, `clawctl upgrade`): the listeners go to the new process. */
	if ((rc = upgrade_create(&upgrader, &agent, reloader, admin)))
		log_warn("upgrade: %s: binary upgrades are off", strerror(-rc));
	else if (ctl && (rc = upgrade_register_commands(upgrader, ctl)))
		log_warn("control: upgrade command: %s", strerror(-rc));
	if (ctl && (rc = control_start(ctl))) {
		log_err("control socket: %s", strerror(-rc));
		control_close(ctl);
		ctl = NULL;
	}
	if (upgrade_is_child()) {
		/* Ready: the old process commits, we take the control socket path and the pid file. */
		if ((rc = upgrade_child_ready(ctl, cfg->control_socket, cfg->pid_file, err, sizeof(err)))) {
			log_err("%s; stopping", err);
			exit_code = 1;
			goto stop;
		}
	} else if (cfg->pid_file && (rc = write_pid_file(cfg->pid_file)))
		log_warn("pid_file %s: %s", cfg->pid_file, strerror(-rc));
	for (unsigned i = 0; i < cfg->nlisteners; i++) {
		char addr[NET_ADDR_STRLEN];

		log_notice("listener %s: listening on %s", cfg->listeners[i].name,
			   net_addr_format((const struct sockaddr *)&cfg->listeners[i].addr.ss, addr,
					   sizeof(addr)));
	}
	log_notice("clawd %s started: %u workers, config %s", OPENCLAW_VERSION, nworkers, path);
	sdnotify_ready(); /* systemd Type=notify (an upgraded clawd said MAINPID= already) */

	for (;;) {
		/* Signals only: the health thread adopts pools rebuilt by a reload itself. */
		struct timespec tick = { 0, 100 * 1000000 };
		int sig = sigtimedwait(&sigs, NULL, &tick);

		if (upgrade_handed_over(upgrader)) {
			log_notice("upgrade: pid %d took over; stopping accepting, in-flight requests get up "
				   "to %llu ms", (int)upgrade_new_pid(upgrader),
				   (unsigned long long)cfg->drain_ms);
			break;
		}
		if (sig == SIGUSR2) {
			char msg[1024];

			/* Start the binary clawd was started from; main leaves the loop on success. */
			log_notice("SIGUSR2: upgrading the binary");
			if (upgrader)
				upgrade_run(upgrader, NULL, UPGRADE_DEFAULT_TIMEOUT_MS, msg, sizeof(msg));
			continue;
		}
		if (sig < 0)
			continue;
		if (sig == SIGUSR1) {
			/* logrotate renamed the file: the writer reopens the path, no line is lost. */
			log_notice("SIGUSR1: reopening the access log");
			alog_reopen(alog);
			continue;
		}
		if (sig == SIGHUP) {
			char msg[1024];

			log_notice("SIGHUP: reloading %s", path);
			sdnotify_reloading();
			if (reloader)
				reload_run(reloader, msg, sizeof(msg)); /* it logs the outcome */
			else
				log_err("SIGHUP: reloading is off (see the start-up log)");
			sdnotify_ready(); /* a refused reload keeps serving the old config */
			continue;
		}
		log_notice("%s: stopping; in-flight requests get up to %llu ms", strsignal(sig),
			   (unsigned long long)cfg->drain_ms);
		sdnotify_stopping(); /* not after a handover: the service goes on in the new process */
		break;
	}
stop:
	/* Only while it names us: after an upgrade it names the new process. */
	upgrade_pid_file_release(cfg->pid_file);
	if (upgrade_handed_over(upgrader)) {
		/* The new process answers /metrics and /readyz on the same socket now. */
		admin_stop(admin);
		admin = NULL;
	}
	/* /readyz answers 503 from here on, so balancers stop sending before the listeners close. */
	atomic_store(&agent.state, AGENT_DRAINING);
	/* A scrape that started before the store ends before the workers go; later ones skip them. */
	pthread_mutex_lock(&agent.scrape_lock);
	pthread_mutex_unlock(&agent.scrape_lock);
	/* The control thread reads worker state: it stops first. */
	control_close(ctl);
	health_stop(health);
	workers_stop(&ws);
	/* The admin listener reads worker state too, and reports the drain while it runs. */
	admin_stop(admin);
	/* No connection or scrape uses the TLS contexts any more. */
	tls_stop(tls);
	/* Workers are gone: the last quota counters and last-used times go to the store. */
	gate_stop(gate);
	/* Detaches only when no connection is still spliced. */
	splice_stop();
	/* Last: it keeps its pins, so the interfaces stay guarded after we exit. */
	guard_stop(guard);
	log_notice("stopped");
	metrics_free(metrics);
	reload_free(reloader);
	upgrade_free(upgrader);
	backends_rt_free(brt);
	snapshot_put(agent.live);
	snapshot_put(snap);
	alog_close(alog);
	return exit_code;

fail_early:
	backends_rt_free(brt);
	tls_stop(tls);
	metrics_free(metrics);
	snapshot_put(snap);
	alog_close(alog);
	return 1;
}
