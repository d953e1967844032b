/*
 * pyengine-shim: the idle half of a container's monitor.
 *
 * The Python monitor (pyengine/containers/monitor.py) starts the container and stays its
 * parent. Once the container has run for a while it exec()s this program in the same process
 * (same pid, so the container stays its child), handing over its file descriptors. The shim
 * then does what the monitor did while the container runs, with a few hundred KiB instead of
 * a Python interpreter's ten MB:
 *   - writes the container's stdout/stderr to the json-file log (Docker's format, rotated
 *     at --max-size into --max-files files), as pyengine/containers/logfile.py does;
 *   - relays output to attach clients and their input, EOF and window size to the container,
 *     in the frame format of pyengine/containers/attach.py;
 *   - runs the container's healthcheck on its schedule: forks and execs HEALTH-ARGV
 *     (`pyengine container health-run ID`, which runs the test in the container and records
 *     the result) in its own process group, one at a time, the next an interval after the
 *     last ended (the start interval during the start period), and kills the group when it
 *     outlives --health-timeout-ms;
 *   - reaps the container and then exec()s RESUME-ARGV with the exit code appended (Docker's:
 *     the status, or 128+N for a death by signal N) and PYENGINE_PASS_FDS naming the attach
 *     listener and clients, so that Python records the exit, cleans up and applies the
 *     restart policy.
 *
 * usage: pyengine-shim --pid PID --log PATH --max-size BYTES --max-files N [--listen FD]
 *                      [--stdout FD] [--stderr FD] [--tty FD] [--stdin FD] [--client FD]...
 *                      [--health-interval-ms MS --health-start-interval-ms MS --health-start-left-ms MS
 *                       --health-timeout-ms MS --health-next-ms MS --health-argv N HEALTH-ARGV(N words)]
 *                      -- RESUME-ARGV...
 *
 * --tty is the pty master: output read from it is logged as stdout, input is written to it.
 * Its input side is used only when --stdin names the same fd.
 *
 * The same program is the container's init with --init (`run --init`):
 *
 *     pyengine-shim --init PID
 *
 * exec()d by the container's PID 1 after it forked the command (PID) and confined itself: it
 * forwards every signal it can catch to the command, reaps every zombie, and exits with the
 * command's status (128+N for a death by signal N). Built statically, so it runs in any
 * root filesystem (the launcher opens it before pivot_root and execs it by descriptor).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { F_STDIN = 0, F_STDOUT = 1, F_STDERR = 2, F_EXIT = 3, F_RESIZE = 4, F_STDIN_EOF = 5 };
#define MAX_CLIENTS 64
#define READ_SIZE 65536
#define LONG_LINE 16384 /* a line without newline is flushed in pieces beyond this, like Docker */

struct client {
    int fd;
    unsigned char *buf;
    size_t len, cap;
};

struct stream {
    int fd;           /* -1 once closed */
    const char *name; /* "stdout" or "stderr" */
    char *partial;    /* the line not yet ended */
    size_t len, cap;
};

static struct {
    const char *path;
    long long max_size, size;
    int max_files, fd;
} logw = {.fd = -1};

static struct client clients[MAX_CLIENTS];
static int nclients;
static struct stream streams[2] = {{.fd = -1, .name = "stdout"}, {.fd = -1, .name = "stderr"}};
static int listen_fd = -1, stdin_fd = -1, tty_fd = -1;

static void die(const char *what) {
    fprintf(stderr, "pyengine-shim: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "pyengine-shim: out of memory\n");
        exit(1);
    }
    return q;
}

