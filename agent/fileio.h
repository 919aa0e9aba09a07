/* agent/fileio.h — the one way clawd reads a whole small file: regular files only, a size cap, an optional privacy policy. */
#ifndef OPENCLAW_FILEIO_H
#define OPENCLAW_FILEIO_H

#include <stddef.h>
#include <sys/stat.h>

#define FILEIO_PRIVATE 1u /* refuse group/other permission bits: files holding secrets or state */
#define FILEIO_OWNED 2u   /* refuse a file not owned by clawd's effective uid */
#define FILEIO_NOFOLLOW 4u /* refuse a symlink in the last path component */

/*
 * Reads path whole into *out (NUL-terminated; free() it) and its length into
 * *len; st, when not NULL, receives the stat of the descriptor that was read
 * (so a change racing the read shows in the next stamp). Opens without
 * following into FIFOs or devices (O_NONBLOCK, then refuses non-regular
 * files). Returns 0, or a negative errno with "PATH: reason" in err.
 */
int fileio_read(const char *path, size_t max, unsigned flags, char **out, size_t *len,
		struct stat *st, char *err, size_t errlen);

#endif
