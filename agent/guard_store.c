/* agent/guard_store.c — guard.json: the allow/block entries that must outlive clawd, written atomically, read back with fresh expiries. */
#include "guard_store.h"
#include "fileio.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jsonr.h"
#include "jsonw.h"
#include "openclaw/guard.h"

#define STORE_VERSION 1
#define STORE_MAX_BYTES (64u << 20) /* 262144 entries per list, four lists, with room */

char *guard_cidr_format(const struct net_cidr *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (!inet_ntop(c->family, c->addr, a, sizeof(a)))
		snprintf(a, sizeof(a), "?");
	snprintf(buf, len, "%s/%u", a, c->prefix);
	return buf;
}

const char *guard_origin_name(uint32_t origin)
{
	switch (origin) {
	case GUARD_ORIGIN_CONFIG:
		return "config";
	case GUARD_ORIGIN_MANUAL:
		return "manual";
	case GUARD_ORIGIN_AUTO:
		return "auto";
	}
	return NULL;
}

static int origin_parse(const char *s, uint32_t *out)
{
	static const uint32_t all[] = { GUARD_ORIGIN_CONFIG, GUARD_ORIGIN_MANUAL, GUARD_ORIGIN_AUTO };

	for (size_t i = 0; s && i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcmp(s, guard_origin_name(all[i]))) {
			*out = all[i];
			return 0;
		}
	return -EINVAL;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Renders the document; grows the buffer until it fits (reasons may escape to 6x). */
static char *render(const struct guard_entry *v, size_t n, long *outlen)
{
	size_t cap = 1024 + n * 512;

	for (;;) {
		char *buf = malloc(cap), cidr[GUARD_CIDR_STRLEN];
		struct jsonw w;
		long len;

		if (!buf)
			return NULL;
		jsonw_init(&w, buf, cap);
		jsonw_obj_begin(&w);
		jsonw_u64(&w, "version", STORE_VERSION);
		jsonw_arr_begin(&w, "entries");
		for (size_t i = 0; i < n; i++) {
			jsonw_obj_begin(&w);
			jsonw_str(&w, "list", v[i].list == GUARD_LIST_ALLOW ? "allow" : "block");
			jsonw_str(&w, "cidr", guard_cidr_format(&v[i].cidr, cidr, sizeof(cidr)));
			jsonw_str(&w, "source", guard_origin_name(v[i].origin));
			jsonw_str(&w, "reason", v[i].reason);
			if (v[i].expires_ms)
				jsonw_i64(&w, "expires_ms", v[i].expires_ms);
			else
				jsonw_null(&w, "expires_ms");
			jsonw_obj_end(&w);
		}
		jsonw_arr_end(&w);
		jsonw_obj_end(&w);
		len = jsonw_finish(&w);
		if (len >= 0 && (size_t)len + 1 < cap) {
			buf[len++] = '\n';
			*outlen = len;
			return buf;
		}
		free(buf);
		cap *= 4;
	}
}

int guard_store_save(const char *path, const struct guard_entry *v, size_t n, char *err,
		     size_t errlen)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	long len = 0;
	char *buf;
	int fd, rc;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	buf = render(v, n, &len);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
		free(buf);
		return rc;
	}
	/* The umask may have taken bits away, never added any; make it exact anyway. */
	rc = fchmod(fd, 0600) < 0 ? -errno : 0;
	if (!rc)
		rc = write_all(fd, buf, (size_t)len);
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	free(buf);
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		unlink(tmp);
		return rc;
	}
	/* The rename itself must reach the disk before we call the entry saved. */
	snprintf(dir, sizeof(dir), "%s", path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	/* State: ours alone (0600, our uid), never through a symlink. ENOENT is for the caller. */
	return fileio_read(path, STORE_MAX_BYTES, FILEIO_PRIVATE | FILEIO_OWNED | FILEIO_NOFOLLOW,
			   out, len, NULL, err, errlen);
}

/* One member of "entries"; idx only names it in messages. */
static int parse_entry(const struct jsonr *j, const struct jsonr_node *o, size_t idx,
		       struct guard_entry *e, const char *path, char *err, size_t errlen)
{
	const char *list = jsonr_get_str(j, o, "list"), *cidr = jsonr_get_str(j, o, "cidr");
	const char *source = jsonr_get_str(j, o, "source"), *reason = jsonr_get_str(j, o, "reason");
	const struct jsonr_node *exp = jsonr_get(j, o, "expires_ms");
	const char *why = "invalid";

