/*
 * jemalloc's options, read before main() runs (build.rs links this object
 * into the binary; its definition wins over jemalloc's weak empty one).
 *
 * narenas:2          two arenas instead of four per core: freed memory is
 *                    reused by the next batch instead of sitting in the arena
 *                    of whichever thread freed it (peak RSS under full load
 *                    about 356 -> 225 MiB for events, 243 -> 187 MiB for
 *                    logs, against glibc's malloc; docs/BENCHMARKS.md "Peak
 *                    memory"); thread caches keep allocation from contending
 *                    on them.
 * background_thread  purging off the hot threads.
 * dirty_decay_ms     freed pages go back to the kernel after a second, so
 * muzzy_decay_ms     an idle process shrinks after a burst.
 * abort_conf         an option jemalloc does not understand (here, or in
 *                    _RJEM_MALLOC_CONF) stops the process at start with
 *                    jemalloc's message naming it, instead of a warning
 *                    and the option silently ignored.
 *
 * Override at run time with _RJEM_MALLOC_CONF (e.g. narenas:16 on a host
 * with many cores; docs/operations.md "Memory").
 */
const char *_rjem_malloc_conf =
    "abort_conf:true,background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0";
