/* vmtest/e2e_util.c — helpers shared by the guest TLS programs (tls_e2e.c, upstream_tls_e2e.c): sockets, pattern hashing, tls_stat, certificate, clawd runner. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "e2e_util.h"

int e2e_listen_any(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 64) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len)) {
		close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

int e2e_free_port(void)
{
	int port = 0, fd = e2e_listen_any(&port);

	if (fd >= 0)
		close(fd);
	return port;
}

int e2e_connect_port(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 60 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -1;
	}
	return fd;
}

bool e2e_send_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t k = send(fd, c, n, MSG_NOSIGNAL);

		if (k <= 0)
			return false;
		c += k;
		n -= (size_t)k;
	}
	return true;
}

bool e2e_ssl_write_all(SSL *s, const void *p, size_t n)
{
	size_t w;

	while (n) {
		if (SSL_write_ex(s, p, n, &w) != 1)
			return false;
		p = (const char *)p + w;
		n -= w;
	}
	return true;
}

void e2e_pattern(uint8_t *buf, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)((off + i) * 131 + ((off + i) >> 12));
}

EVP_MD_CTX *e2e_sha256_begin(void)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();

	EVP_DigestInit_ex(m, EVP_sha256(), NULL);
	return m;
}

void e2e_sha256_end(EVP_MD_CTX *m, char out[65])
{
	uint8_t md[32];
	unsigned mdlen;

	EVP_DigestFinal_ex(m, md, &mdlen);
	EVP_MD_CTX_free(m);
	for (size_t i = 0; i < sizeof(md); i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

void e2e_pattern_sha256(size_t n, char out[65])
{
	EVP_MD_CTX *m = e2e_sha256_begin();
	uint8_t buf[65536];

	for (size_t off = 0; off < n; off += sizeof(buf)) {
		size_t k = n - off < sizeof(buf) ? n - off : sizeof(buf);

		e2e_pattern(buf, k, off);
		EVP_DigestUpdate(m, buf, k);
	}
	e2e_sha256_end(m, out);
}

long e2e_tls_stat(const char *name)
{
	FILE *f = fopen("/proc/net/tls_stat", "r");
	char key[64];
	long v, out = -1;

	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", key, &v) == 2)
		if (!strcmp(key, name))
			out = v;
	fclose(f);
	return out;
}

int e2e_self_signed(const char *cn, const char *san, const char *cert_path, EVP_PKEY **pk, X509 **x)
{
	X509_NAME *n;
	FILE *f;

	*pk = EVP_EC_gen("P-256");
	*x = X509_new();
	if (!*pk || !*x)
		return -1;
	ASN1_INTEGER_set(X509_get_serialNumber(*x), 1);
	X509_gmtime_adj(X509_getm_notBefore(*x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(*x), 86400);
	X509_set_pubkey(*x, *pk);
	n = X509_get_subject_name(*x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(*x, n);
	if (san) {
		char val[256];
		X509V3_CTX v3;
		X509_EXTENSION *ext;

		snprintf(val, sizeof(val), "DNS:%s", san);
		X509V3_set_ctx(&v3, *x, *x, NULL, NULL, 0);
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, val);
		if (!ext || !X509_add_ext(*x, ext, -1))
			return -1;
		X509_EXTENSION_free(ext);
	}
	if (!X509_sign(*x, *pk, EVP_sha256()))
		return -1;
	f = fopen(cert_path, "w");
	if (!f || !PEM_write_X509(f, *x))
		return -1;
	fclose(f);
	return 0;
}

int e2e_clawd_start(const char *config, const char *log, int port, pid_t *pid)
{
	const char *bin = getenv("CLAWD") ? getenv("CLAWD") : "/vmtest/bin/clawd";

	*pid = fork();
	if (*pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(fd, 1);
		dup2(fd, 2);
		execl(bin, bin, "-c", config, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		int fd = e2e_connect_port(port);

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		usleep(50000);
	}
	return -1;
}

void e2e_clawd_stop(pid_t *pid)
{
	int st;

	if (*pid > 0) {
		kill(*pid, SIGTERM);
		for (int i = 0; i < 100 && waitpid(*pid, &st, WNOHANG) == 0; i++)
			usleep(50000);
		kill(*pid, SIGKILL);
		waitpid(*pid, &st, 0);
	}
	*pid = -1;
}

void e2e_clawd_log(const char *log)
{
	FILE *f = fopen(log, "r");
	char line[512];

	while (f && fgets(line, sizeof(line), f))
		printf("# clawd: %s", line);
	if (f)
		fclose(f);
}