	memset(e, 0, sizeof(*e));
	if (o->type != JSONR_OBJECT || !list || !cidr || !source) {
		snprintf(err, errlen, "%s: entries[%zu]: needs list, cidr and source", path, idx);
		return -EINVAL;
	}
	if (!strcmp(list, "allow"))
		e->list = GUARD_LIST_ALLOW;
	else if (!strcmp(list, "block"))
		e->list = GUARD_LIST_BLOCK;
	else {
		snprintf(err, errlen, "%s: entries[%zu].list: \"%.32s\" is not allow or block", path,
			 idx, list);
		return -EINVAL;
	}
	if (net_cidr_parse(cidr, &e->cidr, &why)) {
		snprintf(err, errlen, "%s: entries[%zu].cidr: \"%.64s\": %s", path, idx, cidr, why);
		return -EINVAL;
	}
	if (origin_parse(source, &e->origin)) {
		snprintf(err, errlen, "%s: entries[%zu].source: \"%.32s\" is not config, manual or auto",
			 path, idx, source);
		return -EINVAL;
	}
	if (reason)
		snprintf(e->reason, sizeof(e->reason), "%s", reason);
	if (exp && exp->type == JSONR_NUMBER && exp->is_int && exp->i > 0)
		e->expires_ms = exp->i;
	else if (exp && exp->type != JSONR_NULL) {
		snprintf(err, errlen, "%s: entries[%zu].expires_ms: expected milliseconds or null", path,
			 idx);
		return -EINVAL;
	}
	return 0;
}

int guard_store_load(const char *path, int64_t now_wall_ms, uint64_t now_mono_ns,
		     struct guard_entry **out, size_t *nout, char *err, size_t errlen)
{
	const struct jsonr_node *arr, *it;
	struct guard_entry *v = NULL;
	struct jsonr_node *nodes = NULL;
	char *text = NULL, *strbuf = NULL;
	struct jsonr j;
	size_t len = 0, n = 0, idx = 0;
	uint32_t cap;
	int rc;

	*out = NULL;
	*nout = 0;
	rc = read_file(path, &text, &len, err, errlen);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	/* Every JSON value takes at least two bytes with its separator. */
	cap = (uint32_t)(len / 2 + 16);
	nodes = calloc(cap, sizeof(*nodes));
	strbuf = malloc(len + 1);
	if (!nodes || !strbuf) {
		snprintf(err, errlen, "%s: out of memory", path);
		rc = -ENOMEM;
		goto out;
	}
	if (jsonr_parse(&j, text, len, nodes, cap, strbuf, len + 1)) {
		snprintf(err, errlen, "%s: %s at byte %zu", path, j.err, j.err_off);
		rc = -EINVAL;
		goto out;
	}
	if (j.nodes[0].type != JSONR_OBJECT || jsonr_get_int(&j, &j.nodes[0], "version", 0) != STORE_VERSION ||
	    !(arr = jsonr_get(&j, &j.nodes[0], "entries")) || arr->type != JSONR_ARRAY) {
		snprintf(err, errlen, "%s: not a version %d guard state file", path, STORE_VERSION);
		rc = -EINVAL;
		goto out;
	}
	v = calloc(arr->len ? arr->len : 1, sizeof(*v));
	if (!v) {
		snprintf(err, errlen, "%s: out of memory", path);
		rc = -ENOMEM;
		goto out;
	}
	for (it = jsonr_child(&j, arr); it; it = jsonr_next(&j, it), idx++) {
		rc = parse_entry(&j, it, idx, &v[n], path, err, errlen);
		if (rc)
			goto out;
		if (v[n].expires_ms) {
			if (v[n].expires_ms <= now_wall_ms)
				continue;
			v[n].expires_ns = now_mono_ns + (uint64_t)(v[n].expires_ms - now_wall_ms) * 1000000ULL;
		}
		n++;
	}
	*out = v;
	*nout = n;
	v = NULL;
	rc = 0;
out:
	free(v);
	free(nodes);
	free(strbuf);
	free(text);
	return rc;
}
