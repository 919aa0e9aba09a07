/* agent/log.h — the error/event log: leveled lines on stderr, one write(2) per line, journald-friendly. */
#ifndef OPENCLAW_LOG_H
#define OPENCLAW_LOG_H

enum log_level { LOG_ERR = 3, LOG_WARN = 4, LOG_NOTICE = 5, LOG_INFO = 6, LOG_DEBUG = 7 };

/* Lines below this level are dropped; set once at start-up. */
extern enum log_level log_threshold;

/*
 * Writes "<N>LEVEL message" when stderr is the journal (JOURNAL_STREAM set),
 * else "TIME LEVEL message". Callers name what the line is about
 * ("listener web: ...", "upstream api 10.0.0.1:80: ..."), never a secret.
 */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
