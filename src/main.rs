// mimalloc: the check path allocates small, short-lived objects on one
// thread and frees decision events on the audit thread; glibc malloc spent
// ~12% of the sidecar's CPU there under load (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // mimalloc asks for transparent huge pages on its arenas; with THP in
    // `madvise` mode (Debian's default) the first touch of an arena then
    // faults in 2 MiB at a time, which cost this small process ~13 MiB of
    // resident memory for nothing measurable in speed (bench/README.md).
    // SAFETY: prctl with these arguments only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    std::process::exit(sentinelnet::cli::main());
}
