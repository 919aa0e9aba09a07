/* selftests/unit/test_keys.c — API key tokens (format, parse, canonical spelling), SHA-256 and constant-time compare, the store's file checks. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys.h"
#include "test.h"

static char dir[64];

static void mkdir_tmp(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test-keys-XXXXXX");
	if (!mkdtemp(dir))
		dir[0] = '\0';
}

static void rm_tmp(void)
{
	char p[128];

	for (const char *f = "keys.db"; f; f = !strcmp(f, "keys.db") ? "keys.db-wal" :
						   !strcmp(f, "keys.db-wal") ? "keys.db-shm" : NULL) {
		snprintf(p, sizeof(p), "%s/%s", dir, f);
		unlink(p);
	}
	rmdir(dir);
}

static void test_format_parse_roundtrip(void)
{
	char id[KEYS_ID_LEN + 1], id2[KEYS_ID_LEN + 1], tok[KEYS_TOKEN_LEN + 1];
	uint8_t s[KEYS_SECRET_BYTES], s2[KEYS_SECRET_BYTES];

	ASSERT_EQ(keys_generate(id, s), 0);
	ASSERT_TRUE(keys_id_valid(id));
	keys_format(id, s, tok);
	ASSERT_EQ(strlen(tok), KEYS_TOKEN_LEN);
	ASSERT_TRUE(!strncmp(tok, "ocl_", 4));
	ASSERT_TRUE(tok[KEYS_TOKEN_LEN - 1] == 'a' || tok[KEYS_TOKEN_LEN - 1] == 'q');
	ASSERT_EQ(keys_parse(tok, strlen(tok), id2, s2), 0);
	ASSERT_STREQ(id2, id);
	ASSERT_TRUE(!memcmp(s, s2, sizeof(s)));
}

static void test_known_vector(void)
{
	uint8_t s[KEYS_SECRET_BYTES];
	char tok[KEYS_TOKEN_LEN + 1];

	memset(s, 0xff, sizeof(s));
	keys_format("abcdefghij23", s, tok);
	/* 256 one bits: 51 '7's (31) and a last character carrying one bit: 'q' (16). */
	ASSERT_STREQ(tok, "ocl_abcdefghij23_777777777777777777777777777777777777777777777777777q");
	memset(s, 0, sizeof(s));
	keys_format("abcdefghij23", s, tok);
	ASSERT_STREQ(tok + 17, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
}

static void test_parse_rejects(void)
{
	char id[KEYS_ID_LEN + 1];
	uint8_t s[KEYS_SECRET_BYTES];
	const char *good = "ocl_abcdefghij23_777777777777777777777777777777777777777777777777777q";
	char t[128];

	ASSERT_EQ(keys_parse(good, strlen(good), id, s), 0);
	ASSERT_EQ(keys_parse(good, strlen(good) - 1, id, s), -EINVAL);     /* short */
	snprintf(t, sizeof(t), "%sa", good);
	ASSERT_EQ(keys_parse(t, strlen(t), id, s), -EINVAL);               /* long */
	snprintf(t, sizeof(t), "%s", good);
	t[0] = 'O';
	ASSERT_EQ(keys_parse(t, strlen(t), id, s), -EINVAL);               /* prefix */
	snprintf(t, sizeof(t), "%s", good);
	t[16] = '-';
	ASSERT_EQ(keys_parse(t, strlen(t), id, s), -EINVAL);               /* separator */
	snprintf(t, sizeof(t), "%s", good);
	t[5] = 'B';
	ASSERT_EQ(keys_parse(t, strlen(t), id, s), -EINVAL);               /* upper case id */
	snprintf(t, sizeof(t), "%s", good);
	t[20] = '1';
	ASSERT_EQ(keys_parse(t, strlen(t), id, s), -EINVAL);               /* not base32 */
	snprintf(t, sizeof(t), "%s", good);
	t[strlen(t) - 1] = 'r';
	ASSERT_EQ(keys_parse(t, strlen(t), id, s), -EINVAL);               /* pad bits set */
	ASSERT_FALSE(keys_id_valid("abcdefghij2"));
	ASSERT_FALSE(keys_id_valid("abcdefghij231"));
	ASSERT_FALSE(keys_id_valid("abcdefghij21"));
}

