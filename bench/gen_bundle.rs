//! Write a generated bundle directory (bench/bundlegen.rs) for the load
//! harness: `gen-bundle SERVICES DIR` writes SERVICES × 10 + 4 policies.

#[path = "bundlegen.rs"]
mod bundlegen;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(count), Some(dir)) = (args.first().and_then(|n| n.parse().ok()), args.get(1)) else {
        eprintln!("usage: gen-bundle SERVICES DIR");
        return ExitCode::from(2);
    };
    for (name, bytes) in bundlegen::services(count) {
        let path = Path::new(dir).join(name);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, bytes));
        if let Err(e) = written {
            eprintln!("gen-bundle: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "{dir}: {} policies ({count} services × {} and {} global)",
        count * bundlegen::POLICIES_PER_SERVICE + bundlegen::GLOBAL_POLICIES,
        bundlegen::POLICIES_PER_SERVICE,
        bundlegen::GLOBAL_POLICIES
    );
    ExitCode::SUCCESS
}
