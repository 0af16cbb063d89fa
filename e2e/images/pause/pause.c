/*
 * sigil's own pause program: holds a pod's namespaces (the kubelet's sandbox image) and doubles as
 * the do-nothing application container of the kind smoke test. It sleeps until SIGINT or SIGTERM
 * and exits 0; as PID 1 of a shared process namespace it reaps the children it inherits.
 * Built static by e2e/images/build (cc -static), so its image holds this one file.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static int on(int sig, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    return sigaction(sig, &action, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("sigil-pause");
        return 0;
    }
    if (on(SIGINT, stop) < 0 || on(SIGTERM, stop) < 0 || on(SIGCHLD, reap) < 0) {
        perror("sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
