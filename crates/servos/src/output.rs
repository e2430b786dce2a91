//! Human tables by default, JSON with `--json`.

use serde_json::Value;

pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints `rows` (a JSON array of objects) as aligned columns.
pub fn table(rows: &Value, columns: &[&str]) {
    let empty = Vec::new();
    let rows = rows.as_array().unwrap_or(&empty);
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|c| c.to_uppercase()).collect()];
    for r in rows {
        grid.push(columns.iter().map(|c| cell(r.get(*c).unwrap_or(&Value::Null))).collect());
    }
    let widths: Vec<usize> =
        (0..columns.len()).map(|i| grid.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    for row in grid {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// Prints one object as `key: value` lines.
pub fn record(v: &Value) {
    if let Some(obj) = v.as_object() {
        let w = obj.keys().map(String::len).max().unwrap_or(0);
        for (k, val) in obj {
            let text = match val {
                Value::Object(_) => val.to_string(),
                _ => cell(val),
            };
            println!("{k:<w$}  {text}");
        }
    } else {
        println!("{v}");
    }
}

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}
