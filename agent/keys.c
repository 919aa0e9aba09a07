/* agent/keys.c — API key tokens (format, parse, SHA-256) and their SQLite store, refused when its file is too open. */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sqlite3.h>

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

struct keystore {
	sqlite3 *db;
	char path[512];
};

static int b32_val(char c)
{
	if (c >= 'a' && c <= 'z')
		return c - 'a';
	if (c >= '2' && c <= '7')
		return c - '2' + 26;
	return -1;
}

/* Encodes nbits of in (MSB first) as ceil(nbits/5) characters. */
static void b32_encode(const uint8_t *in, size_t nbits, char *out)
{
	size_t nchars = (nbits + 4) / 5;

	for (size_t i = 0; i < nchars; i++) {
		unsigned v = 0;

		for (size_t b = 0; b < 5; b++) {
			size_t bit = i * 5 + b;

			v <<= 1;
			if (bit < nbits)
				v |= (in[bit / 8] >> (7 - bit % 8)) & 1;
		}
		out[i] = b32[v];
	}
	out[nchars] = '\0';
}

/* Decodes nchars into nbits of out; -EINVAL on a bad character or a non-zero pad bit. */
static int b32_decode(const char *in, size_t nchars, uint8_t *out, size_t nbits)
{
	memset(out, 0, (nbits + 7) / 8);
	for (size_t i = 0; i < nchars; i++) {
		int v = b32_val(in[i]);

		if (v < 0)
			return -EINVAL;
		for (size_t b = 0; b < 5; b++) {
			size_t bit = i * 5 + b;
			unsigned one = ((unsigned)v >> (4 - b)) & 1;

			if (bit >= nbits) {
				if (one)
					return -EINVAL; /* one token, one spelling */
				continue;
			}
			if (one)
				out[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
		}
	}
	return 0;
}

bool keys_id_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (b32_val(s[i]) < 0)
			return false;
	return i == KEYS_ID_LEN;
}

int keys_parse(const char *tok, size_t len, char id[KEYS_ID_LEN + 1],
	       uint8_t secret[KEYS_SECRET_BYTES])
{
	if (len != KEYS_TOKEN_LEN || memcmp(tok, KEYS_PREFIX, 4) || tok[4 + KEYS_ID_LEN] != '_')
		return -EINVAL;
	for (size_t i = 0; i < KEYS_ID_LEN; i++)
		if (b32_val(tok[4 + i]) < 0)
			return -EINVAL;
	if (b32_decode(tok + 4 + KEYS_ID_LEN + 1, KEYS_SECRET_LEN, secret, KEYS_SECRET_BYTES * 8))
		return -EINVAL;
	memcpy(id, tok + 4, KEYS_ID_LEN);
	id[KEYS_ID_LEN] = '\0';
	return 0;
}

void keys_format(const char *id, const uint8_t secret[KEYS_SECRET_BYTES], char *out)
{
	memcpy(out, KEYS_PREFIX, 4);
	memcpy(out + 4, id, KEYS_ID_LEN);
	out[4 + KEYS_ID_LEN] = '_';
	b32_encode(secret, KEYS_SECRET_BYTES * 8, out + 4 + KEYS_ID_LEN + 1);
}

static int fill_random(void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = getrandom((char *)buf + got, len - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		got += (size_t)n;
	}
	return 0;
}

int keys_generate(char id[KEYS_ID_LEN + 1], uint8_t secret[KEYS_SECRET_BYTES])
{
	uint8_t raw[8];
	int rc = fill_random(raw, sizeof(raw));

	if (!rc)
		rc = fill_random(secret, KEYS_SECRET_BYTES);
	if (rc)
		return rc;
	b32_encode(raw, KEYS_ID_LEN * 5, id);
	return 0;
}

void keys_hash(const uint8_t secret[KEYS_SECRET_BYTES], uint8_t out[KEYS_HASH_LEN])
{
	unsigned len = KEYS_HASH_LEN;

	/* One-shot EVP digest: no context to leak, no failure mode for SHA-256 on a buffer. */
	if (!EVP_Digest(secret, KEYS_SECRET_BYTES, out, &len, EVP_sha256(), NULL))
		memset(out, 0xff, KEYS_HASH_LEN); /* never equal to a stored hash of a real secret */
}

