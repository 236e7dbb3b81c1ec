// alloc_probe: counts the bytes PyTorch's CPU tensors hold, exactly.
//
// c10 allocates every CPU storage through posix_memalign (c10/core/impl/alloc_cpu.cpp,
// torch 1.13) and frees it with free(); Python objects use malloc. Loaded with LD_PRELOAD,
// this file interposes posix_memalign and free, remembers the size of every block
// posix_memalign handed out, and keeps live and peak byte counts in three classes:
//   0  tensors: blocks allocated from libc10 (c10::alloc_cpu), while not in a host section
//   1  host:    the same, allocated inside remat_probe_host(1) ... remat_probe_host(0): the
//              harness wraps the copies of offloaded saved tensors in it, so that on a CPU
//              (where device and host are one memory) offloaded bytes are still told apart
//   2  other:   posix_memalign from any other library (oneDNN scratchpads, OpenBLAS, ...)
// measure_step.py reads the counts through ctypes. The table is guarded by one mutex:
// autograd's CPU engine and intra-op threads may allocate from several threads.
// Tracing (measure_step.py --memory-snapshot): between remat_probe_trace(1) and (0) every
// allocation and free of a counted block is kept as an event, with the harness's current mark
// (remat_probe_mark: which boundary the step is heading for); starting a trace first records
// every block already live, marked -1.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { probe_classes = 3, table_bits = 20, table_size = 1u << table_bits, callers_max = 256 };

struct block {
    uintptr_t ptr;  // 0: empty
    uint64_t bytes;
    int cls;
};

static struct block table[table_size];
static uint64_t live[probe_classes];
static uint64_t peak[probe_classes];
static uint64_t live_total;
static uint64_t peak_total;
static uint64_t blocks_live;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct event {
    uintptr_t ptr;
    uint64_t bytes;
    int alloc;  // 1 alloc, 0 free
    int cls;
    int mark;
};
static struct event* events;
static size_t events_n, events_cap;
static int tracing;
static int trace_lost;  // an event could not be kept: the trace is incomplete
static int current_mark;

// Called with the lock held. realloc is not interposed, so this cannot recurse.
static void record(uintptr_t ptr, uint64_t bytes, int alloc, int cls, int mark) {
    if (events_n == events_cap) {
        size_t cap = events_cap ? 2 * events_cap : 4096;
        struct event* grown = (struct event*)realloc(events, cap * sizeof *events);
        if (grown == NULL) {  // out of memory: the trace stops and says so
            tracing = 0;
            trace_lost = 1;
            return;
        }
        events = grown;
        events_cap = cap;
    }
    events[events_n++] = (struct event){ptr, bytes, alloc, cls, mark};
}
static __thread int host_depth;

static int (*real_posix_memalign)(void**, size_t, size_t);
static void (*real_free)(void*);

// Return addresses already classified: whether each lies in libc10.
static uintptr_t caller_addr[callers_max];
static int caller_c10[callers_max];
static int callers_n;

static size_t slot_of(uintptr_t p) { return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ull >> (64 - table_bits)); }

static int from_c10(uintptr_t ret) {
    for (int i = 0; i < callers_n; ++i)
        if (caller_addr[i] == ret) return caller_c10[i];
    Dl_info info;
    int c10 = dladdr((void*)ret, &info) != 0 && info.dli_fname != NULL && strstr(info.dli_fname, "libc10") != NULL;
    if (callers_n < callers_max) {
        caller_addr[callers_n] = ret;
        caller_c10[callers_n] = c10;
        ++callers_n;
    }
    return c10;
}

