/* containerd-shim-kata-v2: the front containerd executes; Python runs behind it.
 *
 * For `start` and `delete` under containerd (an -address flag, the action as
 * the last argument) the front asks the warm fork server of that containerd
 * (/run/kata-shim-fork/<sha256(address)[:32]>.sock, kata_shim/shim/forkproto.py)
 * to run the action in a forked child: one SOCK_SEQPACKET message
 *     "KSF1\0" cwd "\0" argc "\0" argv[0..argc-1] "\0"... environ "\0"...
 * with our fds 0, 1, 2 (SCM_RIGHTS). The child (kata_shim/shim/frontchild.py)
 * answers "R" once it is set up; we answer "G" and only then does the action
 * run, with our stdio, cwd, environment and cgroups; it ends with "X<status>",
 * which we exit with. Anything else before "G" (no socket, refused, a JSON
 * {"error"} from the server, a timeout, EOF) and every other invocation
 * (daemon, -v, iSulad's flow without -address, KATA_SHIM_FORK_SERVER=off)
 * execs the Python entry `containerd-shim-kata-v2-py` from our own directory
 * with the unchanged argv; stdin is untouched until "G". After "G" the action
 * is never run twice: a lost connection is an error (stderr, exit 1).
 * Fallback reasons are appended to the server's log, as Python's `start` does.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"

#define FORK_DIR "/run/kata-shim-fork"
#define PY_ENTRY "containerd-shim-kata-v2-py"
#define MAGIC "KSF1"
#define MAX_MESSAGE (256 * 1024)
#define REPLY_TIMEOUT_S 5 /* fork + child setup on a loaded 2-CPU host */

extern char **environ;

struct front {
    int argc;
    char **argv;
    const char *action;   /* "start" / "delete" */
    const char *address;  /* containerd's -address */
    char base[64];        /* FORK_DIR/<key> (52 bytes) */
};

static void exec_python(char **argv)
{
    char exe[PATH_MAX], path[PATH_MAX + sizeof(PY_ENTRY)];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        fprintf(stderr, "containerd-shim-kata-v2: cannot read /proc/self/exe: %s\n", strerror(errno));
        exit(1);
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    *(slash ? slash : exe) = '\0';
    snprintf(path, sizeof path, "%s/%s", exe, PY_ENTRY);
    execv(path, argv);
    fprintf(stderr, "containerd-shim-kata-v2: cannot exec %s: %s\n", path, strerror(errno));
    exit(1);
}

/* One line in the server's log (never stdout/stderr: containerd parses them). */
static void note(const struct front *f, const char *why)
{
    char path[sizeof f->base + 8], stamp[32], line[1024];
    time_t now = time(NULL);
    struct tm tm;
    snprintf(path, sizeof path, "%s.log", f->base);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600); /* dir: Python's */
    if (fd < 0)
        return;
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", localtime_r(&now, &tm));
    int len = snprintf(line, sizeof line, "%s kata-shim-front[%d] %s: fork server %s: cold exec\n",
                       stamp, (int)getpid(), f->action, why);
    if (len > 0 && write(fd, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1) < 0) {
        /* the log is best effort */
    }
    close(fd);
}

static int fork_disabled(void)
{
    const char *value = getenv("KATA_SHIM_FORK_SERVER");
    static const char *const off[] = {"0", "off", "no", "false"};
    if (!value)
        return 0;
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
        if (strcasecmp(value, off[i]) == 0)
            return 1;
    return 0;
}

/* -address X / --address X / -address=X; Python re-parses and refuses what this misreads. */
static const char *find_address(int argc, char **argv)
{
    for (int i = 1; i < argc - 1; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0)
            return NULL;
        arg += (arg[0] == '-' && arg[1] == '-') ? 2 : (arg[0] == '-' ? 1 : 0);
        if (arg == argv[i])
            continue;
        if (strcmp(arg, "address") == 0)
            return argv[i + 1];
        if (strncmp(arg, "address=", 8) == 0)
            return arg + 8;
    }
    return NULL;
}

static void socket_base(struct front *f)
{
    uint8_t digest[32];
    char key[33];
    ks_sha256(f->address, strlen(f->address), digest);
    for (int i = 0; i < 16; i++)
        snprintf(key + 2 * i, 3, "%02x", digest[i]);
    snprintf(f->base, sizeof f->base, "%s/%s", FORK_DIR, key);
}

static size_t append(char *buf, size_t used, const char *text)
{
    size_t len = strlen(text) + 1;
    if (used == SIZE_MAX || used + len > MAX_MESSAGE)
        return SIZE_MAX;
    memcpy(buf + used, text, len);
    return used + len;
}

