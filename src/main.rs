// mimalloc: the check path allocates small, short-lived objects on one
// thread and frees decision events on the audit thread; glibc malloc spent
// ~12% of the sidecar's CPU there under load (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(sentinelnet::cli::main());
}
