/*
 * pam_entra_exec: a test-only PAM module that runs a verifier with the presented password
 * (an Entra ID access token) on its standard input and the PAM user as its last argument.
 *
 * It does what `pam_exec.so expose_authtok` does, without pam_exec's cap: Linux-PAM 1.5's
 * pam_exec hands the program at most 511 bytes of the password (PAM_MAX_RESP_SIZE), and an
 * Entra access token is one to three kilobytes, so pam_exec would pass a truncated token.
 *
 *   auth    required /path/pam_entra_exec.so /path/python /path/entra_verify.py CONFIG
 *   account required pam_permit.so
 *
 * The verifier's exit status is the answer: 0 accepts, anything else refuses. Its standard
 * output and error go to /dev/null: MariaDB's auth_pam_tool talks to the server over its
 * own standard input and output. Built by tests/support/entra.py at test time.
 */
#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <security/pam_ext.h>
#include <security/pam_modules.h>

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    const char *user = NULL;
    const char *token = NULL;
    int fds[2];
    int status = 0;
    pid_t pid;
    size_t length, done = 0;
    struct sigaction ignore, previous;

    (void)flags;
    if (argc < 1)
        return PAM_SERVICE_ERR;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL)
        return PAM_USER_UNKNOWN;
    /* Asks the application (MariaDB's conversation) when no password is set yet. */
    if (pam_get_authtok(pamh, PAM_AUTHTOK, &token, NULL) != PAM_SUCCESS || token == NULL)
        return PAM_AUTH_ERR;
    if (pipe(fds) != 0)
        return PAM_SYSTEM_ERR;
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return PAM_SYSTEM_ERR;
    }
    if (pid == 0) {
        char **args = calloc((size_t)argc + 2, sizeof(char *));
        char *environment[] = {NULL};
        int null = open("/dev/null", O_RDWR);
        int fd;

        if (args == NULL || null < 0 || dup2(fds[0], 0) < 0 || dup2(null, 1) < 0
            || dup2(null, 2) < 0)
            _exit(127);
        for (fd = 3; fd < 1024; fd++)
            close(fd);
        for (fd = 0; fd < argc; fd++)
            args[fd] = (char *)argv[fd];
        args[argc] = (char *)user;
        execve(args[0], args, environment);
        _exit(127);
    }
    close(fds[0]);
    /* A verifier that exits before reading everything must not kill auth_pam_tool. */
    memset(&ignore, 0, sizeof(ignore));
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &previous);
    length = strlen(token);
    while (done < length) {
        ssize_t written = write(fds[1], token + done, length - done);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            break;
        done += (size_t)written;
    }
    close(fds[1]);
    sigaction(SIGPIPE, &previous, NULL);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return PAM_SYSTEM_ERR;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? PAM_SUCCESS : PAM_AUTH_ERR;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}