/* The request; its length, or 0 (with *why set) if it cannot be built. */
static size_t build_request(const struct front *f, char *buf, const char **why)
{
    char cwd[PATH_MAX], count[16];
    if (!getcwd(cwd, sizeof cwd)) {
        *why = "cannot read the working directory";
        return 0;
    }
    snprintf(count, sizeof count, "%d", f->argc);
    size_t used = append(buf, 0, MAGIC);
    used = append(buf, used, cwd);
    used = append(buf, used, count);
    for (int i = 0; i < f->argc; i++)
        used = append(buf, used, f->argv[i]);
    for (char **env = environ; *env; env++)
        used = append(buf, used, *env);
    if (used == SIZE_MAX) {
        *why = "request too large";
        return 0;
    }
    return used;
}

static int send_request(int sock, const char *buf, size_t len)
{
    int fds[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof fds)];
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control, .msg_controllen = sizeof control};
    memset(control, 0, sizeof control);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof fds);
    ssize_t sent;
    do
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    return sent == (ssize_t)len ? 0 : -1;
}

static ssize_t receive(int sock, char *buf, size_t size)
{
    ssize_t got;
    do
        got = recv(sock, buf, size - 1, 0);
    while (got < 0 && errno == EINTR);
    buf[got > 0 ? got : 0] = '\0';
    return got;
}

static int connect_server(const struct front *f, const char **why)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct timeval timeout = {.tv_sec = REPLY_TIMEOUT_S};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s.sock", f->base);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        *why = "cannot create a socket";
        return -1;
    }
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) == 0)
        return sock;
    *why = errno == ENOENT ? "not running (no socket)"
         : errno == ECONNREFUSED ? "not running (socket refused)" : "cannot connect";
    close(sock);
    return -1;
}

/* {"error": "why"} (the server's and the child's refusals) → "refused: why". */
static const char *refusal(char *reply)
{
    static const char head[] = "{\"error\": \"";
    size_t len = strlen(reply);
    if (strncmp(reply, head, sizeof head - 1) == 0 && len >= sizeof head + 1 &&
        strcmp(reply + len - 2, "\"}") == 0) {
        reply[len - 2] = '\0';
        reply += sizeof head - 1 - strlen("refused: ");
        memcpy(reply, "refused: ", strlen("refused: "));
    }
    return reply;
}

/* Up to "G": 0 if the action now runs in the server's child, else -1 with *why. */
static int hand_over(const struct front *f, int sock, char *reply, size_t size, const char **why)
{
    static char request[MAX_MESSAGE];
    size_t len = build_request(f, request, why);
    if (len == 0)
        return -1;
    if (send_request(sock, request, len) < 0) {
        *why = "request not sent";
        return -1;
    }
    ssize_t got = receive(sock, reply, size);
    if (got != 1 || reply[0] != 'R') {
        *why = got == 0 ? "closed the connection" : got < 0 ? "did not answer" : refusal(reply);
        return -1;
    }
    if (send(sock, "G", 1, MSG_NOSIGNAL) != 1) {
        *why = "child gone before go";
        return -1;
    }
    return 0;
}

static int std_fds_open(void)
{
    struct stat st;
    for (int fd = 0; fd < 3; fd++)
        if (fstat(fd, &st) < 0)
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    struct front f = {.argc = argc, .argv = argv};
    const char *why = NULL;
    char reply[4096];
    if (argc < 2 || fork_disabled() || !std_fds_open())
        exec_python(argv);
    f.action = argv[argc - 1];
    if (strcmp(f.action, "start") != 0 && strcmp(f.action, "delete") != 0)
        exec_python(argv);
    f.address = find_address(argc, argv);
    if (!f.address || !*f.address)
        exec_python(argv);
    socket_base(&f);
    int sock = connect_server(&f, &why);
    if (sock < 0 || hand_over(&f, sock, reply, sizeof reply, &why) < 0) {
        note(&f, why);
        if (sock >= 0)
            close(sock);
        exec_python(argv);
    }
    struct timeval forever = {0};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &forever, sizeof forever);
    ssize_t got = receive(sock, reply, sizeof reply);
    if (got < 2 || reply[0] != 'X') {
        fprintf(stderr, "containerd-shim-kata-v2: %s: lost the fork server's child while it ran "
                        "(no exit status): see %s.log\n", f.action, f.base);
        return 1;
    }
    return atoi(reply + 1);
}
