//! Figures and how they are printed: percentiles of latency samples, rates, and the
//! [`Summary`] every scenario returns — human lines for a terminal, one `RESULT` line of
//! `key=value` pairs for scripts (`bench/run` builds its table from them), and the same pairs
//! as a flat JSON object for `--json`.

use std::time::Duration;

/// Percentiles of a sample, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Percentiles {
    /// Sample size.
    pub count: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `sample` (which it sorts).
    pub fn of(mut sample: Vec<u64>) -> Percentiles {
        if sample.is_empty() {
            return Percentiles::default();
        }
        sample.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[rank - 1]
        };
        Percentiles {
            count: sample.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: sample[sample.len() - 1],
        }
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// `n` per second over `d` (0 for an empty interval).
pub(crate) fn rate(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// What one scenario prints.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Human lines: label and value with its unit.
    pub human: Vec<(String, String)>,
    /// Machine fields: key (`[a-z0-9_]+`) and a value without spaces.
    pub fields: Vec<(&'static str, String)>,
}

impl Summary {
    /// Adds a human line.
    pub(crate) fn line(&mut self, label: &str, value: impl ToString) -> &mut Self {
        self.human.push((label.to_owned(), value.to_string()));
        self
    }

    /// Adds a machine field.
    pub(crate) fn field(&mut self, key: &'static str, value: impl ToString) -> &mut Self {
        let v = value.to_string().replace(char::is_whitespace, "_");
        self.fields.push((key, v));
        self
    }

    /// Adds the latency fields `{prefix}p50_us` ... and their human lines.
    pub(crate) fn latency(&mut self, label: &str, keys: [&'static str; 4], p: &Percentiles) {
        self.line(&format!("{label} p50"), ms(p.p50_us))
            .line(&format!("{label} p99"), ms(p.p99_us))
            .line(&format!("{label} p999"), ms(p.p999_us))
            .line(&format!("{label} max"), ms(p.max_us));
        self.field(keys[0], p.p50_us)
            .field(keys[1], p.p99_us)
            .field(keys[2], p.p999_us)
            .field(keys[3], p.max_us);
    }

    /// The value of a machine field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The human lines, aligned.
    pub fn human_text(&self) -> String {
        let width = self.human.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &self.human {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        out
    }

    /// `RESULT scenario=NAME k=v ...`, one line, no trailing newline.
    pub fn result_line(&self, scenario: &str) -> String {
        let mut line = format!("RESULT scenario={scenario}");
        for (k, v) in &self.fields {
            line.push_str(&format!(" {k}={v}"));
        }
        line
    }

    /// The fields as one flat JSON object; numbers stay numbers.
    pub fn json(&self, scenario: &str) -> String {
        let mut out = format!("{{\"scenario\": \"{scenario}\"");
        for (k, v) in &self.fields {
            if v.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(&format!(", \"{k}\": {v}"));
            } else {
                let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!(", \"{k}\": \"{escaped}\""));
            }
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let p = Percentiles::of((1..=1000).rev().collect());
        assert_eq!(
            (p.count, p.p50_us, p.p99_us, p.p999_us, p.max_us),
            (1000, 500, 990, 999, 1000)
        );
        assert_eq!(Percentiles::of(vec![]).count, 0);
    }

    #[test]
    fn result_line_and_json() {
        let mut s = Summary::default();
        s.field("pairs", 2)
            .field("server", "127.0.0.1:5222")
            .field("tls", "direct TLS");
        assert_eq!(
            s.result_line("chat"),
            "RESULT scenario=chat pairs=2 server=127.0.0.1:5222 tls=direct_TLS"
        );
        assert_eq!(
            s.json("chat"),
            "{\"scenario\": \"chat\", \"pairs\": 2, \"server\": \"127.0.0.1:5222\", \"tls\": \"direct_TLS\"}"
        );
        assert_eq!(s.get("pairs"), Some("2"));
    }
}
