//! `ctl`'s output for people: aligned tables and titled sections. Every
//! command also prints central's JSON with `--format json`.

use serde_json::Value;
use std::fmt::Write;

/// Text of a JSON value for a table cell: strings bare, null as `-`.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        // 25.0 → 25: percentages are stored as floats.
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// An aligned table: a header row, then one row per item.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, text) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(text.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, text) in cells.iter().enumerate() {
            if i == last {
                out.push_str(text);
            } else {
                let pad = widths[i] - text.chars().count();
                let _ = write!(out, "{text}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Rows of `items` (an array of objects), one column per field.
pub(crate) fn rows_of(items: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| fields.iter().map(|f| cell(&item[*f])).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// `name: value` lines, aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// Explain as sections: the policy, its rule, history, approvals, canary
/// windows, recent decisions.
pub(crate) fn explain(e: &Value) -> String {
    let mut out = String::new();
    out.push_str(&fields(&[
        ("policy", cell(&e["policyId"])),
        ("bundle", cell(&e["bundle"])),
        (
            "version",
            format!(
                "{} ({}, canary {}%), enforced version {}",
                cell(&e["version"]),
                cell(&e["state"]),
                cell(&e["canaryPercent"]),
                cell(&e["enforcedVersion"])
            ),
        ),
        ("severity", cell(&e["severity"])),
        ("effect", cell(&e["effect"])),
        ("description", cell(&e["description"])),
        ("revision", cell(&e["bundleRevision"])),
    ]));
    let _ = writeln!(out, "\nRULE\n{}", cell(&e["ruleText"]));
    let _ = writeln!(out, "\nTRANSITIONS");
    out.push_str(&table(
        &[
            "SEQ", "VERSION", "FROM", "TO", "CANARY", "BY", "AT", "REASON",
        ],
        &rows_of(
            &e["transitions"],
            &[
                "seq",
                "version",
                "from",
                "to",
                "canaryPercent",
                "editedBy",
                "at",
                "reason",
            ],
        ),
    ));
    let _ = writeln!(
        out,
        "\nAPPROVALS ({} required)",
        cell(&e["approvalsRequired"])
    );
    out.push_str(&table(
        &["VERSION", "APPROVER", "IDENTITY", "AT"],
        &rows_of(&e["approvals"], &["version", "approver", "identity", "at"]),
    ));
    let canary = &e["canary"];
    if !canary.is_null() {
        let paused = if canary["paused"] == Value::Bool(true) {
            format!(
                ", PAUSED at {}: {}",
                cell(&canary["pausedAt"]),
                cell(&canary["pausedReason"])
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\nCANARY {}% since {}{paused}",
            cell(&canary["percent"]),
            cell(&canary["since"])
        );
        out.push_str(&table(
            &["START", "END", "DENIES", "FALSE POSITIVES", "RATE", "BAD"],
            &rows_of(
                &canary["windows"],
                &["start", "end", "denies", "falsePositives", "rate", "bad"],
            ),
        ));
    }
    let _ = writeln!(out, "\nRECENT DECISIONS");
    out.push_str(&table(
        &["TIME", "DECISION", "ROLE", "REQUEST", "LABEL", "ID"],
        &rows_of(
            &e["recentDecisions"],
            &["ts", "decision", "role", "requestId", "label", "decisionId"],
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_show_nulls_as_dashes() {
        let rows = rows_of(
            &json!([{"id": "a", "n": 1}, {"id": "longer-id", "n": null}]),
            &["id", "n"],
        );
        let text = table(&["ID", "N"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ID         N");
        assert_eq!(lines[1], "a          1");
        assert_eq!(lines[2], "longer-id  -");
    }
}
