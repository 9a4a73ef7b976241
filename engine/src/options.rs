//! Marrow's session settings: `SET marrow.<name> = …`, one value per session.

use datafusion::common::config::ConfigExtension;
use datafusion::common::config::ConfigOptions;
use datafusion::common::extensions_options;

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
