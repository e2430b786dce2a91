//! Printing: aligned tables, goals with an honest PASS/MISS, and the `summary:` lines
//! that `scripts/bench.sh` collects.

/// A goal a figure is held to.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
}

impl Goal {
    pub fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(g) => value >= g,
            Goal::AtMost(g) => value <= g,
            Goal::Below(g) => value < g,
        }
    }

    /// `"goal ≥ 0.5: PASS"`, with `unit` after the number (`×`, ` MiB`, ` ms`).
    pub fn verdict(self, value: f64, unit: &str) -> String {
        let (op, g) = match self {
            Goal::AtLeast(g) => ("≥", g),
            Goal::AtMost(g) => ("≤", g),
            Goal::Below(g) => ("<", g),
        };
        let word = if self.met(value) { "PASS" } else { "MISS" };
        format!("goal {op} {g}{unit}: {word}")
    }
}

/// A table printed with every column padded to its widest cell.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            rows: vec![header.into_iter().map(Into::into).collect()],
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (i, row) in self.rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            println!("  {}", line.join("  ").trim_end());
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                println!("  {}", rule.join("  "));
            }
        }
    }
}

/// A section heading.
pub fn heading(title: &str) {
    println!("\n== {title} ==");
}

/// One line for the summary block of `scripts/bench.sh`.
pub fn summary(line: impl AsRef<str>) {
    println!("summary: {}", line.as_ref());
}

/// The load average, to show how busy the shared machine was during a run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_names_goal_and_outcome() {
        assert_eq!(Goal::AtLeast(0.5).verdict(0.7, "×"), "goal ≥ 0.5×: PASS");
        assert_eq!(
            Goal::AtMost(25.0).verdict(30.0, " MiB"),
            "goal ≤ 25 MiB: MISS"
        );
        assert_eq!(Goal::Below(10.0).verdict(10.0, " ms"), "goal < 10 ms: MISS");
    }
}
