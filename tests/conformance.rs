//! The official JSONLogic conformance file, every case.

use sentinelnet::policy::logic::Rule;
use serde_json::Value;

#[test]
fn all_official_jsonlogic_cases_pass() {
    let text = include_str!("jsonlogic-tests.json");
    let cases: Vec<Value> = serde_json::from_str(text).expect("conformance file parses");
    let mut total = 0;
    let mut failures = Vec::new();
    for case in cases.iter().filter_map(Value::as_array) {
        let [rule, data, expected] = case.as_slice() else {
            panic!("malformed case {case:?}");
        };
        total += 1;
        let got = Rule::compile(rule)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                r.evaluate(data)
                    .map(|v| v.to_json())
                    .map_err(|e| e.to_string())
            });
        match got {
            Ok(value) if &value == expected => {}
            other => failures.push(format!(
                "{rule} with {data}: expected {expected}, got {other:?}"
            )),
        }
    }
    assert_eq!(total, 277, "the official file has 277 cases");
    assert!(
        failures.is_empty(),
        "{} of {total} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