bool keys_hash_eq(const uint8_t a[KEYS_HASH_LEN], const uint8_t b[KEYS_HASH_LEN])
{
	return CRYPTO_memcmp(a, b, KEYS_HASH_LEN) == 0;
}

/* ---- the store ------------------------------------------------------------------ */

/* keys.db and its companions must be ours and closed to everyone else. */
static int check_file(const char *path, bool must_exist, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT && !must_exist)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file (refusing to use it as the key store)",
			 path);
		return -EPERM;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "%s: owned by uid %u, not by clawd's uid %u (chown it or remove it)",
			 path, (unsigned)st.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen, "%s: mode %04o is too open: the key store must be 0600 (chmod 600 %s)",
			 path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	return 0;
}

static int exec_sql(struct keystore *ks, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;

	if (sqlite3_exec(ks->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		if (err)
			snprintf(err, errlen, "%s: %s", ks->path, msg ? msg : "sqlite error");
		sqlite3_free(msg);
		return -EIO;
	}
	return 0;
}

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS keys ("
	" id TEXT PRIMARY KEY, name TEXT NOT NULL, tier TEXT NOT NULL, scopes TEXT NOT NULL,"
	" rate_count INTEGER NOT NULL DEFAULT 0, rate_per_ms INTEGER NOT NULL DEFAULT 0,"
	" burst INTEGER NOT NULL DEFAULT 0, quota_day INTEGER, quota_month INTEGER,"
	" created INTEGER NOT NULL, expires INTEGER NOT NULL DEFAULT 0,"
	" revoked INTEGER NOT NULL DEFAULT 0, last_used INTEGER NOT NULL DEFAULT 0,"
	" hash BLOB NOT NULL, old_hash BLOB, old_until INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS usage ("
	" id TEXT PRIMARY KEY, day INTEGER NOT NULL, day_count INTEGER NOT NULL,"
	" month INTEGER NOT NULL, month_count INTEGER NOT NULL);";

int keys_open(const char *dir, struct keystore **out, char *err, size_t errlen)
{
	struct keystore *ks;
	char side[600];
	int fd, rc;

	*out = NULL;
	ks = calloc(1, sizeof(*ks));
	if (!ks) {
		snprintf(err, errlen, "key store: out of memory");
		return -ENOMEM;
	}
	if ((size_t)snprintf(ks->path, sizeof(ks->path), "%s/%s", dir, KEYS_DB_FILE) >=
	    sizeof(ks->path)) {
		snprintf(err, errlen, "key store: state_dir path too long");
		free(ks);
		return -ENAMETOOLONG;
	}
	rc = check_file(ks->path, false, err, errlen);
	for (const char *sfx = "-wal"; !rc && sfx; sfx = strcmp(sfx, "-wal") ? NULL : "-shm") {
		snprintf(side, sizeof(side), "%s%s", ks->path, sfx);
		rc = check_file(side, false, err, errlen);
	}
	if (rc)
		goto fail;
	/* Created here with 0600 so SQLite never makes it with the umask's mode; its
	 * -wal and -shm files copy the database file's permissions. */
	fd = open(ks->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", ks->path, strerror(-rc));
		goto fail;
	}
	close(fd);
	if ((rc = check_file(ks->path, true, err, errlen)))
		goto fail;
	if (sqlite3_open_v2(ks->path, &ks->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
			    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", ks->path,
			 ks->db ? sqlite3_errmsg(ks->db) : "cannot open");
		rc = -EIO;
		goto fail;
	}
	sqlite3_busy_timeout(ks->db, 2000);
	if ((rc = exec_sql(ks, "PRAGMA journal_mode=WAL;", err, errlen)) ||
	    (rc = exec_sql(ks, "PRAGMA synchronous=NORMAL;", err, errlen)) ||
	    (rc = exec_sql(ks, schema, err, errlen)))
		goto fail;
	*out = ks;
	return 0;
fail:
	if (ks->db)
		sqlite3_close(ks->db);
	free(ks);
	return rc;
}

void keys_close(struct keystore *ks)
{
	if (!ks)
		return;
	sqlite3_close(ks->db);
	free(ks);
}

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t cap)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	snprintf(out, cap, "%s", s ? (const char *)s : "");
}

