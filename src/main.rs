fn main() {
    std::process::exit(sentinelnet::cli::main());
}
