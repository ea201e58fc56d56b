#include <sys/prctl.h>
#include <sys/epoll.h>
#include <stddef.h>
#include <errno.h>
#include <unistd.h>
#include <signal.h>

/// prctl is variadic and so not callable from Swift.
static inline int hv_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig); }

/// An epoll instance that reports `fd` readable to one of its waiters at a time (EPOLLEXCLUSIVE); -1 on failure.
/// Glibc's Swift module has no epoll.
static inline int hv_exclusive_epoll(int fd) {
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0) return -1;
    struct epoll_event event = { .events = EPOLLIN | EPOLLEXCLUSIVE };
    if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) == 0) return epoll;
    int error = errno;
    close(epoll);
    errno = error;
    return -1;
}

/// Waits until the epoll instance reports an event: 1, or -1 with errno (EINTR when a signal arrived).
static inline int hv_epoll_wait(int epoll) {
    struct epoll_event event;
    return epoll_wait(epoll, &event, 1, -1);
}
