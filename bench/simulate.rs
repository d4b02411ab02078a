//! `sentinelnet simulate` throughput and memory on recorded traffic: N
//! decision records (default 1,000,000, ~1.7 KB each with input, every 8th
//! labelled) against the 20-policy bundle in `bench/bundles/kernel-20`, one
//! core; next to the floors on the same file in the same run: a plain JSON
//! parse of every line (in this process) and `sentinelnet audit verify`.
//! Peak RSS of each `sentinelnet` run comes from wait4's rusage; the
//! simulation also runs on the first tenth of the file, to show memory
//! does not grow with it.
//!
//!   cargo build --release --bin sentinelnet --example simulate-bench
//!   SAMPLES=1000000 target/release/examples/simulate-bench

#[path = "records.rs"]
mod records;

use records::chain;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Write `count` chained records to `path`, and the same samples in the
/// plain-input form (`{"input", "requestId", "label"}`, ~0.7 KB) to
/// `inputs` (both reused when they already hold `count`).
fn samples(path: &Path, inputs: &Path, count: usize) -> u64 {
    let marker = path.with_extension("count");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(&count.to_string()) {
        return std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    let mut out = BufWriter::new(std::fs::File::create(path).expect("samples file"));
    let mut plain = BufWriter::new(std::fs::File::create(inputs).expect("inputs file"));
    let records = chain("kernel-0", "0193bbbb-0000-7000-8000-000000000000");
    for (seq, mut r) in (0u64..).zip(records.take(count)) {
        if seq % 8 == 0 {
            // Labels are not covered by the hash (central adds them).
            r["label"] = json!(if seq % 24 == 0 {
                "false_positive"
            } else {
                "true_positive"
            });
        }
        serde_json::to_writer(&mut out, &r).expect("write");
        out.write_all(b"\n").expect("write");
        // The plain form's label is the right decision.
        let recorded = r["decision"].as_str().unwrap_or("allow");
        let right = match (r["label"].as_str(), recorded) {
            (Some("false_positive"), "deny") => Some("allow"),
            (Some("false_positive"), _) => Some("deny"),
            (Some(_), decision) => Some(decision),
            (None, _) => None,
        };
        let mut line = json!({"input": r["input"], "requestId": r["requestId"]});
        if let Some(right) = right {
            line["label"] = json!(right);
        }
        serde_json::to_writer(&mut plain, &line).expect("write");
        plain.write_all(b"\n").expect("write");
    }
    out.flush().expect("flush");
    plain.flush().expect("flush");
    std::fs::write(&marker, count.to_string()).expect("marker");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Run `sentinelnet ARGS`: wall time, peak RSS (KiB) and its stdout.
/// The child is reaped by `wait4`, which also gives its own rusage.
#[allow(clippy::zombie_processes)]
fn timed(args: &[&str]) -> (Duration, i64, String) {
    let bin = root().join("target/release/sentinelnet");
    let started = Instant::now();
    let child = Command::new(&bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sentinelnet runs (cargo build --release first)");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).expect("read");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    (started.elapsed(), usage.ru_maxrss, text)
}

/// Floor: parse every line of `path` into a JSON value, one thread.
fn parse_floor(path: &Path, count: usize) -> Duration {
    let started = Instant::now();
    let reader = BufReader::with_capacity(1 << 16, std::fs::File::open(path).expect("open"));
    let mut parsed = 0usize;
    for line in reader.split(b'\n') {
        let line = line.expect("line");
        if serde_json::from_slice::<Value>(&line).is_ok() {
            parsed += 1;
        }
    }
    assert_eq!(parsed, count);
    started.elapsed()
}

fn main() {
    let count: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let file = dir.join("simulate-samples.jsonl");
    let inputs = dir.join("simulate-inputs.jsonl");
    let started = Instant::now();
    let bytes = samples(&file, &inputs, count);
    let input_bytes = std::fs::metadata(&inputs).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "samples: {count} records, {:.0} MB ({:.0} bytes each), ready in {:.1?}",
        bytes as f64 / 1e6,
        bytes as f64 / count as f64,
        started.elapsed()
    );
    let tenth = dir.join("simulate-samples-tenth.jsonl");
    {
        let reader = BufReader::new(std::fs::File::open(&file).expect("open"));
        let mut out = BufWriter::new(std::fs::File::create(&tenth).expect("create"));
        for line in reader.lines().take(count / 10) {
            writeln!(out, "{}", line.expect("line")).expect("write");
        }
    }

    let parse = parse_floor(&file, count);

    let bundle = root().join("bench/bundles/kernel-20");
    let bundle = bundle.to_str().expect("utf8");
    let file_arg = file.to_str().expect("utf8");
    let (verify, verify_rss, _) = timed(&["audit", "verify", file_arg]);
    let simulate_args = |samples: &str| {
        vec![
            "simulate",
            "--format",
            "json",
            "--bundle",
            bundle,
            "--samples",
            samples,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>()
    };
    let args = simulate_args(file_arg);
    let (simulate, rss, report) = timed(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let report: Value = serde_json::from_str(&report).expect("a report");
    assert_eq!(report["evaluated"], count, "{report}");
    let args = simulate_args(tenth.to_str().expect("utf8"));
    let (_, tenth_rss, _) = timed(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let input_parse = parse_floor(&inputs, count);
    let args = simulate_args(inputs.to_str().expect("utf8"));
    let (input_simulate, input_rss, input_report) =
        timed(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let input_report: Value = serde_json::from_str(&input_report).expect("a report");
    assert_eq!(input_report["evaluated"], count, "{input_report}");

    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    let each = |b: u64| b as f64 / count as f64;
    println!("| samples | run | time | samples/s | peak RSS | vs plain parse |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let records = format!("records, {:.0} B each", each(bytes));
    println!(
        "| {records} | plain JSON parse of every line (floor) | {parse:.2?} | {:.0} | – | 1.00× |",
        rate(parse)
    );
    println!(
        "| {records} | `sentinelnet audit verify` (floor) | {verify:.2?} | {:.0} | {} MiB | {:.2}× |",
        rate(verify),
        verify_rss / 1024,
        parse.as_secs_f64() / verify.as_secs_f64()
    );
    println!(
        "| {records} | `sentinelnet simulate`, 20 policies | {simulate:.2?} | {:.0} | {} MiB ({} MiB on a tenth of the file) | {:.2}× |",
        rate(simulate),
        rss / 1024,
        tenth_rss / 1024,
        parse.as_secs_f64() / simulate.as_secs_f64()
    );
    let plain = format!("inputs, {:.0} B each", each(input_bytes));
    println!(
        "| {plain} | plain JSON parse of every line (floor) | {input_parse:.2?} | {:.0} | – | 1.00× |",
        rate(input_parse)
    );
    println!(
        "| {plain} | `sentinelnet simulate`, 20 policies | {input_simulate:.2?} | {:.0} | {} MiB | {:.2}× |",
        rate(input_simulate),
        input_rss / 1024,
        input_parse.as_secs_f64() / input_simulate.as_secs_f64()
    );
    for (form, report) in [("records", &report), ("inputs", &input_report)] {
        println!(
            "\n{form}: evaluated {}, allow→deny {}, deny→allow {}, labelled {}, false positives {}, recommended {}%",
            report["evaluated"],
            report["changes"]["allowToDeny"]["count"],
            report["changes"]["denyToAllow"]["count"],
            report["labelled"],
            report["falsePositives"],
            report["recommendedCanaryPercent"]
        );
    }
}