/* Write all of data; to a socket with MSG_NOSIGNAL (a gone client is an error, not a SIGPIPE). */
static int put_all(int fd, const void *data, size_t len, int is_socket) {
    const char *p = data;
    while (len) {
        ssize_t n = is_socket ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- the json-file log ---------------------------------------------------------------- */

static void log_open(int truncate) {
    logw.fd = open(logw.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0640);
    if (logw.fd < 0)
        die(logw.path);
    struct stat st;
    logw.size = fstat(logw.fd, &st) == 0 ? st.st_size : 0;
}

static void log_rotate(void) {
    char src[4096], dst[4096];
    close(logw.fd);
    for (int n = logw.max_files - 1; n > 0; n--) {
        if (n == 1)
            snprintf(src, sizeof src, "%s", logw.path);
        else
            snprintf(src, sizeof src, "%s.%d", logw.path, n - 1);
        snprintf(dst, sizeof dst, "%s.%d", logw.path, n);
        if (rename(src, dst) < 0 && errno != ENOENT)
            fprintf(stderr, "pyengine-shim: rotate %s: %s\n", src, strerror(errno));
    }
    if (logw.max_files == 1)
        unlink(logw.path);
    log_open(1);
}

/* Append c to a growing buffer. */
struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void put_u16(struct buf *b, unsigned v) {
    char esc[8];
    snprintf(esc, sizeof esc, "\\u%04x", v & 0xffff);
    put(b, esc, 6);
}

/* The length of the valid UTF-8 sequence at s (at most n bytes), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n, unsigned *cp) {
    unsigned c = s[0];
    size_t need;
    unsigned min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        need = 2, *cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3, *cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4, *cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3f);
    }
    if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        return 0;
    return need;
}

/* One log entry: {"log": line, "stream": name, "time": now}, the line as JSON with
 * ensure_ascii (what Python's json.dumps writes) and invalid UTF-8 as U+FFFD. */
static void log_emit(const char *name, const unsigned char *line, size_t len) {
    static struct buf b;
    b.len = 0;
    put(&b, "{\"log\": \"", 9);
    for (size_t i = 0; i < len;) {
        unsigned cp;
        size_t n = utf8_len(line + i, len - i, &cp);
        if (n == 0) {
            cp = 0xfffd;
            n = 1;
        }
        i += n;
        switch (cp) {
        case '"': put(&b, "\\\"", 2); break;
        case '\\': put(&b, "\\\\", 2); break;
        case '\n': put(&b, "\\n", 2); break;
        case '\r': put(&b, "\\r", 2); break;
        case '\t': put(&b, "\\t", 2); break;
        case '\b': put(&b, "\\b", 2); break;
        case '\f': put(&b, "\\f", 2); break;
        default:
            if (cp < 0x20 || (cp >= 0x7f && cp < 0x10000)) {
                put_u16(&b, cp);
            } else if (cp >= 0x10000) {
                cp -= 0x10000;
                put_u16(&b, 0xd800 | (cp >> 10));
                put_u16(&b, 0xdc00 | (cp & 0x3ff));
            } else {
                char ch = (char)cp;
                put(&b, &ch, 1);
            }
        }
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tail[128];
    int n = snprintf(tail, sizeof tail, "\", \"stream\": \"%s\", \"time\": \"%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ\"}\n",
                     name, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec);
    put(&b, tail, (size_t)n);
    if (logw.size + (long long)b.len > logw.max_size && logw.size > 0)
        log_rotate();
    if (put_all(logw.fd, b.p, b.len, 0) < 0)
        fprintf(stderr, "pyengine-shim: write %s: %s\n", logw.path, strerror(errno));
    logw.size += (long long)b.len;
}

/* Log the complete lines of data; keep a trailing partial line for later. */
static void log_write(struct stream *s, const unsigned char *data, size_t len) {
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] != '\n')
            continue;
        size_t piece = i + 1 - start;
        if (s->len) {
            if (s->len + piece > s->cap) {
                s->cap = s->len + piece;
                s->partial = xrealloc(s->partial, s->cap);
            }
            memcpy(s->partial + s->len, data + start, piece);
            log_emit(s->name, (unsigned char *)s->partial, s->len + piece);
            s->len = 0;
        } else {
            log_emit(s->name, data + start, piece);
        }
        start = i + 1;
    }
    size_t rest = len - start;
    if (rest) {
        if (s->len + rest > s->cap) {
            s->cap = (s->len + rest) * 2;
            s->partial = xrealloc(s->partial, s->cap);
        }
        memcpy(s->partial + s->len, data + start, rest);
        s->len += rest;
    }
    if (s->len > LONG_LINE) {
        log_emit(s->name, (unsigned char *)s->partial, s->len);
        s->len = 0;
    }
}

