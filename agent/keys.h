/* agent/keys.h — API keys: the token format, secret hashing, and the SQLite key store (WAL, 0600). */
#ifndef OPENCLAW_KEYS_H
#define OPENCLAW_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A key is one token: "ocl_" ID "_" SECRET (docs/api-keys.md).
 *   ID      12 characters of RFC 4648 base32, lower case ([a-z2-7]): 60 random
 *           bits, public (logs, metrics, clawctl, upstream header)
 *   SECRET  52 characters of the same alphabet: 32 bytes from getrandom(2),
 *           the last character carrying 1 bit and 4 zero bits (so 'a' or 'q')
 * Regex for secret scanners: \bocl_[a-z2-7]{12}_[a-z2-7]{51}[aq]\b
 * Only SHA-256 of the 32 secret bytes is stored.
 */
#define KEYS_PREFIX "ocl_"
#define KEYS_ID_LEN 12
#define KEYS_SECRET_BYTES 32
#define KEYS_SECRET_LEN 52
#define KEYS_TOKEN_LEN (4 + KEYS_ID_LEN + 1 + KEYS_SECRET_LEN) /* 69 */
#define KEYS_HASH_LEN 32
#define KEYS_NAME_MAX 128
#define KEYS_TIER_MAX 64
#define KEYS_SCOPES_MAX 1024 /* comma-separated route names */
#define KEYS_DB_FILE "keys.db"

/* Splits a token. Returns 0, or -EINVAL when it is not a well-formed key (nothing about why leaks). */
int keys_parse(const char *tok, size_t len, char id[KEYS_ID_LEN + 1],
	       uint8_t secret[KEYS_SECRET_BYTES]);

/* Writes the token of id and secret into out (at least KEYS_TOKEN_LEN + 1 bytes). */
void keys_format(const char *id, const uint8_t secret[KEYS_SECRET_BYTES], char *out);

/* New random id and secret from getrandom(2). Returns 0 or a negative errno. */
int keys_generate(char id[KEYS_ID_LEN + 1], uint8_t secret[KEYS_SECRET_BYTES]);

/* SHA-256 of the secret bytes (OpenSSL EVP). */
void keys_hash(const uint8_t secret[KEYS_SECRET_BYTES], uint8_t out[KEYS_HASH_LEN]);

/* Constant-time comparison of two hashes (CRYPTO_memcmp). */
bool keys_hash_eq(const uint8_t a[KEYS_HASH_LEN], const uint8_t b[KEYS_HASH_LEN]);

/* True when s is 12 characters of the id alphabet. */
bool keys_id_valid(const char *s);

/* One key as stored. Times are wall-clock seconds; 0 = never/none. */
struct key_record {
	char id[KEYS_ID_LEN + 1];
	char name[KEYS_NAME_MAX + 1];   /* owner or purpose */
	char tier[KEYS_TIER_MAX + 1];
	char scopes[KEYS_SCOPES_MAX + 1]; /* "r1,r2"; empty = every route */
	uint64_t rate_count, rate_per_ms; /* rate override; count 0 = the tier's */
	uint64_t burst;                   /* 0 = the tier's (or the override rate's count) */
	uint64_t quota_day, quota_month;  /* overrides; 0 = the tier's */
	bool has_quota_day, has_quota_month;
	int64_t created, expires, revoked, last_used;
	uint8_t hash[KEYS_HASH_LEN];
	uint8_t old_hash[KEYS_HASH_LEN]; /* the secret before the last rotation */
	int64_t old_until;               /* old_hash is accepted before this time; 0 = none */
};

/* Persisted quota counters of a key: the UTC day and month they count in. */
struct key_usage_row {
	char id[KEYS_ID_LEN + 1];
	uint32_t day;         /* days since 1970-01-01 UTC */
	uint64_t day_count;
	uint32_t month;       /* year * 12 + month (0-based) */
	uint64_t month_count;
};

struct keystore;

/*
 * Opens (creating when absent, mode 0600) dir/keys.db in WAL mode. Refuses a
 * file that is not regular, not owned by this process's uid, or readable or
 * writable by group or others ("keys.db: mode 0644 is too open ..."), and
 * does the same for its -wal and -shm files. err gets one line.
 */
int keys_open(const char *dir, struct keystore **out, char *err, size_t errlen);
void keys_close(struct keystore *ks);

int keys_insert(struct keystore *ks, const struct key_record *r);
/* -ENOENT when id is unknown. */
int keys_get(struct keystore *ks, const char *id, struct key_record *r);
/* Calls fn for every key (ordered by creation); stops at fn's first non-zero return. */
int keys_each(struct keystore *ks, int (*fn)(void *arg, const struct key_record *r), void *arg);
/* Writes every field of r (by id). -ENOENT when absent. */
int keys_update(struct keystore *ks, const struct key_record *r);
/* last_used of many keys in one transaction. */
int keys_touch(struct keystore *ks, const char *const *ids, const int64_t *when, size_t n);

int keys_usage_load(struct keystore *ks, int (*fn)(void *arg, const struct key_usage_row *u),
		    void *arg);
int keys_usage_save(struct keystore *ks, const struct key_usage_row *rows, size_t n);

#endif