static void resolve(void) {
    if (real_posix_memalign == NULL) real_posix_memalign = (int (*)(void**, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    if (real_free == NULL) real_free = (void (*)(void*))dlsym(RTLD_NEXT, "free");
}

int posix_memalign(void** out, size_t alignment, size_t size) {
    resolve();
    int rc = real_posix_memalign(out, alignment, size);
    if (rc != 0 || *out == NULL) return rc;
    uintptr_t ret = (uintptr_t)__builtin_return_address(0);
    pthread_mutex_lock(&lock);
    int cls = from_c10(ret) ? (host_depth > 0 ? 1 : 0) : 2;
    size_t s = slot_of((uintptr_t)*out);
    while (table[s].ptr != 0) s = (s + 1) & (table_size - 1);
    table[s].ptr = (uintptr_t)*out;
    table[s].bytes = size;
    table[s].cls = cls;
    ++blocks_live;
    live[cls] += size;
    if (live[cls] > peak[cls]) peak[cls] = live[cls];
    live_total += size;
    if (live_total > peak_total) peak_total = live_total;
    if (tracing) record((uintptr_t)*out, size, 1, cls, __atomic_load_n(&current_mark, __ATOMIC_RELAXED));
    pthread_mutex_unlock(&lock);
    return rc;
}

// Removes p from the table (backward-shift deletion keeps linear probing exact).
static void forget(uintptr_t p) {
    size_t s = slot_of(p);
    while (table[s].ptr != 0 && table[s].ptr != p) s = (s + 1) & (table_size - 1);
    if (table[s].ptr == 0) return;  // not ours: malloc'd
    if (tracing) record(p, table[s].bytes, 0, table[s].cls, __atomic_load_n(&current_mark, __ATOMIC_RELAXED));
    live[table[s].cls] -= table[s].bytes;
    live_total -= table[s].bytes;
    --blocks_live;
    size_t hole = s;
    for (size_t n = (s + 1) & (table_size - 1); table[n].ptr != 0; n = (n + 1) & (table_size - 1)) {
        size_t home = slot_of(table[n].ptr);
        // move n into the hole unless its home lies cyclically in (hole, n]
        int stays = hole <= n ? (home > hole && home <= n) : (home > hole || home <= n);
        if (!stays) {
            table[hole] = table[n];
            hole = n;
        }
    }
    table[hole].ptr = 0;
}

void free(void* p) {
    resolve();
    if (p != NULL && __atomic_load_n(&blocks_live, __ATOMIC_RELAXED) != 0) {
        pthread_mutex_lock(&lock);
        forget((uintptr_t)p);
        pthread_mutex_unlock(&lock);
    }
    real_free(p);
}

// The harness's interface (ctypes).
int remat_probe_active(void) { return 1; }

uint64_t remat_probe_live(int cls) {
    pthread_mutex_lock(&lock);
    uint64_t v = cls < 0 ? live_total : live[cls];
    pthread_mutex_unlock(&lock);
    return v;
}

uint64_t remat_probe_peak(int cls) {
    pthread_mutex_lock(&lock);
    uint64_t v = cls < 0 ? peak_total : peak[cls];
    pthread_mutex_unlock(&lock);
    return v;
}

// Starts a new high-water mark: every peak becomes the current live count.
void remat_probe_reset_peak(void) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < probe_classes; ++i) peak[i] = live[i];
    peak_total = live_total;
    pthread_mutex_unlock(&lock);
}

// on != 0 enters a host section on this thread, 0 leaves it.
void remat_probe_host(int on) { host_depth += on ? 1 : -1; }

// Tracing. on != 0 clears the events, records every live block (mark -1) and starts; 0 stops.
void remat_probe_trace(int on) {
    pthread_mutex_lock(&lock);
    if (on) {
        events_n = 0;
        trace_lost = 0;
        tracing = 1;
        for (size_t s = 0; s < table_size; ++s)
            if (table[s].ptr != 0) record(table[s].ptr, table[s].bytes, 1, table[s].cls, -1);
    } else {
        tracing = 0;
    }
    pthread_mutex_unlock(&lock);
}

// The mark later events carry.
void remat_probe_mark(int mark) { __atomic_store_n(&current_mark, mark, __ATOMIC_RELAXED); }

// How many events were kept; UINT64_MAX when some could not be.
uint64_t remat_probe_events(void) {
    pthread_mutex_lock(&lock);
    uint64_t n = trace_lost ? UINT64_MAX : events_n;
    pthread_mutex_unlock(&lock);
    return n;
}

// Event i into out[5]: address, bytes, alloc (1) or free (0), class, mark.
void remat_probe_event(uint64_t i, int64_t* out) {
    pthread_mutex_lock(&lock);
    if (i < events_n) {
        out[0] = (int64_t)events[i].ptr;
        out[1] = (int64_t)events[i].bytes;
        out[2] = events[i].alloc;
        out[3] = events[i].cls;
        out[4] = events[i].mark;
    }
    pthread_mutex_unlock(&lock);
}
