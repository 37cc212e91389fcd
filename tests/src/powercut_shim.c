/*
 * Power-cut shim for tests/tests/powercut.rs (LD_PRELOAD).
 *
 * A kill -9 keeps the page cache: every write() the process made is still read back after it
 * dies. A power cut keeps only what reached the device, i.e. what was fsync'ed. This shim
 * records, for every regular file directly inside $POWERCUT_DIR, the file's content at the
 * moment of each fsync()/fdatasync() (copied to $POWERCUT_SNAP/<name>), and forgets a file
 * when it is unlinked. After the process is killed, the test replaces each such file with its
 * last fsync'ed copy, or removes it if it was never fsync'ed: the state a disk holds after
 * the power went off right after the last completed fsync.
 *
 * What it does not model: torn or reordered writes inside one fsync (SQLite's WAL frames carry
 * checksums for those), unsynced writes that happen to reach the device anyway (a real cut
 * keeps some; this model keeps none, the worst case), directory-entry durability of renames.
 * Every fsync is logged as a line "<name> <bytes>" in $POWERCUT_SNAP/fsync.log, so the test can
 * check that the shim was active.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file name of `path` if it lies directly inside $POWERCUT_DIR, else NULL. */
static const char *inside(const char *path) {
    const char *dir = getenv("POWERCUT_DIR");
    if (!dir || !*dir)
        return NULL;
    size_t n = strlen(dir);
    if (strncmp(path, dir, n) != 0 || path[n] != '/')
        return NULL;
    const char *base = path + n + 1;
    if (!*base || strchr(base, '/'))
        return NULL;
    return base;
}

static void write_all(int fd, const char *buf, ssize_t len) {
    while (len > 0) {
        ssize_t w = write(fd, buf, (size_t)len);
        if (w <= 0)
            return;
        buf += w;
        len -= w;
    }
}

static void snapshot(int fd) {
    const char *snap = getenv("POWERCUT_SNAP");
    if (!snap)
        return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return;
    path[n] = 0;
    const char *base = inside(path);
    struct stat st;
    if (!base || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    char tmp[PATH_MAX], dst[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", snap, base);
    snprintf(dst, sizeof dst, "%s/%s", snap, base);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0)
        return;
    static char buf[1 << 16];
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, sizeof buf, off);
        if (r <= 0)
            break;
        write_all(out, buf, r);
        off += r;
    }
    close(out);
    rename(tmp, dst);
    char logp[PATH_MAX], line[PATH_MAX + 32];
    snprintf(logp, sizeof logp, "%s/fsync.log", snap);
    int lf = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (lf >= 0) {
        int len = snprintf(line, sizeof line, "%s %lld\n", base, (long long)off);
        write_all(lf, line, len);
        close(lf);
    }
}

static void forget(const char *path) {
    const char *snap = getenv("POWERCUT_SNAP");
    const char *base = path ? inside(path) : NULL;
    if (!snap || !base)
        return;
    char dst[PATH_MAX];
    snprintf(dst, sizeof dst, "%s/%s", snap, base);
    /* The real unlink of the snapshot, not this shim's. */
    static int (*real_unlink)(const char *);
    if (!real_unlink)
        real_unlink = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    real_unlink(dst);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    snapshot(fd);
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    snapshot(fd);
    return real(fd);
}

int unlink(const char *path) {
    static int (*real)(const char *);
    if (!real)
        real = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    int r = real(path);
    if (r == 0)
        forget(path);
    return r;
}

int unlinkat(int dirfd, const char *path, int flags) {
    static int (*real)(int, const char *, int);
    if (!real)
        real = (int (*)(int, const char *, int))dlsym(RTLD_NEXT, "unlinkat");
    int r = real(dirfd, path, flags);
    if (r == 0 && path && path[0] == '/')
        forget(path);
    return r;
}
