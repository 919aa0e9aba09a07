/* vmtest/e2e_util.h — helpers shared by the guest TLS programs (tls_e2e.c, upstream_tls_e2e.c): loopback sockets, the body pattern and its SHA-256, /proc/net/tls_stat, a self-signed certificate, running clawd. */
#ifndef OPENCLAW_VMTEST_E2E_UTIL_H
#define OPENCLAW_VMTEST_E2E_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* A listening socket on 127.0.0.1 (an ephemeral port, in *port), -1 on failure. */
int e2e_listen_any(int *port);
/* A port on 127.0.0.1 free right now (0 when none could be had). */
int e2e_free_port(void);
/* A connection to 127.0.0.1:port with 60 s send and receive timeouts, -1 on failure. */
int e2e_connect_port(int port);
bool e2e_send_all(int fd, const void *p, size_t n);
bool e2e_ssl_write_all(SSL *s, const void *p, size_t n);

/* Bytes [off, off + n) of the body pattern both sides of a big transfer generate. */
void e2e_pattern(uint8_t *buf, size_t n, uint64_t off);
/* SHA-256 in lowercase hex: a digest begun, then ended (freed) into out. */
EVP_MD_CTX *e2e_sha256_begin(void);
void e2e_sha256_end(EVP_MD_CTX *m, char out[65]);
/* The SHA-256 of the first n pattern bytes. */
void e2e_pattern_sha256(size_t n, char out[65]);

/* /proc/net/tls_stat field, -1 when absent. */
long e2e_tls_stat(const char *name);

/*
 * A self-signed P-256 certificate for cn (with a DNS subjectAltName san
 * unless NULL), written as PEM to cert_path; the key and certificate are
 * the caller's to free. 0 or -1.
 */
int e2e_self_signed(const char *cn, const char *san, const char *cert_path, EVP_PKEY **pk, X509 **x);

/*
 * Runs clawd (CLAWD, default /vmtest/bin/clawd) on config, its output
 * appended to log, and waits (up to 10 s) until it accepts on port. *pid is
 * set whenever the fork succeeded, so e2e_clawd_stop() cleans up a failed
 * start too. 0 or -1.
 */
int e2e_clawd_start(const char *config, const char *log, int port, pid_t *pid);
/* SIGTERM, up to 5 s, then SIGKILL; *pid becomes -1. */
void e2e_clawd_stop(pid_t *pid);
/* Copies log into the TAP output as "# clawd: " lines (after a failure). */
void e2e_clawd_log(const char *log);

#endif
