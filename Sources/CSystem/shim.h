#include <sys/prctl.h>
#include <signal.h>

/// prctl is variadic and so not callable from Swift.
static inline int hv_set_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, sig); }