static void log_flush(void) {
    for (int i = 0; i < 2; i++) {
        if (streams[i].len)
            log_emit(streams[i].name, (unsigned char *)streams[i].partial, streams[i].len);
        streams[i].len = 0;
    }
}

/* ---- attach clients ------------------------------------------------------------------- */

static void add_client(int fd) {
    if (nclients == MAX_CLIENTS) {
        close(fd);
        return;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK); /* frames are sent whole, as the monitor did */
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    clients[nclients++] = (struct client){.fd = fd};
}

static void drop_client(int i) {
    close(clients[i].fd);
    free(clients[i].buf);
    clients[i] = clients[--nclients];
}

static void broadcast(int stream, const void *data, size_t len) {
    unsigned char head[5] = {(unsigned char)stream, (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len};
    for (int i = nclients - 1; i >= 0; i--)
        if (put_all(clients[i].fd, head, 5, 1) < 0 || put_all(clients[i].fd, data, len, 1) < 0)
            drop_client(i);
}

static void client_frame(int stream, const unsigned char *payload, size_t len) {
    if (stream == F_STDIN && stdin_fd >= 0) {
        put_all(stdin_fd, payload, len, 0);
    } else if (stream == F_STDIN_EOF && stdin_fd >= 0) {
        if (stdin_fd == tty_fd) {
            put_all(stdin_fd, "\x04", 1, 0);
        } else {
            close(stdin_fd);
            stdin_fd = -1;
        }
    } else if (stream == F_RESIZE && tty_fd >= 0 && len == 4) {
        struct winsize ws = {.ws_row = (unsigned short)(payload[0] << 8 | payload[1]),
                             .ws_col = (unsigned short)(payload[2] << 8 | payload[3])};
        ioctl(tty_fd, TIOCSWINSZ, &ws);
    }
}

static void client_input(int i) {
    struct client *c = &clients[i];
    if (c->cap - c->len < READ_SIZE) {
        c->cap = c->len + READ_SIZE;
        c->buf = xrealloc(c->buf, c->cap);
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0 && errno == EINTR)
        return;
    if (n <= 0) {
        drop_client(i);
        return;
    }
    c->len += (size_t)n;
    size_t off = 0;
    while (c->len - off >= 5) {
        unsigned char *h = c->buf + off;
        size_t len = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
        if (c->len - off - 5 < len)
            break;
        client_frame(h[0], h + 5, len);
        off += 5 + len;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

/* ---- the healthcheck's schedule ------------------------------------------------------- */

static char **health_argv;
static long long health_interval_ms, health_start_interval_ms, health_timeout_ms;
static long long health_start_until, health_next, health_kill_at; /* CLOCK_MONOTONIC, ms */
static pid_t health_pid;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* Start the check that is due, or kill the process group of one that overstays; the ms until
 * there is something to do again (-1: no healthcheck). */
static int health_tick(void) {
    if (!health_argv)
        return -1;
    long long now = now_ms();
    if (health_pid) {
        if (now >= health_kill_at) {
            kill(-health_pid, SIGKILL);
            health_kill_at = now + 1000;
        }
        return (int)(health_kill_at - now);
    }
    if (now >= health_next) {
        pid_t child = fork();
        if (child == 0) {
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            signal(SIGPIPE, SIG_DFL); /* the monitor ignores these; the check must not */
            signal(SIGINT, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            setpgid(0, 0);
            execv(health_argv[0], health_argv);
            _exit(127);
        }
        if (child > 0) {
            health_pid = child;
            health_kill_at = now + health_timeout_ms;
            return (int)health_timeout_ms;
        }
        health_next = now + health_interval_ms; /* fork failed: the next one may not */
    }
    return (int)(health_next - now);
}

/* Reap the check's process when it has ended; the next is an interval from now. */
static void health_reap(int block) {
    if (!health_pid)
        return;
    int st;
    pid_t r = waitpid(health_pid, &st, block ? 0 : WNOHANG);
    if (r == health_pid || (r < 0 && errno == ECHILD)) {
        health_pid = 0;
        long long now = now_ms();
        health_next = now + (now < health_start_until ? health_start_interval_ms : health_interval_ms);
    }
}

/* ---- main ----------------------------------------------------------------------------- */

static int number(const char *flag, const char *text) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || v < 0 || v > 0x7fffffff) {
        fprintf(stderr, "pyengine-shim: %s wants a number, not %s\n", flag, text);
        exit(2);
    }
    return (int)v;
}

static void close_stream(struct stream *s) {
    if (s->fd >= 0)
        close(s->fd);
    if (s->fd == tty_fd) { /* the terminal is gone: its input side with it */
        if (stdin_fd == tty_fd)
            stdin_fd = -1;
        tty_fd = -1;
    }
    s->fd = -1;
}

/* --init: PID 1 of a container whose command is ``child``. */
static int init_main(pid_t child) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        /* reap first: the command may have ended before the signals were blocked */
        for (;;) {
            int status;
            pid_t done = waitpid(-1, &status, WNOHANG);
            if (done < 0 && errno == EINTR)
                continue;
            if (done < 0)
                return 0; /* no children left at all */
            if (done == 0)
                break;
            if (done == child)
                return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
        }
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig > 0 && sig != SIGCHLD)
            kill(child, sig);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--init"))
        return init_main(number("--init", argv[2]));
    pid_t pid = 0;
    char **resume = NULL;
    long long start_left_ms = 0, next_ms = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            resume = argv + i + 1;
            break;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pyengine-shim: %s wants a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--pid")) pid = number(a, v);
        else if (!strcmp(a, "--log")) logw.path = v;
        else if (!strcmp(a, "--max-size")) logw.max_size = number(a, v);
        else if (!strcmp(a, "--max-files")) logw.max_files = number(a, v);
        else if (!strcmp(a, "--listen")) listen_fd = number(a, v);
        else if (!strcmp(a, "--stdout")) streams[0].fd = number(a, v);
        else if (!strcmp(a, "--stderr")) streams[1].fd = number(a, v);
        else if (!strcmp(a, "--tty")) tty_fd = streams[0].fd = number(a, v);
        else if (!strcmp(a, "--stdin")) stdin_fd = number(a, v);
        else if (!strcmp(a, "--client")) add_client(number(a, v));
        else if (!strcmp(a, "--health-interval-ms")) health_interval_ms = number(a, v);
        else if (!strcmp(a, "--health-start-interval-ms")) health_start_interval_ms = number(a, v);
        else if (!strcmp(a, "--health-start-left-ms")) start_left_ms = number(a, v);
        else if (!strcmp(a, "--health-timeout-ms")) health_timeout_ms = number(a, v);
        else if (!strcmp(a, "--health-next-ms")) next_ms = number(a, v);
        else if (!strcmp(a, "--health-argv")) {
            int words = number(a, v);
            if (words < 1 || i + words >= argc) {
                fprintf(stderr, "pyengine-shim: --health-argv wants %s words\n", v);
                return 2;
            }
            health_argv = xrealloc(NULL, sizeof(char *) * (size_t)(words + 1));
            memcpy(health_argv, argv + i + 1, sizeof(char *) * (size_t)words);
            health_argv[words] = NULL;
            i += words;
        }
        else {
            fprintf(stderr, "pyengine-shim: unknown option %s\n", a);
            return 2;
        }
    }
    if (pid <= 0 || !logw.path || !resume || !resume[0]) {
        fprintf(stderr, "pyengine-shim: usage: pyengine-shim --pid PID --log PATH ... -- RESUME-ARGV...\n");
        return 2;
    }
    if (logw.max_size <= 0)
        logw.max_size = 10 * 1024 * 1024;
    if (logw.max_files < 1)
        logw.max_files = 1;
    if (health_argv) {
        long long now = now_ms();
        health_start_until = now + start_left_ms;
        health_next = now + next_ms;
        if (health_interval_ms <= 0)
            health_interval_ms = 30000;
        if (health_start_interval_ms <= 0)
            health_start_interval_ms = health_interval_ms;
        if (health_timeout_ms <= 0)
            health_timeout_ms = 30000;
    }
    log_open(0);
    int fds[] = {listen_fd, streams[0].fd, streams[1].fd, stdin_fd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            fcntl(fds[i], F_SETFD, FD_CLOEXEC);

    /* The container's end is a SIGCHLD, read from a signalfd (blocked signals stay blocked
     * across exec: unblocked again before resuming). */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die("signalfd");

    static unsigned char data[READ_SIZE];
    int status = 0, exited = 0;
    for (;;) {
        if (!exited) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid || (r < 0 && errno == ECHILD)) {
                if (r < 0)
                    status = 0; /* not ours to reap any more: nothing better to say */
                exited = 1;
            }
        }
        health_reap(0);
        int open_streams = (streams[0].fd >= 0) + (streams[1].fd >= 0);
        if (exited && !open_streams)
            break;
        struct pollfd p[4 + MAX_CLIENTS];
        int n = 0;
        p[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        p[n++] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
        p[n++] = (struct pollfd){.fd = streams[0].fd, .events = POLLIN};
        p[n++] = (struct pollfd){.fd = streams[1].fd, .events = POLLIN};
        for (int i = 0; i < nclients; i++)
            p[n++] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
        /* After PID 1 died, background children may hold the pipes open: drain what comes
         * within 0.2 s of the last output, then stop waiting for them. */
        int r = poll(p, (nfds_t)n, exited ? 200 : health_tick());
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (r == 0) {
            if (exited)
                for (int i = 0; i < 2; i++)
                    close_stream(&streams[i]);
            continue; /* (not exited: a check is due, or overdue) */
        }
        if (p[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0) {
            }
        }
        if (p[1].revents & POLLIN) {
            int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0)
                add_client(c);
        }
        for (int i = 0; i < 2; i++) {
            if (!p[2 + i].revents || streams[i].fd < 0)
                continue;
            ssize_t got = read(streams[i].fd, data, sizeof data);
            if (got < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (got <= 0) { /* EOF, or EIO from a pty whose slave side is gone */
                close_stream(&streams[i]);
                continue;
            }
            log_write(&streams[i], data, (size_t)got);
            broadcast(i == 0 ? F_STDOUT : F_STDERR, data, (size_t)got);
        }
        /* clients[] may shrink while walking it: match poll entries by fd */
        for (int k = 4; k < n; k++) {
            if (!p[k].revents)
                continue;
            for (int i = 0; i < nclients; i++)
                if (clients[i].fd == p[k].fd) {
                    client_input(i);
                    break;
                }
        }
    }
    if (health_pid) { /* the container is gone: so is the point of its check */
        kill(-health_pid, SIGKILL);
        health_reap(1);
    }
    log_flush();
    close(logw.fd);
    if (stdin_fd >= 0 && stdin_fd != tty_fd)
        close(stdin_fd);
    if (tty_fd >= 0)
        close(tty_fd);

    int code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    /* Resume in Python: argv + the exit code; the listener and clients passed on. */
    char env[32 + 12 * (MAX_CLIENTS + 1)];
    size_t used = (size_t)snprintf(env, sizeof env, "PYENGINE_PASS_FDS=%d", listen_fd);
    if (listen_fd >= 0)
        fcntl(listen_fd, F_SETFD, 0);
    for (int i = 0; i < nclients; i++) {
        fcntl(clients[i].fd, F_SETFD, 0);
        used += (size_t)snprintf(env + used, sizeof env - used, ",%d", clients[i].fd);
    }
    putenv(env);
    int count = 0;
    while (resume[count])
        count++;
    char **args = xrealloc(NULL, sizeof(char *) * (size_t)(count + 2));
    memcpy(args, resume, sizeof(char *) * (size_t)count);
    char codetext[16];
    snprintf(codetext, sizeof codetext, "%d", code);
    args[count] = codetext;
    args[count + 1] = NULL;
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    if (chdir("/") < 0)
        die("chdir /");
    execv(args[0], args);
    die(args[0]);
}
