/* pause: the sandbox's first process for the netviz lab's pause image (written for the lab).
 * Sleeps until SIGTERM or SIGINT, then exits 0. As PID 1 of a pod's shared PID namespace it also
 * reaps orphaned children whenever SIGCHLD arrives, so they never stay zombies. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got_stop_signal;

static void handle_stop(int sig) {
    (void)sig;
    got_stop_signal = 1;
}

static void handle_child(int sig) {
    int saved_errno = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved_errno;
}

static int install(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigfillset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
    sigset_t blocked, waiting;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (netviz lab) " PAUSE_VERSION);
        return 0;
    }
    if (getpid() != 1)
        fputs("pause: warning: not PID 1, orphans elsewhere are not reaped here\n", stderr);
    /* Block the signals while installing handlers and between checks; sigsuspend unblocks them
     * atomically, so a signal arriving just before we wait is not lost. */
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &blocked, &waiting) != 0 ||
        install(SIGTERM, handle_stop, 0) != 0 || install(SIGINT, handle_stop, 0) != 0 ||
        install(SIGCHLD, handle_child, SA_NOCLDSTOP | SA_RESTART) != 0) {
        perror("pause: signal setup");
        return 1;
    }
    sigdelset(&waiting, SIGTERM);
    sigdelset(&waiting, SIGINT);
    sigdelset(&waiting, SIGCHLD);
    while (!got_stop_signal)
        sigsuspend(&waiting);
    return 0;
}
