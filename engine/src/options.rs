//! Marrow's session settings: `SET marrow.<name> = …`, one value per session.

use datafusion::common::config::ConfigExtension;
use datafusion::common::config::ConfigOptions;
use datafusion::common::config::{ConfigField, Visit};
use datafusion::common::extensions_options;
use datafusion::error::{DataFusionError, Result as DFResult};

extensions_options! {
    /// Marrow's settings (`SET marrow.<name> = …`), per session: vector search and version retention.
    pub struct MarrowOptions {
        /// IVF partitions to probe (0: Lance's adaptive default).
        pub nprobes: usize, default = 0
        /// Re-rank refine_factor × k candidates with the stored vectors inside the index search (0: off).
        pub refine_factor: usize, default = 0
        /// HNSW search breadth (0: Lance's default).
        pub ef: usize, default = 0
        /// Index partitions one query searches at once (0: every core on the direct path, Lance's choice through
        /// its scanner — sequential for HNSW; -1: every core; n: at most n). Parallel search lowers one query's
        /// latency; under many concurrent queries 1 avoids the hand-offs.
        pub query_parallelism: i32, default = 0
        /// Search a one-segment index that covers every fragment directly, without Lance's scanner, when nprobes is
        /// fixed and there is no WHERE clause (false: every index search goes through the scanner).
        pub direct_search: bool, default = true
        /// Ignore vector indexes: every ORDER BY distance LIMIT k query scans exactly.
        pub exact_search: bool, default = false
        /// Keep the physical plan of a direct-path vector query run with `$n` vector parameters, and run it again
        /// with the next values bound instead of planning the statement anew (false: plan every execution).
        pub plan_cache: bool, default = true
        /// The longest a query may run, planning and streaming its rows included ('30s', '500ms', '5min', '1h',
        /// or a number of milliseconds as in PostgreSQL; 0: no limit). Past it the query stops with DEADLINE_EXCEEDED. Writes are
        /// not interrupted: their effects are all-or-nothing and a client must not be left guessing which.
        pub statement_timeout: Timeout, default = Timeout::default()
        /// Answer scans of vector and binary columns from the server's hot tier (`--hot-tier`) when it has one
        /// (false: this session's scans read the files).
        pub hot_tier: bool, default = true
        /// How long `CALL cleanup_versions('t')` keeps old versions (an interval: '7 days', '1 hour', '0 seconds').
        pub version_retention: String, default = "7 days".to_string()
    }
}

impl ConfigExtension for MarrowOptions {
    const PREFIX: &'static str = "marrow";
}

impl MarrowOptions {
    /// The settings in a session's configuration (the defaults when it has none registered).
    pub fn of(options: &ConfigOptions) -> MarrowOptions {
        options
            .extensions
            .get::<MarrowOptions>()
            .cloned()
            .unwrap_or_default()
    }
}

/// A duration setting as PostgreSQL's `statement_timeout` takes it: a number of milliseconds, or a number with a
/// unit (`ms`, `s`, `min`, `h`, `d`); 0 is no limit. Checked when it is SET.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeout(pub std::time::Duration);

impl Timeout {
    pub fn limit(&self) -> Option<std::time::Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().ok()?;
        let ms = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "ms" | "millisecond" | "milliseconds" => 1.0,
            "s" | "sec" | "second" | "seconds" => 1e3,
            "min" | "minute" | "minutes" => 60e3,
            "h" | "hour" | "hours" => 3_600e3,
            "d" | "day" | "days" => 86_400e3,
            _ => return None,
        };
        let total = n * ms;
        // Up to a year: past that it is a typo, not a limit.
        (total.is_finite() && (0.0..=365.0 * 86_400e3).contains(&total))
            .then(|| Self(std::time::Duration::from_micros((total * 1e3) as u64)))
    }
}

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

impl ConfigField for Timeout {
    fn visit<V: Visit>(&self, v: &mut V, key: &str, description: &'static str) {
        v.some(key, self, description)
    }

    fn set(&mut self, key: &str, value: &str) -> DFResult<()> {
        *self = Timeout::parse(value).ok_or_else(|| {
            DataFusionError::Configuration(format!(
                "marrow.{key}: '{value}' is not a duration such as '30s', '500ms', '5min' or 5000 (milliseconds)"
            ))
        })?;
        Ok(())
    }

    fn reset(&mut self, _key: &str) -> DFResult<()> {
        *self = Timeout::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Timeout;
    use std::time::Duration;

    #[test]
    fn timeouts_parse_as_postgres_does() {
        let ms = |s: &str| Timeout::parse(s).map(|t| t.0.as_millis());
        assert_eq!(ms("5000"), Some(5000));
        assert_eq!(ms("30s"), Some(30_000));
        assert_eq!(ms(" 1.5 min "), Some(90_000));
        assert_eq!(ms("250ms"), Some(250));
        assert_eq!(ms("2h"), Some(7_200_000));
        assert_eq!(ms("0"), Some(0));
        assert_eq!(Timeout::parse("0").unwrap().limit(), None);
        assert_eq!(
            Timeout::parse("1s").unwrap().limit(),
            Some(Duration::from_secs(1))
        );
        for bad in ["", "abc", "-1", "5 parsecs", "1e400", "400d", "s"] {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }
}