static void copy_blob(sqlite3_stmt *st, int col, uint8_t *out)
{
	const void *b = sqlite3_column_blob(st, col);

	if (b && sqlite3_column_bytes(st, col) == KEYS_HASH_LEN)
		memcpy(out, b, KEYS_HASH_LEN);
	else
		memset(out, 0, KEYS_HASH_LEN);
}

#define KEY_COLS "id, name, tier, scopes, rate_count, rate_per_ms, burst, quota_day, quota_month," \
		 " created, expires, revoked, last_used, hash, old_hash, old_until"

static void row_to_record(sqlite3_stmt *st, struct key_record *r)
{
	memset(r, 0, sizeof(*r));
	copy_col(st, 0, r->id, sizeof(r->id));
	copy_col(st, 1, r->name, sizeof(r->name));
	copy_col(st, 2, r->tier, sizeof(r->tier));
	copy_col(st, 3, r->scopes, sizeof(r->scopes));
	r->rate_count = (uint64_t)sqlite3_column_int64(st, 4);
	r->rate_per_ms = (uint64_t)sqlite3_column_int64(st, 5);
	r->burst = (uint64_t)sqlite3_column_int64(st, 6);
	r->has_quota_day = sqlite3_column_type(st, 7) != SQLITE_NULL;
	r->quota_day = (uint64_t)sqlite3_column_int64(st, 7);
	r->has_quota_month = sqlite3_column_type(st, 8) != SQLITE_NULL;
	r->quota_month = (uint64_t)sqlite3_column_int64(st, 8);
	r->created = sqlite3_column_int64(st, 9);
	r->expires = sqlite3_column_int64(st, 10);
	r->revoked = sqlite3_column_int64(st, 11);
	r->last_used = sqlite3_column_int64(st, 12);
	copy_blob(st, 13, r->hash);
	copy_blob(st, 14, r->old_hash);
	r->old_until = sqlite3_column_int64(st, 15);
}

/* Binds every column but id's position is given: insert puts id first, update last. */
static void bind_record(sqlite3_stmt *st, const struct key_record *r, int first)
{
	int i = first;

	sqlite3_bind_text(st, i++, r->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, i++, r->tier, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, i++, r->scopes, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->rate_count);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->rate_per_ms);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->burst);
	if (r->has_quota_day)
		sqlite3_bind_int64(st, i++, (sqlite3_int64)r->quota_day);
	else
		sqlite3_bind_null(st, i++);
	if (r->has_quota_month)
		sqlite3_bind_int64(st, i++, (sqlite3_int64)r->quota_month);
	else
		sqlite3_bind_null(st, i++);
	sqlite3_bind_int64(st, i++, r->created);
	sqlite3_bind_int64(st, i++, r->expires);
	sqlite3_bind_int64(st, i++, r->revoked);
	sqlite3_bind_int64(st, i++, r->last_used);
	sqlite3_bind_blob(st, i++, r->hash, KEYS_HASH_LEN, SQLITE_TRANSIENT);
	if (r->old_until)
		sqlite3_bind_blob(st, i++, r->old_hash, KEYS_HASH_LEN, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i++);
	sqlite3_bind_int64(st, i++, r->old_until);
}

static int step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : (rc == SQLITE_CONSTRAINT ? -EEXIST : -EIO);
}

int keys_insert(struct keystore *ks, const struct key_record *r)
{
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(ks->db, "INSERT INTO keys (" KEY_COLS ") VALUES "
				       "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, r->id, -1, SQLITE_TRANSIENT);
	bind_record(st, r, 2);
	return step_done(st);
}

int keys_update(struct keystore *ks, const struct key_record *r)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(ks->db, "UPDATE keys SET name=?, tier=?, scopes=?, rate_count=?,"
				       " rate_per_ms=?, burst=?, quota_day=?, quota_month=?, created=?,"
				       " expires=?, revoked=?, last_used=?, hash=?, old_hash=?,"
				       " old_until=? WHERE id=?", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	bind_record(st, r, 1);
	sqlite3_bind_text(st, 16, r->id, -1, SQLITE_TRANSIENT);
	rc = step_done(st);
	if (!rc && sqlite3_changes(ks->db) == 0)
		return -ENOENT;
	return rc;
}

int keys_get(struct keystore *ks, const char *id, struct key_record *r)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(ks->db, "SELECT " KEY_COLS " FROM keys WHERE id=?", -1, &st, NULL) !=
	    SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		row_to_record(st, r);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
}

