#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <linux/memfd.h>
#include <sys/time.h>
#include <fcntl.h>
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

/// An anonymous in-memory file, closed on exec; -1 with errno on failure. glibc declares memfd_create only under
/// _GNU_SOURCE, which would make this module's system types differ from Glibc's.
static inline int hv_anonymous_file(const char *name) { return (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC); }

/// Takes a POSIX record lock on byte `byte` of `fd` (which the kernel releases when the process exits), waiting at
/// most `milliseconds`: ITIMER_REAL's SIGALRM ends the wait, so its handler must lack SA_RESTART. 0 when taken, else
/// -1 with errno (EINTR when the time ran out or another signal arrived). fcntl is variadic.
static inline int hv_lock_byte(int fd, off_t byte, int milliseconds) {
    struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
    if (fcntl(fd, F_SETLK, &lock) == 0) return 0;
    if (errno != EACCES && errno != EAGAIN) return -1;
    struct itimerval timer = { .it_value = { .tv_sec = milliseconds / 1000, .tv_usec = milliseconds % 1000 * 1000 } };
    setitimer(ITIMER_REAL, &timer, NULL);
    int result = fcntl(fd, F_SETLKW, &lock);
    int error = errno;
    struct itimerval off = { 0 };
    setitimer(ITIMER_REAL, &off, NULL);
    errno = error;
    return result;
}

/// Releases the lock `hv_lock_byte` took.
static inline void hv_unlock_byte(int fd, off_t byte) {
    struct flock lock = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
    fcntl(fd, F_SETLK, &lock);
}
