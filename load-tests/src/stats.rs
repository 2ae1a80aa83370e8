//! Summaries of samples (median, p90, min, max) and the goals they are compared against.

use serde::Serialize;

/// Median, 90th percentile and range of one measurement, in its unit (ms or MB).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (mean of the two middle samples when `n` is even).
    pub median: f64,
    /// 90th percentile, nearest-rank: the smallest sample with at least 90% of samples at or
    /// below it. With 20 samples that is the 18th, so two outliers do not move it.
    pub p90: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let rank = (n * 9).div_ceil(10).max(1);
        Some(Summary {
            n,
            median,
            p90: sorted[rank - 1],
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// A target a measurement is compared with; reported, never asserted.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Goal {
    /// The figure must stay below this, in the measurement's unit.
    pub below: f64,
}

impl Goal {
    /// `< 20 ms`, `< 100 MB`, ...
    pub fn describe(self, unit: &str) -> String {
        format!("< {} {unit}", trim(self.below))
    }

    /// Whether the median and the p90 meet the goal, in words for the table.
    pub fn verdict(self, summary: &Summary) -> &'static str {
        match (summary.median < self.below, summary.p90 < self.below) {
            (true, true) => "met",
            (true, false) => "median met, p90 missed",
            (false, _) => "MISSED",
        }
    }
}

/// One row of a results table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// `ms` or `MB`.
    pub unit: &'static str,
    /// The figures; `None` when no run produced a sample.
    pub summary: Option<Summary>,
    /// The goal, if the measurement has one.
    pub goal: Option<Goal>,
}

impl Row {
    /// A row summarising `samples`.
    pub fn new(
        name: impl Into<String>,
        unit: &'static str,
        samples: &[f64],
        goal: Option<Goal>,
    ) -> Row {
        Row {
            name: name.into(),
            unit,
            summary: Summary::of(samples),
            goal,
        }
    }
}

/// Renders rows as a markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from("| measurement | n | median | p90 | min | max | goal | verdict |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---|---|\n");
    for row in rows {
        let goal = row
            .goal
            .map(|g| g.describe(row.unit))
            .unwrap_or_else(|| "-".into());
        match &row.summary {
            Some(s) => {
                let verdict = row.goal.map(|g| g.verdict(s)).unwrap_or("-");
                let unit = row.unit;
                out.push_str(&format!(
                    "| {} | {} | {} {unit} | {} {unit} | {} {unit} | {} {unit} | {goal} | {verdict} |\n",
                    row.name,
                    s.n,
                    figure(s.median),
                    figure(s.p90),
                    figure(s.min),
                    figure(s.max),
                ));
            }
            None => out.push_str(&format!(
                "| {} | 0 | - | - | - | - | {goal} | no samples |\n",
                row.name
            )),
        }
    }
    out
}

/// One decimal below 100, whole numbers above: the precision the measurements carry.
fn figure(value: f64) -> String {
    if value.abs() < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_pair() {
        let summary = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((summary.median, summary.min, summary.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn p90_of_twenty_samples_is_the_eighteenth() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Summary::of(&samples).unwrap().p90, 18.0);
    }

    #[test]
    fn a_single_sample_is_every_statistic() {
        let summary = Summary::of(&[7.0]).unwrap();
        assert_eq!(
            (summary.median, summary.p90, summary.min, summary.max),
            (7.0, 7.0, 7.0, 7.0)
        );
    }

    #[test]
    fn no_samples_give_no_summary() {
        assert!(Summary::of(&[]).is_none());
    }
}