static void test_hash_compare(void)
{
	uint8_t a[KEYS_SECRET_BYTES] = { 0 }, b[KEYS_SECRET_BYTES] = { 0 };
	uint8_t ha[KEYS_HASH_LEN], hb[KEYS_HASH_LEN];
	/* SHA-256 of 32 zero bytes. */
	static const uint8_t want[KEYS_HASH_LEN] = {
		0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1, 0x8b, 0x8e, 0x9f, 0x8e, 0x20,
		0x08, 0x97, 0x14, 0x85, 0x6e, 0xe2, 0x33, 0xb3, 0x90, 0x2a, 0x59, 0x1d, 0x0d, 0x5f, 0x29, 0x25,
	};

	keys_hash(a, ha);
	ASSERT_TRUE(!memcmp(ha, want, sizeof(want)));
	keys_hash(b, hb);
	ASSERT_TRUE(keys_hash_eq(ha, hb));
	b[31] = 1;
	keys_hash(b, hb);
	ASSERT_FALSE(keys_hash_eq(ha, hb));
}

static void test_store_roundtrip(void)
{
	struct keystore *ks = NULL;
	struct key_record r = { 0 }, got;
	char err[256];

	mkdir_tmp();
	ASSERT_EQ(keys_open(dir, &ks, err, sizeof(err)), 0);
	snprintf(r.id, sizeof(r.id), "abcdefghij23");
	snprintf(r.name, sizeof(r.name), "alice");
	snprintf(r.tier, sizeof(r.tier), "free");
	snprintf(r.scopes, sizeof(r.scopes), "a,b");
	r.created = 100;
	r.hash[0] = 7;
	ASSERT_EQ(keys_insert(ks, &r), 0);
	ASSERT_EQ(keys_insert(ks, &r), -EEXIST);
	ASSERT_EQ(keys_get(ks, "abcdefghij23", &got), 0);
	ASSERT_STREQ(got.name, "alice");
	ASSERT_STREQ(got.scopes, "a,b");
	ASSERT_EQ(got.hash[0], 7);
	ASSERT_FALSE(got.has_quota_day);
	got.revoked = 200;
	ASSERT_EQ(keys_update(ks, &got), 0);
	ASSERT_EQ(keys_get(ks, "abcdefghij23", &got), 0);
	ASSERT_EQ(got.revoked, 200);
	ASSERT_EQ(keys_get(ks, "zzzzzzzzzzzz", &got), -ENOENT);
	keys_close(ks);
	{
		char p[128];
		struct stat st;

		snprintf(p, sizeof(p), "%s/keys.db", dir);
		ASSERT_EQ(stat(p, &st), 0);
		ASSERT_EQ(st.st_mode & 0777, 0600);
	}
	rm_tmp();
}

static void test_store_refuses_open_modes(void)
{
	struct keystore *ks = NULL;
	char err[256], p[128];
	int fd;

	mkdir_tmp();
	snprintf(p, sizeof(p), "%s/keys.db", dir);
	fd = open(p, O_CREAT | O_WRONLY, 0600);
	close(fd);
	chmod(p, 0644);
	ASSERT_EQ(keys_open(dir, &ks, err, sizeof(err)), -EPERM);
	ASSERT_STRSTR(err, "keys.db: mode 0644 is too open");
	chmod(p, 0640);
	ASSERT_EQ(keys_open(dir, &ks, err, sizeof(err)), -EPERM);
	chmod(p, 0600);
	snprintf(p, sizeof(p), "%s/keys.db-wal", dir);
	fd = open(p, O_CREAT | O_WRONLY, 0666);
	close(fd);
	chmod(p, 0666);
	ASSERT_EQ(keys_open(dir, &ks, err, sizeof(err)), -EPERM);
	ASSERT_STRSTR(err, "keys.db-wal: mode 0666");
	unlink(p);
	ASSERT_EQ(keys_open(dir, &ks, err, sizeof(err)), 0);
	keys_close(ks);
	rm_tmp();
}

int main(void)
{
	RUN(test_format_parse_roundtrip);
	RUN(test_known_vector);
	RUN(test_parse_rejects);
	RUN(test_hash_compare);
	RUN(test_store_roundtrip);
	RUN(test_store_refuses_open_modes);
	return test_done();
}