int keys_each(struct keystore *ks, int (*fn)(void *arg, const struct key_record *r), void *arg)
{
	struct key_record *r = malloc(sizeof(*r));
	sqlite3_stmt *st;
	int rc, ret = 0;

	if (!r)
		return -ENOMEM;
	if (sqlite3_prepare_v2(ks->db, "SELECT " KEY_COLS " FROM keys ORDER BY created, id", -1, &st,
			       NULL) != SQLITE_OK) {
		free(r);
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_to_record(st, r);
		if ((ret = fn(arg, r)))
			break;
	}
	if (!ret && rc != SQLITE_DONE)
		ret = -EIO;
	sqlite3_finalize(st);
	free(r);
	return ret;
}

int keys_touch(struct keystore *ks, const char *const *ids, const int64_t *when, size_t n)
{
	sqlite3_stmt *st;
	int rc = 0;

	if (!n)
		return 0;
	if (exec_sql(ks, "BEGIN", NULL, 0))
		return -EIO;
	if (sqlite3_prepare_v2(ks->db, "UPDATE keys SET last_used=? WHERE id=? AND last_used<?", -1,
			       &st, NULL) != SQLITE_OK) {
		exec_sql(ks, "ROLLBACK", NULL, 0);
		return -EIO;
	}
	for (size_t i = 0; i < n && !rc; i++) {
		sqlite3_bind_int64(st, 1, when[i]);
		sqlite3_bind_text(st, 2, ids[i], -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, when[i]);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = -EIO;
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	if (exec_sql(ks, rc ? "ROLLBACK" : "COMMIT", NULL, 0))
		rc = -EIO;
	return rc;
}

int keys_usage_load(struct keystore *ks, int (*fn)(void *arg, const struct key_usage_row *u),
		    void *arg)
{
	struct key_usage_row u;
	sqlite3_stmt *st;
	int rc, ret = 0;

	if (sqlite3_prepare_v2(ks->db, "SELECT id, day, day_count, month, month_count FROM usage", -1,
			       &st, NULL) != SQLITE_OK)
		return -EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&u, 0, sizeof(u));
		copy_col(st, 0, u.id, sizeof(u.id));
		u.day = (uint32_t)sqlite3_column_int64(st, 1);
		u.day_count = (uint64_t)sqlite3_column_int64(st, 2);
		u.month = (uint32_t)sqlite3_column_int64(st, 3);
		u.month_count = (uint64_t)sqlite3_column_int64(st, 4);
		if ((ret = fn(arg, &u)))
			break;
	}
	if (!ret && rc != SQLITE_DONE)
		ret = -EIO;
	sqlite3_finalize(st);
	return ret;
}

int keys_usage_save(struct keystore *ks, const struct key_usage_row *rows, size_t n)
{
	sqlite3_stmt *st;
	int rc = 0;

	if (!n)
		return 0;
	if (exec_sql(ks, "BEGIN", NULL, 0))
		return -EIO;
	if (sqlite3_prepare_v2(ks->db, "INSERT OR REPLACE INTO usage (id, day, day_count, month,"
				       " month_count) VALUES (?,?,?,?,?)", -1, &st, NULL) != SQLITE_OK) {
		exec_sql(ks, "ROLLBACK", NULL, 0);
		return -EIO;
	}
	for (size_t i = 0; i < n && !rc; i++) {
		sqlite3_bind_text(st, 1, rows[i].id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, rows[i].day);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)rows[i].day_count);
		sqlite3_bind_int64(st, 4, rows[i].month);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)rows[i].month_count);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = -EIO;
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	if (exec_sql(ks, rc ? "ROLLBACK" : "COMMIT", NULL, 0))
		rc = -EIO;
	return rc;
}
